// The SDK's Protobuf build (`centrifuge/build/protobuf`) against a real herald: binary
// frames, the `centrifuge-protobuf` subprotocol, and the same behaviour as the JSON
// suite's connect, subscribe, publish, recovery, history and presence tests. Payloads
// travel as bytes; Herald's are JSON text, so the client sends and reads JSON bytes.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald,
  newClient,
  newSub,
  closeClients,
  nextEvent,
  waitUntil,
  uniq,
  sleep,
  jsonBytes,
  fromJsonBytes,
} from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald();
});
afterEach(closeClients);
after(() => node?.stop());

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

async function connected(opts) {
  const client = newClient(node, { protobuf: true, ...opts });
  const ready = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  client.clientId = (await ready).client;
  return client;
}

async function subscribed(client, channel, opts) {
  const sub = newSub(client, channel, opts);
  const done = nextEvent(sub, 'subscribed', { explain: client.explain });
  sub.subscribe();
  return [sub, await done];
}

test('connects over the centrifuge-protobuf subprotocol with binary frames', { timeout: 10000 }, async () => {
  const client = await connected({ user: 'alice' });
  assert.match(client.clientId, /^[0-9a-f-]{36}$/, client.explain());
  const ws = client.sockets.at(-1);
  assert.equal(ws.protocol, 'centrifuge-protobuf', 'the server chose the subprotocol');
  const received = client.transcript.entries.filter((e) => e.kind === '<');
  assert.ok(received.length > 0 && received.every((e) => e.text.startsWith('<binary')), client.explain());
  assert.equal(client.state, 'connected');
});

test('API publications arrive in order with offsets 1..N and data intact', { timeout: 10000 }, async () => {
  const client = await connected();
  const channel = uniq('pb-feed');
  const [sub, ctx] = await subscribed(client, channel);
  assert.equal(ctx.recoverable, true);
  assert.equal(ctx.positioned, true);
  assert.equal(ctx.wasRecovering, false);
  const epoch = ctx.streamPosition.epoch;
  assert.ok(epoch, client.explain());

  const N = 20;
  const sent = [];
  for (let i = 1; i <= N; i++) {
    const data = { i, text: `héllo "${i}"\n\u2028✓`, nested: { list: [i, null, true, 1.5] } };
    sent.push(data);
    assert.deepEqual(await node.publish(channel, data), { offset: i, epoch });
  }
  await waitUntil(() => sub.pubs.length >= N, { what: `${N} publications`, explain: client.explain });
  await sleep(100);
  assert.deepEqual(sub.pubs.map((p) => p.offset), range(1, N), client.explain());
  assert.ok(sub.pubs.every((p) => p.data instanceof Uint8Array), 'Protobuf data is bytes');
  assert.deepEqual(sub.pubs.map((p) => fromJsonBytes(p.data)), sent);
});

test('a subscriber publishes JSON bytes; publications carry the publisher info', { timeout: 10000 }, async () => {
  const alice = await connected({ user: 'alice', claims: { info: { name: 'Alice' } } });
  const bob = await connected({ user: 'bob' });
  const channel = uniq('pb-chat');
  const [aliceSub] = await subscribed(alice, channel);
  const [bobSub] = await subscribed(bob, channel);
  await aliceSub.publish(jsonBytes({ hello: 'bob' }));
  await waitUntil(() => bobSub.pubs.length === 1, { what: 'publication at bob', explain: bob.explain });
  const pub = bobSub.pubs[0];
  assert.deepEqual(fromJsonBytes(pub.data), { hello: 'bob' });
  assert.equal(pub.info.user, 'alice');
  assert.equal(pub.info.client, alice.clientId);
  assert.deepEqual(fromJsonBytes(pub.info.connInfo), { name: 'Alice' }, bob.explain());
  // A JSON client on the same channel reads the same publication as JSON.
  const history = await node.api('history', { channel, limit: 10 });
  assert.deepEqual(history.publications[0].data, { hello: 'bob' });
});

test('data that is not JSON is refused with 107', { timeout: 10000 }, async () => {
  const client = await connected();
  const channel = uniq('pb-bin');
  const [sub] = await subscribed(client, channel);
  await assert.rejects(sub.publish(new Uint8Array([0xff, 0x00, 0x01])), (e) => e.code === 107);
  // The connection goes on.
  await sub.publish(jsonBytes([1, 2]));
  await waitUntil(() => sub.pubs.length === 1, { what: 'own publication', explain: client.explain });
  assert.deepEqual(fromJsonBytes(sub.pubs[0].data), [1, 2]);
});

test('history through the SDK returns what was published', { timeout: 10000 }, async () => {
  const client = await connected();
  const channel = uniq('pb-hist');
  const [sub] = await subscribed(client, channel);
  for (let i = 1; i <= 5; i++) await node.publish(channel, { i });
  const all = await sub.history({ limit: 10 });
  assert.deepEqual(all.publications.map((p) => fromJsonBytes(p.data).i), [1, 2, 3, 4, 5]);
  assert.equal(all.offset, 5);
  const since = await sub.history({ limit: 10, since: { offset: 3, epoch: all.epoch } });
  assert.deepEqual(since.publications.map((p) => p.offset), [4, 5]);
  const reversed = await sub.history({ limit: 2, reverse: true });
  assert.deepEqual(reversed.publications.map((p) => p.offset), [5, 4]);
});

test('join and leave pushes, presence and presence stats', { timeout: 10000 }, async () => {
  const alice = await connected({ user: 'alice', claims: { info: { name: 'Alice' } } });
  const bob = await connected({ user: 'bob', claims: { info: { name: 'Bob' } } });
  const channel = `room:${uniq('pb')}`;
  const [aliceSub] = await subscribed(alice, channel, { joinLeave: true });
  const join = nextEvent(aliceSub, 'join', { filter: (c) => c.info.user === 'bob', explain: alice.explain });
  await subscribed(bob, channel, { joinLeave: true });
  const joined = await join;
  assert.equal(joined.channel, channel);
  assert.equal(joined.info.client, bob.clientId);
  assert.deepEqual(fromJsonBytes(joined.info.connInfo), { name: 'Bob' }, alice.explain());

  const presence = await aliceSub.presence();
  const users = Object.values(presence.clients).map((c) => c.user).sort();
  assert.deepEqual(users, ['alice', 'bob'], alice.explain());
  for (const [id, info] of Object.entries(presence.clients)) assert.equal(info.client, id);
  const stats = await aliceSub.presenceStats();
  assert.equal(stats.numClients, 2);
  assert.equal(stats.numUsers, 2);

  const leave = nextEvent(aliceSub, 'leave', { explain: alice.explain });
  bob.disconnect();
  const left = await leave;
  assert.equal(left.info.client, joined.info.client);
});

test('forced reconnect (3011) recovers every missed publication exactly once', { timeout: 15000 }, async () => {
  const channel = uniq('pb-rec');
  const user = uniq('user');
  const client = newClient(node, { protobuf: true, user, minReconnectDelay: 500, maxReconnectDelay: 800 });
  const sub = newSub(client, channel);
  const first = nextEvent(sub, 'subscribed', { explain: client.explain });
  client.connect();
  sub.subscribe();
  const epoch = (await first).streamPosition.epoch;

  for (const i of range(1, 5)) await node.publish(channel, { i });
  await waitUntil(() => sub.pubs.length === 5, { what: 'first 5 publications', explain: client.explain });

  const away = nextEvent(client, 'connecting', { explain: client.explain });
  await node.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
  assert.equal((await away).code, 3011, client.explain());
  for (const i of range(6, 15)) await node.publish(channel, { i });
  const ctx = await nextEvent(sub, 'subscribed', { timeout: 5000, explain: client.explain });
  for (const i of range(16, 18)) await node.publish(channel, { i });

  await waitUntil(() => sub.pubs.length >= 18, { what: '18 publications', explain: client.explain });
  await sleep(150);
  assert.deepEqual(sub.pubs.map((p) => p.offset), range(1, 18), client.explain());
  assert.deepEqual(sub.pubs.map((p) => fromJsonBytes(p.data).i), range(1, 18));
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, true, client.explain());
  assert.equal(ctx.streamPosition.epoch, epoch);
});

test('recovery that is impossible (history trimmed) is reported, never partial', { timeout: 15000 }, async () => {
  const channel = `tiny:${uniq('pb')}`;
  const user = uniq('user');
  const client = newClient(node, { protobuf: true, user, minReconnectDelay: 500, maxReconnectDelay: 800 });
  const sub = newSub(client, channel);
  const first = nextEvent(sub, 'subscribed', { explain: client.explain });
  client.connect();
  sub.subscribe();
  await first;
  await node.publish(channel, { i: 1 });
  await waitUntil(() => sub.pubs.length === 1, { what: 'first publication', explain: client.explain });

  const away = nextEvent(client, 'connecting', { explain: client.explain });
  await node.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
  await away;
  // The tiny namespace keeps 3: offsets 2..6 cannot all be recovered.
  for (const i of range(2, 6)) await node.publish(channel, { i });
  const ctx = await nextEvent(sub, 'subscribed', { timeout: 5000, explain: client.explain });
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, false, client.explain());
  await sleep(150);
  assert.deepEqual(sub.pubs.map((p) => p.offset), [1], 'nothing partial was delivered');
});
