// Graceful shutdown: SIGTERM closes clients with 3001 (spread over the drain window),
// the SDK reconnects by itself, and a node that replaced the old one on the same
// address reports the lost history (memory broker: new epoch) instead of hiding it.

import { test, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startHerald, newClient, newSub, closeClients, nextEvent, waitUntil, uniq, within } from '../lib/herald.mjs';

/** What a WebSocket handshake gets: 'open', an HTTP status, or 'refused'. */
function upgradeOutcome(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.on('open', () => {
      resolve('open');
      ws.terminate();
    });
    ws.on('unexpected-response', (req, res) => {
      resolve(res.statusCode);
      req.destroy();
    });
    ws.on('error', () => resolve('refused'));
  });
}

const nodes = [];
async function start(opts) {
  const node = await startHerald(opts);
  nodes.push(node);
  return node;
}
afterEach(closeClients);
after(() => Promise.all(nodes.map((n) => n.stop())));

test('SIGTERM: 3001, then reconnect to a new node on the same port; recovery reports the new epoch', { timeout: 20000 }, async () => {
  const a = await start();
  const user = uniq('user');
  const channel = uniq('feed');
  const client = newClient(a, { user, minReconnectDelay: 200, maxReconnectDelay: 500 });
  const sub = newSub(client, channel);
  const first = nextEvent(sub, 'subscribed', { explain: client.explain });
  client.connect();
  sub.subscribe();
  const oldEpoch = (await first).streamPosition.epoch;
  for (let i = 1; i <= 3; i++) await a.publish(channel, { i });
  await waitUntil(() => sub.pubs.length === 3, { what: 'publications on node A', explain: client.explain });

  const away = nextEvent(client, 'connecting', { explain: client.explain });
  const stopped = a.stop({ signal: 'SIGTERM' });
  const awayCtx = await away;
  assert.equal(awayCtx.code, 3001, client.explain());
  assert.equal(awayCtx.reason, 'shutdown');
  assert.ok(
    client.transcript.entries.some((e) => e.kind === 'ws' && e.text === 'closed 3001 shutdown'),
    `close frame 3001 "shutdown"\n${client.explain()}`,
  );
  const exit = await stopped;
  assert.deepEqual(exit, { code: 0, signal: null }, `node A exits cleanly on SIGTERM\n${a.logs()}`);

  // Same port and keys, fresh memory broker.
  const back = nextEvent(sub, 'subscribed', { timeout: 10000, explain: client.explain });
  const b = await start({ base: a.spec.config, port: a.port, secret: a.secret, apiKey: a.apiKey });
  const ctx = await back;
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, false, client.explain());
  assert.notEqual(ctx.streamPosition.epoch, oldEpoch, 'a new node has a new epoch');
  assert.equal(ctx.streamPosition.offset, 0, client.explain());
  assert.equal(client.state, 'connected');

  // And it is live on B, numbered from B's stream.
  const { offset, epoch } = await b.publish(channel, { on: 'B' });
  assert.equal(offset, 1);
  assert.equal(epoch, ctx.streamPosition.epoch);
  await waitUntil(() => sub.pubs.length === 4, { what: 'publication on node B', explain: client.explain });
  assert.deepEqual(sub.pubs[3].data, { on: 'B' });
  assert.equal(sub.pubs[3].offset, 1);
});

test('drain: not ready and no new sockets while closing clients over the drain window', { timeout: 20000 }, async () => {
  const node = await start({ config: { shutdown: { drain_window: '1500ms', timeout: '5s' } } });
  const clients = [];
  for (let k = 0; k < 3; k++) {
    // Slow reconnects, so their retries against the draining node stay few.
    const c = newClient(node, { user: `u${k}`, minReconnectDelay: 3000, maxReconnectDelay: 5000 });
    const ready = nextEvent(c, 'connected', { explain: c.explain });
    c.connect();
    await ready;
    clients.push(c);
  }
  const closes = clients.map((c) =>
    nextEvent(c, 'connecting', { timeout: 5000, explain: c.explain }).then((ctx) => ({ ...ctx, at: Date.now() })),
  );
  const sent = Date.now();
  node.child.kill('SIGTERM');

  // Readiness turns false at once, while connections are still being closed.
  const notReady = await waitUntil(
    async () => {
      try {
        const res = await fetch(`${node.url}/readyz`);
        await res.arrayBuffer();
        return res.status === 503 ? 'draining' : null;
      } catch {
        return 'gone';
      }
    },
    { timeout: 1000, what: '/readyz to answer 503' },
  );
  assert.equal(notReady, 'draining', 'the node answered 503 before it was gone');
  // A new WebSocket is refused while draining.
  const upgrade = await upgradeOutcome(node.wsUrl);
  assert.ok(upgrade === 503 || upgrade === 'refused', `upgrade while draining: ${upgrade}`);

  const ctxs = await Promise.all(closes);
  for (const ctx of ctxs) assert.equal(ctx.code, 3001);
  const times = ctxs.map((c) => c.at - sent).sort((x, y) => x - y);
  // Three clients over 1.5 s: closed at about 0, 0.5 and 1 s.
  assert.ok(times[2] - times[0] >= 700, `closes should be spread over the drain window: ${times} ms`);
  assert.ok(times[2] <= 2500, `all closed within the window: ${times} ms`);
  const exit = await within(node.exited, 6000);
  assert.deepEqual(exit, { code: 0, signal: null }, node.logs());
});
