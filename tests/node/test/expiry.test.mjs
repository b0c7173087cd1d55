// Token expiry over time: connection refresh, the server's 3005 close, and
// subscription token refresh. Each waits several seconds for timers, so they run side
// by side; clients are therefore closed once, after all of them (a per-test cleanup
// would close a sibling's clients while it still runs).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald,
  newClient,
  newSub,
  rawClient,
  closeClients,
  nextEvent,
  waitUntil,
  uniq,
  sleep,
  within,
} from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald();
});
after(async () => {
  await closeClients();
  await node?.stop();
});

describe('token expiry', { concurrency: true }, () => {
  test('getToken refreshes an expiring connection token; the client stays connected', { timeout: 20000 }, async () => {
    let calls = 0;
    const client = newClient(node, {
      user: 'bob',
      token: node.token({ sub: 'bob', ttl: 3 }),
      getToken: async () => {
        calls += 1;
        return node.token({ sub: 'bob', ttl: 3 });
      },
    });
    const channel = uniq('refresh');
    const sub = newSub(client, channel);
    const subscribed = nextEvent(sub, 'subscribed', { explain: client.explain });
    client.connect();
    sub.subscribe();
    await subscribed;

    // Without a refresh the server would close with 3005 after ttl (≤3 s) + 5 s grace;
    // 8.5 s covers that and at least two refreshes.
    let lost = null;
    client.on('connecting', (ctx) => (lost ??= ctx));
    client.on('disconnected', (ctx) => (lost ??= ctx));
    await sleep(8500);

    assert.equal(lost, null, `the connection was lost: ${JSON.stringify(lost)}\n${client.explain()}`);
    assert.equal(client.state, 'connected', client.explain());
    assert.ok(calls >= 2, `getToken should have been called at least twice, was ${calls}\n${client.explain()}`);
    const refreshes = client.transcript.entries.filter((e) => e.kind === '<' && e.text.includes('"refresh"'));
    assert.ok(refreshes.length >= 2, `refresh replies: ${refreshes.length}\n${client.explain()}`);

    const { offset } = await node.publish(channel, { after: 'refresh' });
    await waitUntil(() => sub.pubs.length === 1, { what: 'publication after refresh', explain: client.explain });
    assert.deepEqual(sub.pubs[0].data, { after: 'refresh' });
    assert.equal(sub.pubs[0].offset, offset);
    client.disconnect();
  });

  test('a connection that is not refreshed is closed with 3005 after ttl + grace', { timeout: 20000 }, async () => {
    // A raw client: the SDK gives up by itself when it has no getToken, so only a
    // client that simply keeps the socket open shows the server's own expiry.
    const raw = rawClient(node);
    const reply = await raw.connect(node.token({ sub: 'carol', ttl: 2 }));
    const start = Date.now();
    assert.equal(reply.expires, true, raw.explain());
    assert.ok(reply.ttl >= 1 && reply.ttl <= 2, `ttl ${reply.ttl}\n${raw.explain()}`);
    const closed = await within(raw.closed, 10000);
    assert.ok(closed, `not closed within 10 s\n${raw.explain()}`);
    assert.equal(closed.code, 3005, raw.explain());
    assert.equal(closed.reason, 'connection expired');
    const elapsed = closed.at - start;
    assert.ok(elapsed >= 5500 && elapsed <= 8500, `closed after ${elapsed} ms, expected ttl (≤2 s) + 5 s grace`);
  });

  test('an expiring subscription token is refreshed with sub_refresh', { timeout: 20000 }, async () => {
    const client = newClient(node, { user: 'alice' });
    const channel = uniq('$secret');
    let calls = 0;
    const sub = newSub(client, channel, {
      getToken: async () => {
        calls += 1;
        return node.subToken({ sub: 'alice', channel, ttl: 2 });
      },
    });
    const subscribed = nextEvent(sub, 'subscribed', { explain: client.explain });
    client.connect();
    sub.subscribe();
    await subscribed;
    let lost = null;
    sub.on('unsubscribed', (c) => (lost ??= c));
    sub.on('subscribing', (c) => (lost ??= c));
    // Unrefreshed, the server would end the subscription (2501) after ttl + 5 s grace.
    await sleep(7500);
    assert.equal(lost, null, `subscription lost: ${JSON.stringify(lost)}\n${client.explain()}`);
    assert.ok(calls >= 3, `getToken calls: ${calls}\n${client.explain()}`);
    const refreshes = client.transcript.entries.filter((e) => e.kind === '<' && e.text.includes('"sub_refresh"'));
    assert.ok(refreshes.length >= 2, client.explain());
    await node.publish(channel, { still: 'here' });
    await waitUntil(() => sub.pubs.length === 1, { what: 'publication', explain: client.explain });
    client.disconnect();
  });

  test('an unrefreshed subscription token ends the subscription with 2501', { timeout: 20000 }, async () => {
    // Raw protocol: the SDK would refresh.
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: 'dave' }));
    const channel = uniq('$secret');
    const start = Date.now();
    // ttl 2, not 1: a second boundary between signing and checking must not expire it.
    const reply = await raw.command('subscribe', { channel, token: node.subToken({ sub: 'dave', channel, ttl: 2 }) });
    assert.equal(reply.subscribe?.expires, true, raw.explain());
    const push = await raw.next((m) => m.push?.unsubscribe, { timeout: 10000, what: 'unsubscribe push' });
    assert.equal(push.push.channel, channel);
    assert.equal(push.push.unsubscribe.code, 2501, raw.explain());
    const elapsed = Date.now() - start;
    assert.ok(elapsed >= 5500 && elapsed <= 8500, `unsubscribed after ${elapsed} ms, expected ttl (≤2 s) + 5 s grace`);
    // The connection itself stays.
    const again = await raw.command('subscribe', { channel: uniq('feed') });
    assert.ok(again.subscribe, raw.explain());
    assert.equal(raw.closeInfo, undefined);
  });
});
