// Several nodes on one Redis behind a load balancer: when nodes die, their clients
// reconnect through the balancer to a surviving node and recover from the shared
// history, so every client still gets every publication once and in order. The
// Node twin of `killed_node_clients_recover_on_other_nodes_without_loss`
// (tests/tests/backbone.rs), with the real npm `centrifuge` SDK as the client.
//
// Needs `redis-server` and `redis-cli` on PATH; this file starts its own server on a
// free port (never 6379) and kills it afterwards.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startCluster,
  newClient,
  newSub,
  closeClients,
  nextEvent,
  waitUntil,
  uniq,
  sleep,
} from '../lib/herald.mjs';
import { startRedis } from '../lib/redis.mjs';

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

// ---------------------------------------------------------------------------------
// A round-robin TCP balancer
// ---------------------------------------------------------------------------------

/**
 * A TCP balancer on a free port, as a Kubernetes Service would be: each new connection
 * goes to the next backend in turn (ports on 127.0.0.1), or the one after if connecting
 * fails. No stickiness. When either side closes, both are closed, so a killed node's
 * clients see their sockets drop. `log` records every routing decision, and
 * `routeOf(clientPort)` says which backend a client's connection (by its local port)
 * went to.
 */
async function startBalancer(backends) {
  let next = 0;
  const sockets = new Set();
  const routes = new Map(); // client's local port -> backend index
  const log = [];
  const t0 = Date.now();
  const note = (text) => log.push(`  +${Date.now() - t0}ms ${text}`);
  const track = (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const connectTo = (port) =>
    new Promise((resolve, reject) => {
      const upstream = net.connect({ host: '127.0.0.1', port });
      upstream.once('connect', () => {
        upstream.off('error', reject);
        resolve(upstream);
      });
      upstream.once('error', reject);
    });

  const server = net.createServer({ pauseOnConnect: true }, async (client) => {
    track(client);
    const from = client.remotePort;
    client.on('error', () => {});
    const start = next++;
    for (let i = 0; i < backends.length; i++) {
      const k = (start + i) % backends.length;
      if (client.destroyed) return;
      let upstream;
      try {
        upstream = await connectTo(backends[k]);
      } catch (e) {
        note(`:${from} -> node ${k + 1} failed (${e.code ?? e.message}), trying the next`);
        continue;
      }
      track(upstream);
      routes.set(from, k);
      note(`:${from} -> node ${k + 1}`);
      upstream.on('error', () => {});
      upstream.setNoDelay(true);
      client.setNoDelay(true);
      const closeBoth = () => {
        client.destroy();
        upstream.destroy();
      };
      upstream.once('close', () => {
        if (!client.destroyed) note(`:${from} node ${k + 1} closed, dropping the client`);
        closeBoth();
      });
      client.once('close', closeBoth);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      if (client.destroyed) closeBoth();
      return;
    }
    note(`:${from} no backend reachable`);
    client.destroy();
  });
  const port = await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    routeOf: (clientPort) => routes.get(clientPort),
    explain: () => `balancer log:\n${log.join('\n')}`,
    async stop() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

// ---------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------

let redis;
let nodes = [];
let lb;

before(
  async () => {
    redis = await startRedis();
    // One token secret and one API key for all: a client may land on any node.
    nodes = await startCluster(3, redis.url, {
      // History deep enough to hold everything a client can miss while it moves.
      config: {
        namespaces: {
          cluster: { history_size: 1000, history_ttl: '5m', allow_subscribe_for_client: true },
        },
      },
    });
    lb = await startBalancer(nodes.map((n) => n.port));
  },
  { timeout: 30000 },
);

after(async () => {
  await closeClients();
  await lb?.stop();
  await Promise.all(nodes.map((n) => n.stop({ timeout: 3000 })));
  await redis?.stop();
});

test('clients of killed nodes move through the balancer and recover every publication', { timeout: 25000 }, async (t) => {
  const channel = uniq('cluster:news');
  const [, , publisher] = nodes;
  const N = 300;

  // Six SDK clients through the balancer, one after the other so round-robin spreads
  // them two per node.
  const clients = [];
  for (let i = 0; i < 6; i++) {
    const client = newClient(publisher, { url: lb.wsUrl, user: `u${i}`, minReconnectDelay: 50, maxReconnectDelay: 400 });
    // Which node each (re)connection landed on, in the client's own transcript.
    client.on('connected', () => {
      const port = client.sockets.at(-1)?._socket?.localPort;
      const k = lb.routeOf(port);
      client.transcript.add('lb', `connected via :${port} to node ${k === undefined ? '?' : k + 1}`);
    });
    const sub = newSub(client, channel);
    const subscribed = [];
    sub.on('subscribed', (ctx) => subscribed.push(ctx));
    const unsubscribed = [];
    sub.on('unsubscribed', (ctx) => unsubscribed.push(ctx));
    const first = nextEvent(sub, 'subscribed', { explain: client.explain });
    client.connect();
    sub.subscribe();
    await first;
    clients.push({ client, sub, subscribed, unsubscribed });
  }
  const explainAll = () =>
    [...clients.map((c, i) => `client u${i}:\n${c.client.explain()}`), lb.explain()].join('\n');
  const onNode = (k) => clients.filter((c) => lb.routeOf(c.client.sockets.at(-1)?._socket?.localPort) === k).length;
  assert.deepEqual([onNode(0), onNode(1), onNode(2)], [2, 2, 2], `round-robin spread\n${lb.explain()}`);

  // 300 publications through node 3 while nodes 1 and 2 are SIGKILLed.
  const t0 = Date.now();
  const killedAt = [];
  const killer = (async () => {
    await sleep(150);
    nodes[0].child.kill('SIGKILL');
    killedAt.push(Date.now() - t0);
    await sleep(150);
    nodes[1].child.kill('SIGKILL');
    killedAt.push(Date.now() - t0);
  })();
  for (let n = 1; n <= N; n++) {
    const { offset } = await publisher.publish(channel, n);
    assert.equal(offset, n, `publication ${n} got offset ${offset}`);
    await sleep(2);
  }
  const publishedIn = Date.now() - t0;
  await killer;
  const kills = await Promise.all([nodes[0].exited, nodes[1].exited]);
  assert.deepEqual(kills.map((e) => e.signal), ['SIGKILL', 'SIGKILL']);
  assert.ok(killedAt[1] < publishedIn, `both kills happened while publishing (${killedAt} vs ${publishedIn} ms)`);

  // Stops early on a failed recovery or a gap, so that the checks below say which.
  const broken = (c) =>
    c.subscribed.slice(1).some((ctx) => !(ctx.wasRecovering && ctx.recovered)) ||
    c.sub.pubs.some((p, k) => p.offset !== k + 1);
  const done = (c) => c.sub.pubs.length >= N && c.client.state === 'connected';
  await waitUntil(() => clients.every(done) || clients.some(broken), {
    timeout: 15000,
    what: `${N} publications on every client`,
    explain: () =>
      `counts: ${clients.map((c) => c.sub.pubs.length).join(', ')}\n${explainAll()}`,
  });
  const deliveredIn = Date.now() - t0;
  await sleep(200); // duplicates would arrive by now

  for (const [i, c] of clients.entries()) {
    // Recovery first: a failed one is the cause, a gap only its consequence.
    for (const ctx of c.subscribed.slice(1)) {
      assert.equal(ctx.wasRecovering, true, `u${i}: a resubscribe without recovery\n${c.client.explain()}`);
      assert.equal(ctx.recovered, true, `u${i}: a recovery failed: ${JSON.stringify(ctx)}\n${c.client.explain()}`);
    }
    const offsets = c.sub.pubs.map((p) => p.offset);
    const firstBad = offsets.findIndex((o, k) => o !== k + 1);
    assert.equal(
      firstBad,
      -1,
      `u${i}: offset ${offsets[firstBad]} at position ${firstBad + 1} (gap or duplicate)\n${c.client.explain()}\n${lb.explain()}`,
    );
    assert.deepEqual(offsets, range(1, N), `u${i}: offsets\n${c.client.explain()}`);
    assert.deepEqual(c.sub.pubs.map((p) => p.data), range(1, N), `u${i}: data\n${c.client.explain()}`);
    assert.deepEqual(c.unsubscribed, [], `u${i}: never unsubscribed\n${c.client.explain()}`);
  }
  const moved = clients.filter((c) => c.subscribed.some((ctx) => ctx.wasRecovering && ctx.recovered));
  assert.ok(moved.length >= 1, `no client recovered on another node\n${explainAll()}`);
  // Everyone is on the survivor now.
  assert.equal(onNode(2), clients.length, `all clients on node 3\n${lb.explain()}`);

  const resubscribes = clients.map((c) => c.subscribed.length - 1);
  t.diagnostic(
    `published ${N} in ${publishedIn} ms, kills at ${killedAt.join('/')} ms, all delivered at ${deliveredIn} ms; ` +
      `resubscribes per client: ${resubscribes.join(',')}`,
  );
});
