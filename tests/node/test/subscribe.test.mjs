// Subscriptions with the real SDK: delivery order and offsets, subscription tokens,
// permissions, server-side subscriptions, presence and join/leave.

import { test, describe, before, after, afterEach } from 'node:test';
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
} from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald();
});
afterEach(closeClients);
after(() => node?.stop());

/** A connected SDK client; `client.clientId` is the id from its connect reply. */
async function connected(opts) {
  const client = newClient(node, opts);
  const ready = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  client.clientId = (await ready).client;
  return client;
}

/** A subscription that reached `subscribed`; resolves to [sub, subscribedCtx]. */
async function subscribed(client, channel, opts) {
  const sub = newSub(client, channel, opts);
  const done = nextEvent(sub, 'subscribed', { explain: client.explain });
  sub.subscribe();
  return [sub, await done];
}

/** Subscribes and resolves to the `unsubscribed` ctx (for refused subscriptions). */
async function refused(client, channel, opts) {
  const sub = newSub(client, channel, opts);
  const done = nextEvent(sub, 'unsubscribed', { explain: client.explain });
  sub.subscribe();
  const ctx = await done;
  return [sub, ctx];
}

describe('publications', () => {
  test('API publications arrive in order with offsets 1..N and data intact', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('feed');
    const [sub, ctx] = await subscribed(client, channel);
    assert.equal(ctx.recoverable, true, 'a channel with history is recoverable');
    assert.equal(ctx.positioned, true);
    assert.equal(ctx.wasRecovering, false);
    const epoch = ctx.streamPosition.epoch;
    assert.ok(epoch, `subscribe reply has an epoch\n${client.explain()}`);
    assert.equal(ctx.streamPosition.offset, 0);

    const N = 25;
    const sent = [];
    for (let i = 1; i <= N; i++) {
      // Varied payloads: nested objects, unicode, escapes, numbers, arrays, null.
      const data = { i, text: `héllo "${i}"\n\u2028✓`, nested: { list: [i, null, true, 1.5] } };
      sent.push(data);
      const res = await node.publish(channel, data);
      assert.deepEqual(res, { offset: i, epoch });
    }
    await waitUntil(() => sub.pubs.length >= N, { what: `${N} publications`, explain: client.explain });
    await sleep(100); // nothing extra (no duplicates) may follow
    assert.deepEqual(
      sub.pubs.map((p) => p.offset),
      Array.from({ length: N }, (_, k) => k + 1),
      client.explain(),
    );
    assert.deepEqual(
      sub.pubs.map((p) => p.data),
      sent,
    );
    assert.ok(sub.pubs.every((p) => p.channel === channel && p.info === undefined), 'API publications carry no client info');
  });

  test('any JSON value is data', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('json');
    const [sub] = await subscribed(client, channel);
    const values = ['text', 42, [1, 2], true, {}, 1.5e300, 'nul\u0000byte'];
    for (const data of values) await node.publish(channel, data);
    await waitUntil(() => sub.pubs.length === values.length, { what: 'publications', explain: client.explain });
    assert.deepEqual(sub.pubs.map((p) => p.data), values);
    // null is no data.
    assert.equal((await node.apiRaw('publish', { channel, data: null })).body.error?.code, 107);
  });

  test('concurrent API publications are delivered in offset order without gaps', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('burst');
    const [sub] = await subscribed(client, channel);
    const N = 50;
    const results = await Promise.all(Array.from({ length: N }, (_, k) => node.publish(channel, { k })));
    assert.deepEqual(
      results.map((r) => r.offset).sort((a, b) => a - b),
      Array.from({ length: N }, (_, k) => k + 1),
    );
    await waitUntil(() => sub.pubs.length >= N, { what: `${N} publications`, explain: client.explain });
    await sleep(100);
    assert.deepEqual(
      sub.pubs.map((p) => p.offset),
      Array.from({ length: N }, (_, k) => k + 1),
      client.explain(),
    );
    // Each publication arrives with the data its publish call got that offset for.
    const byOffset = new Map(results.map((r, k) => [r.offset, k]));
    for (const p of sub.pubs) assert.equal(p.data.k, byOffset.get(p.offset));
  });

  test('tags set through the API reach the subscriber', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('tags');
    const [sub] = await subscribed(client, channel);
    await node.publish(channel, { t: 1 }, { tags: { kind: 'note', lang: 'en' } });
    await waitUntil(() => sub.pubs.length === 1, { what: 'publication', explain: client.explain });
    assert.deepEqual(sub.pubs[0].tags, { kind: 'note', lang: 'en' }, client.explain());
  });

  test('fan-out: every subscriber gets every publication, in order', { timeout: 15000 }, async () => {
    const channel = uniq('fanout');
    const clients = await Promise.all(Array.from({ length: 20 }, (_, k) => connected({ user: `fan-${k}` })));
    const subs = await Promise.all(clients.map(async (c) => (await subscribed(c, channel))[0]));
    const N = 30;
    await Promise.all(Array.from({ length: N }, (_, k) => node.publish(channel, { k })));
    await waitUntil(() => subs.every((s) => s.pubs.length >= N), { what: `${N} publications at each of 20 clients` });
    await sleep(100);
    subs.forEach((s, k) => {
      assert.deepEqual(s.pubs.map((p) => p.offset), Array.from({ length: N }, (_, i) => i + 1), clients[k].explain());
    });
  });

  test('a subscriber publishes through the SDK; publications carry the publisher info', { timeout: 10000 }, async () => {
    const alice = await connected({ user: 'alice', claims: { info: { name: 'Alice' } } });
    const bob = await connected({ user: 'bob' });
    const channel = uniq('chat');
    const [aliceSub] = await subscribed(alice, channel);
    const [bobSub] = await subscribed(bob, channel);
    await aliceSub.publish({ hello: 'bob' });
    await waitUntil(() => bobSub.pubs.length === 1, { what: 'publication at bob', explain: bob.explain });
    const pub = bobSub.pubs[0];
    assert.deepEqual(pub.data, { hello: 'bob' });
    assert.equal(pub.offset, 1);
    assert.equal(pub.info?.user, 'alice', bob.explain());
    assert.deepEqual(pub.info?.connInfo, { name: 'Alice' }, bob.explain());
    await waitUntil(() => aliceSub.pubs.length === 1, { what: 'own publication', explain: alice.explain });
  });

  test('history through the SDK returns what was published', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('hist');
    const [sub] = await subscribed(client, channel);
    for (let i = 1; i <= 5; i++) await node.publish(channel, { i });
    const all = await sub.history({ limit: 10 });
    assert.deepEqual(all.publications.map((p) => p.data.i), [1, 2, 3, 4, 5]);
    assert.equal(all.offset, 5);
    const since = await sub.history({ limit: 10, since: { offset: 3, epoch: all.epoch } });
    assert.deepEqual(since.publications.map((p) => p.offset), [4, 5]);
    const reversed = await sub.history({ limit: 2, reverse: true });
    assert.deepEqual(reversed.publications.map((p) => p.offset), [5, 4]);
  });
});

describe('subscription tokens ($ channels)', () => {
  test('without a token a $ channel is refused with 103', { timeout: 10000 }, async () => {
    const client = await connected({ user: 'alice' });
    const [, ctx] = await refused(client, uniq('$secret'));
    assert.equal(ctx.code, 103, client.explain());
  });

  test('with a valid token from getToken a $ channel is subscribed and receives publications', { timeout: 10000 }, async () => {
    const client = await connected({ user: 'alice' });
    const channel = uniq('$secret');
    let calls = 0;
    const [sub, ctx] = await subscribed(client, channel, {
      getToken: async (c) => {
        calls += 1;
        assert.equal(c.channel, channel);
        return node.subToken({ sub: 'alice', channel });
      },
    });
    assert.equal(calls, 1);
    assert.equal(ctx.recoverable, true);
    await node.publish(channel, { secret: 1 });
    await waitUntil(() => sub.pubs.length === 1, { what: 'publication', explain: client.explain });
    assert.deepEqual(sub.pubs[0].data, { secret: 1 });
  });

  test('an expired subscription token (109) makes the SDK ask getToken again', { timeout: 10000 }, async () => {
    const client = await connected({ user: 'alice' });
    const channel = uniq('$secret');
    let calls = 0;
    const [, ctx] = await subscribed(client, channel, {
      minResubscribeDelay: 50,
      maxResubscribeDelay: 200,
      getToken: async () => {
        calls += 1;
        return node.subToken({ sub: 'alice', channel, ttl: calls === 1 ? -10 : 60 });
      },
    });
    assert.equal(calls, 2, client.explain());
    assert.ok(ctx);
    assert.ok(
      client.transcript.entries.some((e) => e.kind === '<' && /"error":\{"code":109/.test(e.text)),
      `the first subscribe was answered with 109\n${client.explain()}`,
    );
  });

  test('a token for a different channel is refused', { timeout: 10000 }, async () => {
    const client = await connected({ user: 'alice' });
    const channel = uniq('$secret');
    const [, ctx] = await refused(client, channel, {
      getToken: async () => node.subToken({ sub: 'alice', channel: `${channel}-other` }),
    });
    assert.equal(ctx.code, 103, client.explain());
  });

  test('a token for a different user is refused', { timeout: 10000 }, async () => {
    const client = await connected({ user: 'alice' });
    const channel = uniq('$secret');
    const [, ctx] = await refused(client, channel, {
      getToken: async () => node.subToken({ sub: 'mallory', channel }),
    });
    assert.equal(ctx.code, 103, client.explain());
  });
});

describe('permissions', () => {
  test('namespace that allows nothing: subscribe refused with 103', { timeout: 10000 }, async () => {
    const client = await connected();
    const [, ctx] = await refused(client, uniq('locked:x'));
    assert.equal(ctx.code, 103, client.explain());
  });

  test('unknown namespace: subscribe refused with 102', { timeout: 10000 }, async () => {
    const client = await connected();
    const [, ctx] = await refused(client, 'nope:x');
    assert.equal(ctx.code, 102, client.explain());
  });

  test('client publish where the namespace does not allow it: 103', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('tiny:x');
    await subscribed(client, channel); // even a subscriber: tiny allows subscribing only
    await assert.rejects(client.publish(channel, { no: 1 }), (e) => e.code === 103);
    // Default allows publishing for subscribers only.
    await assert.rejects(client.publish(uniq('feed'), { no: 1 }), (e) => e.code === 103);
    // Nothing was stored.
    const h = await node.api('history', { channel, limit: 10 });
    assert.equal(h.publications.length, 0);
  });

  test('client history and presence where not allowed: 103', { timeout: 10000 }, async () => {
    const client = await connected();
    const channel = uniq('feed');
    // Not a subscriber of a default-namespace channel.
    await assert.rejects(client.history(channel, { limit: 1 }), (e) => e.code === 103);
    await assert.rejects(client.presence(channel), (e) => e.code === 103);
  });

  test('user-limited channels admit only the listed users', { timeout: 10000 }, async () => {
    const listed = await connected({ user: '42' });
    const other = await connected({ user: '44' });
    const channel = `dm:${uniq('chat')}#42,43`;
    const [sub] = await subscribed(listed, channel);
    const [, ctx] = await refused(other, channel);
    assert.equal(ctx.code, 103, other.explain());
    await node.publish(channel, { to: 'listed' });
    await waitUntil(() => sub.pubs.length === 1, { what: 'publication', explain: listed.explain });
  });

  test('subscribing twice to the same channel on one connection is refused with 105', { timeout: 10000 }, async () => {
    // The SDK never does this, so it is the raw protocol.
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: 'alice' }));
    const channel = uniq('feed');
    const first = await raw.command('subscribe', { channel });
    assert.ok(first.subscribe, raw.explain());
    const second = await raw.command('subscribe', { channel });
    assert.equal(second.error?.code, 105, raw.explain());
  });
});

describe('server-side subscriptions', () => {
  test('channels in the connection token are subscribed by the server', { timeout: 10000 }, async () => {
    const channel = uniq('server');
    const client = newClient(node, { user: 'alice', claims: { channels: [channel] } });
    const subscribedCtx = nextEvent(client, 'subscribed', { filter: (c) => c.channel === channel, explain: client.explain });
    const pubs = [];
    client.on('publication', (ctx) => pubs.push(ctx));
    client.connect();
    const ctx = await subscribedCtx;
    assert.equal(ctx.recoverable, true, client.explain());
    await node.publish(channel, { n: 1 });
    await node.publish(channel, { n: 2 });
    await waitUntil(() => pubs.length === 2, { what: 'server-side publications', explain: client.explain });
    assert.deepEqual(pubs.map((p) => [p.channel, p.offset, p.data.n]), [
      [channel, 1, 1],
      [channel, 2, 2],
    ]);

    // A reconnect recovers the server-side subscription from its position too.
    const again = nextEvent(client, 'subscribed', { filter: (c) => c.channel === channel, timeout: 5000, explain: client.explain });
    const away = nextEvent(client, 'connecting', { explain: client.explain });
    await node.api('disconnect', { user: 'alice', disconnect: { code: 3011, reason: 'force reconnect' } });
    await away;
    await node.publish(channel, { n: 3 });
    const ctx2 = await again;
    assert.equal(ctx2.wasRecovering, true, client.explain());
    assert.equal(ctx2.recovered, true, client.explain());
    await waitUntil(() => pubs.length === 3, { what: 'recovered publication', explain: client.explain });
    assert.deepEqual(pubs.map((p) => p.offset), [1, 2, 3], client.explain());
  });
});

describe('presence and join/leave', () => {
  test('join and leave pushes, presence and presence stats', { timeout: 10000 }, async () => {
    const channel = uniq('room:lobby');
    const alice = await connected({ user: 'alice', claims: { info: { name: 'Alice' } } });
    const bob = await connected({ user: 'bob', claims: { info: { name: 'Bob' } } });
    const [aliceSub, aliceCtx] = await subscribed(alice, channel, { joinLeave: true });
    assert.ok(aliceCtx, alice.explain());

    // Alice also sees her own join (as with Centrifugo); wait for Bob's.
    const join = nextEvent(aliceSub, 'join', { filter: (c) => c.info.user === 'bob', explain: alice.explain });
    const [bobSub] = await subscribed(bob, channel, { joinLeave: true });
    const joined = await join;
    assert.equal(joined.channel, channel);
    assert.equal(joined.info.user, 'bob', alice.explain());
    assert.equal(joined.info.client, bob.clientId);
    assert.deepEqual(joined.info.connInfo, { name: 'Bob' }, alice.explain());

    const presence = await aliceSub.presence();
    const users = Object.values(presence.clients).map((c) => c.user).sort();
    assert.deepEqual(users, ['alice', 'bob'], JSON.stringify(presence));
    for (const [id, info] of Object.entries(presence.clients)) assert.equal(info.client, id);
    const stats = await aliceSub.presenceStats();
    assert.deepEqual(stats, { numClients: 2, numUsers: 2 });

    const apiPresence = await node.api('presence', { channel });
    assert.equal(Object.keys(apiPresence.presence).length, 2);
    assert.deepEqual(await node.api('presence_stats', { channel }), { num_clients: 2, num_users: 2 });

    const leave = nextEvent(aliceSub, 'leave', { explain: alice.explain });
    bobSub.unsubscribe();
    const left = await leave;
    assert.equal(left.info.user, 'bob', alice.explain());
    assert.equal(left.info.client, joined.info.client);
    await waitUntil(async () => (await aliceSub.presenceStats()).numClients === 1, { what: 'presence to drop bob' });

    // A disconnect is a leave too.
    const leave2 = nextEvent(aliceSub, 'leave', { filter: (c) => c.info.user === 'carol', explain: alice.explain });
    const [, carolCtx] = await subscribed(await connected({ user: 'carol' }), channel, { joinLeave: true });
    assert.ok(carolCtx);
    await node.api('disconnect', { user: 'carol' });
    const left2 = await leave2;
    assert.equal(left2.channel, channel);
  });

  test('a socket that dies is a leave, and leaves presence', { timeout: 10000 }, async () => {
    const channel = uniq('room:drop');
    const alice = await connected({ user: 'alice' });
    const [aliceSub] = await subscribed(alice, channel, { joinLeave: true });
    const bob = await connected({ user: 'bob', minReconnectDelay: 5000, maxReconnectDelay: 5000 });
    await subscribed(bob, channel, { joinLeave: true });
    assert.equal((await aliceSub.presenceStats()).numClients, 2);
    const leave = nextEvent(aliceSub, 'leave', { filter: (c) => c.info.user === 'bob', explain: alice.explain });
    bob.sockets.at(-1).terminate(); // no close frame: the server learns from the socket
    const left = await leave;
    assert.equal(left.info.client, bob.clientId);
    assert.deepEqual(await aliceSub.presenceStats(), { numClients: 1, numUsers: 1 });
  });

  test('subscription token info is the chan_info others see', { timeout: 10000 }, async () => {
    const channel = uniq('$room:vip');
    const alice = await connected({ user: 'alice' });
    const [aliceSub] = await subscribed(alice, channel, {
      joinLeave: true,
      getToken: async () => node.subToken({ sub: 'alice', channel }),
    });
    const join = nextEvent(aliceSub, 'join', { filter: (c) => c.info.user === 'bob', explain: alice.explain });
    const bob = await connected({ user: 'bob' });
    await subscribed(bob, channel, {
      joinLeave: true,
      getToken: async () => node.subToken({ sub: 'bob', channel, info: { role: 'moderator' } }),
    });
    const joined = await join;
    assert.deepEqual(joined.info.chanInfo, { role: 'moderator' }, alice.explain());
    const presence = await aliceSub.presence();
    assert.deepEqual(presence.clients[bob.clientId]?.chanInfo, { role: 'moderator' }, JSON.stringify(presence));
  });

  test('no join/leave pushes for a subscriber that did not ask, or where the namespace has none', { timeout: 10000 }, async () => {
    const quietRoom = uniq('room:quiet');
    const alice = await connected({ user: 'alice' });
    const [aliceSub] = await subscribed(alice, quietRoom); // joinLeave not requested
    let pushes = 0;
    aliceSub.on('join', () => pushes++);
    aliceSub.on('leave', () => pushes++);
    const bob = await connected({ user: 'bob' });
    const [bobSub] = await subscribed(bob, quietRoom, { joinLeave: true });
    bobSub.unsubscribe();

    const feed = uniq('feed'); // default namespace: join_leave off
    const [feedSub] = await subscribed(alice, feed, { joinLeave: true });
    feedSub.on('join', () => pushes++);
    await subscribed(bob, feed, { joinLeave: true });
    await sleep(200);
    assert.equal(pushes, 0, alice.explain());
  });
});
