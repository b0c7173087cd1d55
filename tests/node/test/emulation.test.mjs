// The real npm `centrifuge` SDK over HTTP-streaming and SSE (WebSocket not offered)
// against three nodes on one Redis, behind an HTTP balancer that sends every request to
// the next node: the stream opens on one node and nearly every command the SDK posts to
// /emulation lands on another, which forwards it to the stream's node through Redis.
// Connect, subscribe, publish, presence, history, token refresh, recovery after a
// forced disconnect, and a node SIGKILLed mid-stream: every client gets every
// publication once, in order.
//
// Needs `redis-server` and `redis-cli` on PATH.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
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
import { startHttpBalancer } from '../lib/balancer.mjs';

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

let redis;
let nodes = [];
let lb;

before(
  async () => {
    redis = await startRedis();
    nodes = await startCluster(3, redis.url, {
      config: {
        namespaces: {
          emu: {
            history_size: 1000,
            history_ttl: '5m',
            allow_subscribe_for_client: true,
            allow_publish_for_subscriber: true,
            allow_history_for_subscriber: true,
            presence: true,
            allow_presence_for_subscriber: true,
          },
        },
      },
    });
    lb = await startHttpBalancer(nodes.map((n) => n.port));
  },
  { timeout: 30000 },
);

after(async () => {
  await closeClients();
  await lb?.stop();
  await Promise.all(nodes.map((n) => n.stop({ timeout: 3000 })));
  await redis?.stop();
});

/** The SDK's fetch, writing each request and its status into the client's transcript. */
function recordingFetch(transcript) {
  return async (url, init = {}) => {
    transcript.add('>', `${init.method ?? 'GET'} ${url} ${typeof init.body === 'string' ? init.body : ''}`);
    try {
      const res = await fetch(url, init);
      transcript.add('http', `${res.status} ${url}`);
      return res;
    } catch (e) {
      transcript.add('http', `failed ${url}: ${e.message}`);
      throw e;
    }
  };
}

/**
 * An SDK client through the balancer on one emulated transport only. The SDK keeps the
 * session and node ids of its connect reply in `_session` and `_node`.
 */
function emulatedClient(kind, { user = uniq('u'), ...options } = {}) {
  // The client's transcript exists once the client does; fetch runs only after that.
  let client = null;
  const transcript = { add: (...a) => client?.transcript.add(...a) };
  client = newClient(nodes[0], {
    user,
    url: [{ transport: kind, endpoint: `${lb.url}/connection/${kind}` }],
    emulationEndpoint: `${lb.url}/emulation`,
    fetch: recordingFetch(transcript),
    readableStream: globalThis.ReadableStream,
    eventsource: EventSource,
    minReconnectDelay: 50,
    maxReconnectDelay: 400,
    ...options,
  });
  client.on('connected', () => {
    const node = lb.streamNodeOf(client._session);
    client.transcript.add('lb', `session ${client._session} streams from node ${node === undefined ? '?' : node + 1}`);
  });
  const explain = client.explain;
  client.explain = () => `${explain()}\n${lb.explain()}`;
  return client;
}

/** Subscribes a new subscription and waits for it. */
async function subscribed(client, channel, options) {
  const sub = newSub(client, channel, options);
  sub.subscribedCtx = [];
  sub.on('subscribed', (ctx) => sub.subscribedCtx.push(ctx));
  const first = nextEvent(sub, 'subscribed', { explain: client.explain, timeout: 8000 });
  sub.subscribe();
  await first;
  return sub;
}

/** Disconnects `user` on every node (the API acts on the node it is called on). */
async function disconnectEverywhere(user, disconnect) {
  for (const n of nodes) {
    if (n.exitInfo === null) await n.api('disconnect', { user, disconnect });
  }
}

for (const kind of ['http_stream', 'sse']) {
  describe(`${kind} through a request-level balancer`, () => {
    test('connect, subscribe, publish from the client and the API, presence, history', { timeout: 20000 }, async () => {
      const crossBefore = lb.crossPosts().length;
      const channel = uniq('emu:basic');
      const client = emulatedClient(kind, { user: 'alice' });
      const connected = nextEvent(client, 'connected', { explain: client.explain, timeout: 8000 });
      client.connect();
      const ctx = await connected;
      assert.equal(ctx.transport, kind, client.explain());
      assert.ok(client._session, `a session id in the connect reply\n${client.explain()}`);
      assert.ok(client._node, `a node id in the connect reply\n${client.explain()}`);

      const sub = await subscribed(client, channel);
      await sub.publish({ from: 'client' });
      await nodes[1].publish(channel, { from: 'api' });
      await nodes[2].publish(channel, { from: 'api2' });
      await waitUntil(() => sub.pubs.length === 3, { what: '3 publications', explain: client.explain });
      assert.deepEqual(sub.pubs.map((p) => p.offset), [1, 2, 3], client.explain());
      assert.deepEqual(sub.pubs.map((p) => p.data), [{ from: 'client' }, { from: 'api' }, { from: 'api2' }]);

      const presence = await sub.presence();
      const clients = Object.values(presence.clients);
      assert.equal(clients.length, 1, JSON.stringify(presence));
      assert.equal(clients[0].user, 'alice');
      const stats = await sub.presenceStats();
      assert.deepEqual(stats, { numClients: 1, numUsers: 1 });

      const history = await sub.history({ limit: 10 });
      assert.deepEqual(history.publications.map((p) => p.offset), [1, 2, 3]);
      assert.equal(history.offset, 3);

      // A publish through the client itself, outside the subscription object.
      await client.publish(channel, { from: 'client2' });
      await waitUntil(() => sub.pubs.length === 4, { what: '4th publication', explain: client.explain });

      // The commands really went through other nodes than the stream's.
      const cross = lb.crossPosts().slice(crossBefore).filter((r) => r.session === client._session);
      assert.ok(cross.length >= 3, `POSTs delivered by another node than the stream's: ${cross.length}\n${client.explain()}`);
      client.disconnect();
    });

    test('a short-lived token is refreshed with getToken through /emulation', { timeout: 25000 }, async () => {
      let calls = 0;
      const user = uniq('refresh');
      const client = emulatedClient(kind, {
        user,
        token: nodes[0].token({ sub: user, ttl: 3 }),
        getToken: async () => {
          calls += 1;
          return nodes[0].token({ sub: user, ttl: 3 });
        },
      });
      const channel = uniq('emu:refresh');
      const connected = nextEvent(client, 'connected', { explain: client.explain, timeout: 8000 });
      client.connect();
      await connected;
      const sub = await subscribed(client, channel);
      let lost = null;
      client.on('connecting', (c) => (lost ??= c));
      client.on('disconnected', (c) => (lost ??= c));
      // Past ttl (3 s) plus the server's grace: without a refresh the stream would end.
      await sleep(8500);
      assert.equal(lost, null, `the connection was lost: ${JSON.stringify(lost)}\n${client.explain()}`);
      assert.ok(calls >= 2, `getToken called ${calls} times\n${client.explain()}`);
      const refreshes = client.transcript.entries.filter((e) => e.kind === '>' && e.text.includes('\\"refresh\\":'));
      assert.ok(refreshes.length >= 2, `refresh commands posted: ${refreshes.length}\n${client.explain()}`);
      await nodes[2].publish(channel, { after: 'refresh' });
      await waitUntil(() => sub.pubs.length === 1, { what: 'publication after refresh', explain: client.explain });
      client.disconnect();
    });

    test('a forced disconnect with a reconnect code recovers what was published meanwhile', { timeout: 20000 }, async () => {
      const user = uniq('moved');
      const channel = uniq('emu:recover');
      const client = emulatedClient(kind, { user, minReconnectDelay: 500, maxReconnectDelay: 800 });
      client.connect();
      const sub = await subscribed(client, channel);
      for (let n = 1; n <= 5; n++) await nodes[n % 3].publish(channel, n);
      await waitUntil(() => sub.pubs.length === 5, { what: '5 publications', explain: client.explain });
      const firstSession = client._session;

      const away = nextEvent(client, 'connecting', { explain: client.explain });
      await disconnectEverywhere(user, { code: 4001, reason: 'moved' });
      assert.deepEqual(await away, { code: 4001, reason: 'moved' }, client.explain());
      // Published while the client waits out its reconnect delay.
      for (let n = 6; n <= 12; n++) await nodes[n % 3].publish(channel, n);
      await waitUntil(() => sub.subscribedCtx.length === 2 && sub.pubs.length >= 12, {
        what: 'resubscribed with 12 publications',
        explain: client.explain,
      });
      await sleep(200); // duplicates would arrive by now
      const again = sub.subscribedCtx[1];
      assert.equal(again.wasRecovering, true, client.explain());
      assert.equal(again.recovered, true, client.explain());
      assert.notEqual(client._session, firstSession, 'a new session after the reconnect');
      assert.deepEqual(sub.pubs.map((p) => p.offset), range(1, 12), client.explain());
      assert.deepEqual(sub.pubs.map((p) => p.data), range(1, 12), client.explain());
      client.disconnect();
    });
  });
}

test('a node SIGKILLed mid-stream: every client gets every publication once, in order', { timeout: 40000 }, async (t) => {
  const channel = uniq('emu:kill');
  const N = 200;
  const clients = [];
  for (let i = 0; i < 6; i++) {
    const kind = i % 2 === 0 ? 'http_stream' : 'sse';
    const client = emulatedClient(kind, { user: `k${i}` });
    client.connect();
    const sub = await subscribed(client, channel);
    clients.push({ kind, client, sub });
  }
  const streamsOn = (k) => clients.filter((c) => lb.streamNodeOf(c.client._session) === k).length;
  const spread = [0, 1, 2].map(streamsOn);
  // The node with the most streams dies; another one publishes.
  const victim = spread.indexOf(Math.max(...spread));
  const publisher = nodes[(victim + 1) % 3];
  const explainAll = () => [...clients.map((c, i) => `client k${i} (${c.kind}):\n${c.client.explain()}`)].join('\n');
  assert.ok(spread[victim] >= 1, `some stream on the victim: ${spread}`);

  const t0 = Date.now();
  let killedAt = null;
  const killer = (async () => {
    await sleep(200);
    nodes[victim].child.kill('SIGKILL');
    killedAt = Date.now() - t0;
  })();
  for (let n = 1; n <= N; n++) {
    const { offset } = await publisher.publish(channel, n);
    assert.equal(offset, n);
    await sleep(3);
  }
  const publishedIn = Date.now() - t0;
  await killer;
  assert.equal((await nodes[victim].exited).signal, 'SIGKILL');
  assert.ok(killedAt < publishedIn, `the kill (${killedAt} ms) happened while publishing (${publishedIn} ms)`);

  const broken = (c) =>
    c.sub.subscribedCtx.slice(1).some((ctx) => !(ctx.wasRecovering && ctx.recovered)) ||
    c.sub.pubs.some((p, k) => p.offset !== k + 1);
  const done = (c) => c.sub.pubs.length >= N && c.client.state === 'connected';
  await waitUntil(() => clients.every(done) || clients.some(broken), {
    timeout: 20000,
    what: `${N} publications on every client`,
    explain: () => `counts: ${clients.map((c) => c.sub.pubs.length).join(', ')}\n${explainAll()}`,
  });
  const deliveredIn = Date.now() - t0;
  await sleep(300); // duplicates would arrive by now

  for (const [i, c] of clients.entries()) {
    for (const ctx of c.sub.subscribedCtx.slice(1)) {
      assert.equal(ctx.recovered, true, `k${i}: a recovery failed: ${JSON.stringify(ctx)}\n${c.client.explain()}`);
    }
    const offsets = c.sub.pubs.map((p) => p.offset);
    const firstBad = offsets.findIndex((o, k) => o !== k + 1);
    assert.equal(firstBad, -1, `k${i}: offset ${offsets[firstBad]} at position ${firstBad + 1}\n${c.client.explain()}`);
    assert.deepEqual(offsets, range(1, N), `k${i}: offsets`);
    assert.deepEqual(c.sub.pubs.map((p) => p.data), range(1, N), `k${i}: data`);
  }
  const moved = clients.filter((c) => c.sub.subscribedCtx.length > 1);
  assert.ok(moved.length >= spread[victim], `the victim's ${spread[victim]} clients resubscribed elsewhere\n${explainAll()}`);
  for (const c of clients) assert.notEqual(lb.streamNodeOf(c.client._session), victim, 'no stream on the dead node');

  // Forwarded commands, counted by the survivors themselves.
  let forwarded = 0;
  for (const n of nodes) {
    if (n.exitInfo === null) forwarded += await n.metric('herald_emulation_requests_total', { outcome: 'delivered', route: 'forwarded' });
  }
  assert.ok(forwarded > 0, 'the survivors forwarded emulated commands');
  t.diagnostic(
    `streams per node ${spread.join('/')}, killed node ${victim + 1} at ${killedAt} ms; published ${N} in ${publishedIn} ms, ` +
      `all delivered at ${deliveredIn} ms; resubscribed clients ${moved.length}; forwarded POSTs on survivors ${forwarded}; ` +
      `cross-node POSTs seen by the balancer ${lb.crossPosts().length}`,
  );
});

test('a node drained with SIGTERM: its clients are told 3001, move, and recover everything', { timeout: 40000 }, async (t) => {
  const live = [0, 1, 2].filter((k) => nodes[k].exitInfo === null);
  assert.equal(live.length, 2, 'the previous test left two nodes');
  const channel = uniq('emu:drain');
  const N = 150;
  const clients = [];
  for (let i = 0; i < 4; i++) {
    const kind = i % 2 === 0 ? 'http_stream' : 'sse';
    const client = emulatedClient(kind, { user: `d${i}` });
    client.connect();
    const sub = await subscribed(client, channel);
    // Why each reconnect started (the first connect is not one).
    client.reconnects = [];
    client.on('connecting', (ctx) => client.reconnects.push(ctx));
    clients.push({ kind, client, sub });
  }
  const on = (k) => clients.filter((c) => lb.streamNodeOf(c.client._session) === k);
  const victim = on(live[0]).length >= on(live[1]).length ? live[0] : live[1];
  const publisher = nodes[live.find((k) => k !== victim)];
  const drained = on(victim);
  assert.ok(drained.length >= 1, 'some stream on the drained node');
  const explainAll = () => clients.map((c, i) => `client d${i} (${c.kind}):\n${c.client.explain()}`).join('\n');

  const stopping = (async () => {
    await sleep(150);
    return nodes[victim].stop({ signal: 'SIGTERM', timeout: 8000 });
  })();
  for (let n = 1; n <= N; n++) {
    await publisher.publish(channel, n);
    await sleep(3);
  }
  const exit = await stopping;
  assert.equal(exit.code, 0, `the drained node exits cleanly: ${JSON.stringify(exit)}`);
  await waitUntil(() => clients.every((c) => c.sub.pubs.length >= N && c.client.state === 'connected'), {
    timeout: 20000,
    what: `${N} publications on every client`,
    explain: () => `counts: ${clients.map((c) => c.sub.pubs.length).join(', ')}\n${explainAll()}`,
  });
  await sleep(300);
  for (const [i, c] of clients.entries()) {
    assert.deepEqual(c.sub.pubs.map((p) => p.offset), range(1, N), `d${i}: offsets\n${c.client.explain()}`);
    for (const ctx of c.sub.subscribedCtx.slice(1)) {
      assert.equal(ctx.recovered, true, `d${i}: ${JSON.stringify(ctx)}\n${c.client.explain()}`);
    }
  }
  for (const c of drained) {
    assert.deepEqual(c.client.reconnects[0], { code: 3001, reason: 'shutdown' }, c.client.explain());
    assert.notEqual(lb.streamNodeOf(c.client._session), victim);
  }
  t.diagnostic(`drained node ${victim + 1} with ${drained.length} of ${clients.length} streams; all recovered`);
});
