// Recovery after a reconnect, the heart of "no event lost": forced disconnects and
// abruptly killed sockets recover exactly the missed publications (no gap, no
// duplicate), and an impossible recovery is reported, never partial.

import { test, before, after, afterEach } from 'node:test';
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
  node = await startHerald({
    config: { namespaces: { big: { history_size: 20000, history_ttl: '5m', allow_subscribe_for_client: true } } },
  });
});
afterEach(closeClients);
after(() => node?.stop());

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

/**
 * A connected client (unique user, so an API disconnect hits only it) with one
 * subscription per channel, each subscribed. Reconnect delays are given per test:
 * they decide how long the client is away.
 */
async function setup(channels, clientOpts) {
  const user = uniq('user');
  const client = newClient(node, { user, ...clientOpts });
  const subs = channels.map((ch) => newSub(client, ch));
  const firsts = subs.map((s) => nextEvent(s, 'subscribed', { explain: client.explain }));
  client.connect();
  subs.forEach((s) => s.subscribe());
  const ctxs = await Promise.all(firsts);
  return { user, client, subs, epochs: ctxs.map((c) => c.streamPosition.epoch) };
}

/**
 * Publishes `{i}` to `channel` in a loop until `stop()` holds, pausing `gap` ms between
 * publications, starting at `from`; resolves to the last i published. Used to keep
 * publications flowing while the client resubscribes, so the server has to merge
 * history and the live stream. The pace keeps the total well under the history size
 * (100), or recovery would rightly fail.
 */
async function publishUntil(channel, from, stop, gap = 30) {
  let i = from;
  for (; !stop(); i++) {
    await node.publish(channel, { i });
    await sleep(gap);
  }
  return i - 1;
}

test('forced reconnect (3011) recovers every missed publication exactly once', { timeout: 15000 }, async () => {
  const channel = uniq('rec');
  // The SDK waits 800–1200 ms before reconnecting: the gap publications below are
  // surely published while it is away, the looped ones also while it resubscribes.
  const { user, client, subs, epochs } = await setup([channel], { minReconnectDelay: 800, maxReconnectDelay: 1200 });
  const [sub] = subs;
  const subscribedCtxs = [];
  sub.on('subscribed', (ctx) => subscribedCtxs.push(ctx));
  let unsubscribed = null;
  sub.on('unsubscribed', (ctx) => (unsubscribed ??= ctx));

  for (const i of range(1, 5)) await node.publish(channel, { i });
  await waitUntil(() => sub.pubs.length === 5, { what: 'first 5 publications', explain: client.explain });

  const away = nextEvent(client, 'connecting', { explain: client.explain });
  await node.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
  const awayCtx = await away;
  assert.equal(awayCtx.code, 3011, client.explain());

  for (const i of range(6, 15)) await node.publish(channel, { i });
  const back = nextEvent(sub, 'subscribed', { timeout: 5000, explain: client.explain });
  let backAt = null;
  back.then(() => (backAt = Date.now()), () => {});
  // Keep publishing until 300 ms after the resubscribe.
  const last = await publishUntil(channel, 16, () => backAt !== null && Date.now() > backAt + 300);
  const ctx = await back;

  await waitUntil(() => sub.pubs.length >= last, { what: `${last} publications`, explain: client.explain });
  await sleep(150); // duplicates would arrive by now
  assert.deepEqual(sub.pubs.map((p) => p.offset), range(1, last), `offsets, gap or duplicate\n${client.explain()}`);
  assert.deepEqual(sub.pubs.map((p) => p.data.i), range(1, last), client.explain());
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, true, client.explain());
  assert.equal(ctx.streamPosition.epoch, epochs[0]);
  assert.equal(subscribedCtxs.length, 1, `exactly one resubscribe\n${client.explain()}`);
  assert.equal(unsubscribed, null, client.explain());

  // The recovered publications came in the subscribe reply: check the frame itself.
  const reply = client.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"was_recovering":true'));
  const sr = JSON.parse(reply.text.split('\n').find((l) => l.includes('was_recovering'))).subscribe;
  assert.equal(sr.recovered, true);
  assert.deepEqual(sr.publications.map((p) => p.offset).slice(0, 10), range(6, 15), client.explain());
  // The reply names the stream's top, which the recovered publications lead up to, so
  // the position the SDK reports at 'subscribed' is current, not the one it left at.
  const top = sr.publications.at(-1).offset;
  assert.equal(sr.offset, top, 'a recovered reply names the stream top');
  assert.deepEqual(ctx.streamPosition, { offset: top, epoch: epochs[0] }, client.explain());
});

test('an abruptly killed socket recovers every missed publication in every channel', { timeout: 15000 }, async () => {
  const channels = [uniq('rec-a'), uniq('rec-b')];
  const { client, subs, epochs } = await setup(channels, { minReconnectDelay: 500, maxReconnectDelay: 800 });
  for (const i of range(1, 3)) for (const ch of channels) await node.publish(ch, { i });
  await waitUntil(() => subs.every((s) => s.pubs.length === 3), { what: 'first publications', explain: client.explain });

  const away = nextEvent(client, 'connecting', { explain: client.explain });
  // No close frame, no FIN handshake from the client's side of the protocol: the
  // socket is destroyed, as when a network drops.
  client.sockets.at(-1).terminate();
  await away;

  for (const i of range(4, 10)) for (const ch of channels) await node.publish(ch, { i });
  const backs = subs.map((s) => nextEvent(s, 'subscribed', { timeout: 5000, explain: client.explain }));
  let done = false;
  Promise.all(backs).then(() => setTimeout(() => (done = true), 300), () => (done = true));
  let last = 10;
  for (let i = 11; !done; i++) {
    for (const ch of channels) await node.publish(ch, { i });
    last = i;
    await sleep(30);
  }
  const ctxs = await Promise.all(backs);

  await waitUntil(() => subs.every((s) => s.pubs.length >= last), { what: `${last} publications each`, explain: client.explain });
  await sleep(150);
  subs.forEach((s, k) => {
    assert.deepEqual(s.pubs.map((p) => p.offset), range(1, last), `${channels[k]}\n${client.explain()}`);
    assert.deepEqual(s.pubs.map((p) => p.data.i), range(1, last));
    assert.equal(ctxs[k].wasRecovering, true, client.explain());
    assert.equal(ctxs[k].recovered, true, client.explain());
    assert.equal(ctxs[k].streamPosition.epoch, epochs[k]);
  });
});

test('recovery that is impossible (history trimmed) is reported, never partial', { timeout: 15000 }, async () => {
  const channel = uniq('tiny:x'); // history_size 3
  // 1.5 s before the reconnect: the 10 publications below are all in before it.
  const { user, client, subs, epochs } = await setup([channel], { minReconnectDelay: 1500, maxReconnectDelay: 2000 });
  const [sub] = subs;
  await node.publish(channel, { i: 1 });
  await node.publish(channel, { i: 2 });
  await waitUntil(() => sub.pubs.length === 2, { what: 'first publications', explain: client.explain });

  const away = nextEvent(client, 'connecting', { explain: client.explain });
  await node.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
  await away;
  const t0 = Date.now();
  for (const i of range(3, 12)) await node.publish(channel, { i });
  const publishedIn = Date.now() - t0;
  assert.ok(publishedIn < 1200, `publishing took ${publishedIn} ms, the client may have been back already`);

  const ctx = await nextEvent(sub, 'subscribed', { timeout: 5000, explain: client.explain });
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, false, client.explain());
  assert.deepEqual(ctx.streamPosition, { offset: 12, epoch: epochs[0] }, client.explain());
  await sleep(200);
  assert.deepEqual(sub.pubs.map((p) => p.offset), [1, 2], `no partial recovery may be delivered\n${client.explain()}`);

  const reply = client.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"was_recovering":true'));
  const sr = JSON.parse(reply.text.split('\n').find((l) => l.includes('was_recovering'))).subscribe;
  assert.equal(sr.recovered, undefined);
  assert.equal(sr.publications, undefined, client.explain());

  // The live stream goes on from the new position.
  await node.publish(channel, { i: 13 });
  await waitUntil(() => sub.pubs.length === 3, { what: 'live publication', explain: client.explain });
  assert.equal(sub.pubs[2].offset, 13);
});

test('raw protocol: recovery rules (reject flag, wrong epoch, position ahead)', { timeout: 10000 }, async () => {
  const channel = uniq('tiny:raw');
  let epoch;
  for (const i of range(1, 6)) ({ epoch } = await node.publish(channel, { i }));
  const raw = rawClient(node);
  await raw.connect(node.token({ sub: 'raw' }));
  const sub = (params) => raw.command('subscribe', { channel, ...params });
  const unsub = () => raw.command('unsubscribe', { channel });

  // Recoverable: offsets 4..6 are still in a history of 3.
  let r = await sub({ recover: true, offset: 3, epoch });
  assert.equal(r.subscribe?.recovered, true, raw.explain());
  assert.deepEqual(r.subscribe.publications.map((p) => p.data.i), [4, 5, 6]);
  await unsub();

  // Not recoverable and the client asked to be refused instead (flag bit 2): 112.
  r = await sub({ recover: true, offset: 1, epoch, flag: 2 });
  assert.equal(r.error?.code, 112, raw.explain());
  // ...and it is not subscribed after the refusal.
  r = await sub({});
  assert.ok(r.subscribe, raw.explain());
  await unsub();

  // Another epoch: not recovered even though the offset would be in history.
  r = await sub({ recover: true, offset: 5, epoch: 'not-the-epoch' });
  assert.equal(r.subscribe?.was_recovering, true, raw.explain());
  assert.equal(r.subscribe.recovered, undefined, raw.explain());
  assert.equal(r.subscribe.epoch, epoch);
  assert.equal(r.subscribe.offset, 6);
  await unsub();

  // A position ahead of the stream is not a recovery either.
  r = await sub({ recover: true, offset: 99, epoch });
  assert.equal(r.subscribe?.recovered, undefined, raw.explain());
  assert.equal(r.subscribe.publications, undefined);
  await unsub();

  // Up to date: recovered with nothing to deliver.
  r = await sub({ recover: true, offset: 6, epoch });
  assert.equal(r.subscribe?.recovered, true, raw.explain());
  assert.equal(r.subscribe.publications, undefined);
});

test('the SDK `since` option recovers from a known position on the first subscribe', { timeout: 10000 }, async () => {
  const channel = uniq('since');
  let epoch;
  for (const i of range(1, 5)) ({ epoch } = await node.publish(channel, { i }));
  const client = newClient(node, { user: uniq('user') });
  const sub = newSub(client, channel, { since: { offset: 2, epoch } });
  const subscribed = nextEvent(sub, 'subscribed', { explain: client.explain });
  client.connect();
  sub.subscribe();
  const ctx = await subscribed;
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, true, client.explain());
  await waitUntil(() => sub.pubs.length === 3, { what: 'recovered publications', explain: client.explain });
  assert.deepEqual(sub.pubs.map((p) => p.data.i), [3, 4, 5]);
  await node.publish(channel, { i: 6 });
  await waitUntil(() => sub.pubs.length === 4, { what: 'live publication', explain: client.explain });
  assert.deepEqual(sub.pubs.map((p) => p.offset), [3, 4, 5, 6]);
});

test('a client that stops reading is cut off as slow (3008) and recovers everything', { timeout: 20000 }, async () => {
  // The `big` namespace keeps all of it, so the recovery must succeed.
  const channel = uniq('big:slow');
  const { client, subs } = await setup([channel], { minReconnectDelay: 200, maxReconnectDelay: 400 });
  const [sub] = subs;
  const slowBefore = await node.metric('herald_slow_consumer_disconnects_total');
  // Stop reading from the socket: the kernel buffers fill up, then the server's queue.
  client.sockets.at(-1)._socket.pause();
  let away = null;
  client.on('connecting', (ctx) => (away ??= ctx));

  // ~10 MB in batches (each under the API's body limit), until the server gives up.
  const payload = 'x'.repeat(2000);
  let n = 0;
  for (let batch = 0; batch < 10; batch++) {
    const commands = Array.from({ length: 500 }, () => ({ publish: { channel, data: { n: ++n, payload } } }));
    const res = await node.api('batch', { commands });
    assert.ok(res.replies.every((r) => r.publish), 'every publish succeeded');
    if ((await node.metric('herald_slow_consumer_disconnects_total')) > slowBefore) break;
  }
  assert.ok(
    (await node.metric('herald_slow_consumer_disconnects_total')) > slowBefore,
    `the server never gave up on the paused client after ${n} publications\n${node.logs(10)}`,
  );
  assert.ok((await node.metric('herald_disconnects_total', { code: '3008' })) >= 1);
  const back = nextEvent(sub, 'subscribed', { timeout: 10000, explain: client.explain });
  client.sockets.at(-1)._socket.resume();
  const ctx = await back;
  assert.ok(away, client.explain());
  assert.equal(ctx.recovered, true, client.explain());
  await waitUntil(() => sub.pubs.length >= n, { timeout: 10000, what: `${n} publications`, explain: client.explain });
  await sleep(100);
  assert.equal(sub.pubs.length, n, 'no duplicates');
  assert.ok(
    sub.pubs.every((p, k) => p.offset === k + 1 && p.data.n === k + 1),
    `every publication once, in order\n${client.explain()}`,
  );
});

test('stress: repeated reconnects (forced and abrupt) under concurrent publishing lose nothing', { timeout: 30000 }, async () => {
  const channel = uniq('big:stress');
  const clients = [];
  for (let k = 0; k < 5; k++) {
    const c = await setup([channel], { minReconnectDelay: 50, maxReconnectDelay: 250 });
    c.recoveries = [];
    c.subs[0].on('subscribed', (ctx) => c.recoveries.push(ctx));
    clients.push(c);
  }
  let stop = false;
  let published = 0;
  const publisher = (async () => {
    while (!stop) {
      // Bursts of concurrent publishes: offsets are assigned in whatever order the
      // requests land, and delivery must still be in offset order.
      await Promise.all(Array.from({ length: 5 }, () => node.publish(channel, { p: ++published })));
      await sleep(15);
    }
  })();
  for (let round = 0; round < 6; round++) {
    await sleep(250);
    const victim = clients[round % clients.length];
    if (round % 2 === 0) {
      await node.api('disconnect', { user: victim.user, disconnect: { code: 3011, reason: 'force reconnect' } });
    } else {
      victim.client.sockets.at(-1).terminate();
    }
  }
  await sleep(300);
  stop = true;
  await publisher;
  const { offset: top } = await node.api('history', { channel, limit: 0 });
  assert.equal(top, published);

  for (const c of clients) {
    await waitUntil(() => c.subs[0].pubs.length >= top && c.client.state === 'connected', {
      timeout: 8000,
      what: `${top} publications`,
      explain: c.client.explain,
    });
  }
  await sleep(150);
  for (const c of clients) {
    const offsets = c.subs[0].pubs.map((p) => p.offset);
    const firstBad = offsets.findIndex((o, k) => o !== k + 1);
    assert.equal(firstBad, -1, `offset ${offsets[firstBad]} at position ${firstBad + 1}\n${c.client.explain()}`);
    assert.equal(offsets.length, top, c.client.explain());
    for (const ctx of c.recoveries) {
      assert.equal(ctx.recovered, true, `a resubscribe was not recovered: ${JSON.stringify(ctx)}\n${c.client.explain()}`);
    }
  }
  assert.ok(clients.some((c) => c.recoveries.length >= 1), 'some client reconnected');
});
