// Server pings and the pong timeout (ping_interval 2s, pong_timeout 1s). The tests wait
// on timers, so they run side by side, and clients are closed once after all of them.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, newSub, rawClient, closeClients, nextEvent, waitUntil, uniq, sleep, within } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({ config: { client: { ping_interval: '2s', pong_timeout: '1s' } } });
});
after(async () => {
  await closeClients();
  await node?.stop();
});

const isPing = (e) => e.kind === '<' && e.text === '{}';
const isPong = (e) => e.kind === '>' && e.text === '{}';

describe('ping/pong', { concurrency: true }, () => {
  test('the SDK answers pings and stays connected', { timeout: 15000 }, async () => {
    const client = newClient(node, { user: 'pinger' });
    const channel = uniq('ping');
    const sub = newSub(client, channel);
    const ready = nextEvent(sub, 'subscribed', { explain: client.explain });
    client.connect();
    sub.subscribe();
    await ready;
    let lost = null;
    client.on('connecting', (ctx) => (lost ??= ctx));
    client.on('disconnected', (ctx) => (lost ??= ctx));
    await sleep(6500);
    assert.equal(lost, null, `connection lost: ${JSON.stringify(lost)}\n${client.explain()}`);
    const pings = client.transcript.entries.filter(isPing).length;
    const pongs = client.transcript.entries.filter(isPong).length;
    assert.ok(pings >= 3, `pings received: ${pings}\n${client.explain()}`);
    assert.ok(pongs >= 3, `pongs sent: ${pongs}\n${client.explain()}`);
    const reply = client.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"connect"'));
    assert.match(reply.text, /"ping":2,"pong":true/);
    await node.publish(channel, { alive: true });
    await waitUntil(() => sub.pubs.length === 1, { what: 'publication', explain: client.explain });
  });

  test('a raw client that never answers pings is closed with 3012', { timeout: 15000 }, async () => {
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: 'silent' }));
    const start = Date.now();
    const closed = await within(raw.closed, 6000);
    assert.ok(closed, `still open after 6 s\n${raw.explain()}`);
    assert.equal(closed.code, 3012, raw.explain());
    assert.equal(closed.reason, 'no pong');
    const elapsed = closed.at - start;
    // Ping at 2 s, no pong within 1 s: closed at about 3 s.
    assert.ok(elapsed >= 2500 && elapsed <= 4000, `closed after ${elapsed} ms\n${raw.explain()}`);
    assert.ok(
      raw.messages.some((m) => Object.keys(m).length === 0),
      `a ping ({}) came before the close\n${raw.explain()}`,
    );
  });

  test('a raw client that answers pings with {} stays connected', { timeout: 15000 }, async () => {
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: 'polite' }));
    let seen = 0;
    raw.ws.on('message', (data) => {
      // Each ping gets a pong; a frame could batch a ping with other messages.
      for (const line of data.toString().split('\n')) {
        if (line === '{}') {
          seen++;
          raw.send('{}');
        }
      }
    });
    await sleep(5000);
    assert.equal(raw.closeInfo, undefined, raw.explain());
    assert.ok(seen >= 2, `pings answered: ${seen}`);
    const reply = await raw.command('subscribe', { channel: uniq('ping') });
    assert.ok(reply.subscribe, raw.explain());
  });
});
