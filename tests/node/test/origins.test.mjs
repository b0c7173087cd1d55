// Excluding one's own publications by an origin id, with the real npm SDK: a tab names
// itself with the `x-herald-origin` connect header (the SDK's `headers` option), which
// Herald scopes to the user (user 42 choosing `tab-1` gets `42/tab-1`), or the token
// gives the origin in its `origin` claim. A connection never receives publications
// carrying its own origin, live or recovered, while everyone else does; the origin is
// never shown to clients; an invalid chosen origin closes the connection with 3501.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, newSub, closeClients, nextEvent, waitUntil, uniq } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald();
});
afterEach(closeClients);
after(() => node?.stop());

const ns = (sub) => sub.pubs.map((p) => p.data.n);
const offsets = (sub) => sub.pubs.map((p) => p.offset);

/** An SDK client of `user` naming itself `chosen` in its connect headers (none: no header). */
function tab(user, chosen, { header = 'x-herald-origin', ...opts } = {}) {
  return newClient(node, { user, ...(chosen === undefined ? {} : { headers: { [header]: chosen } }), ...opts });
}

/** Connects every client and subscribes each to `channel`; resolves to their subscriptions. */
async function subscribeAll(clients, channel) {
  const subs = clients.map((c) => newSub(c, channel));
  const ready = subs.map((s, k) => nextEvent(s, 'subscribed', { explain: clients[k].explain }));
  for (const [k, c] of clients.entries()) {
    c.connect();
    subs[k].subscribe();
  }
  await Promise.all(ready);
  return subs;
}

/** Publishes `{n}` through the server API, with `origin` when given. */
const publish = (channel, n, origin) => node.publish(channel, { n }, origin === undefined ? {} : { origin });

/** Waits until each subscription has received `{n: last}` (the sentinel: what was left out came before it). */
async function untilSeen(subs, clients, last) {
  for (const [k, s] of subs.entries()) {
    await waitUntil(() => ns(s).includes(last), {
      what: `publication n=${last} on client ${k}`,
      explain: () => `${clients[k].explain()}\nserver log:\n${node.logs(30)}`,
    });
  }
}

/**
 * No origin anywhere a client can see it: not in the frames the server sent, not in
 * the SDK's context objects (`ctxs`), not as any of the `secrets` (the origin ids).
 */
function assertOriginHidden(clients, ctxs, secrets) {
  // A key named origin, or any of the ids (channel names here say 'echo', not 'origin').
  const hidden = new RegExp(['"origin"', ...secrets.map((s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))].join('|'), 'i');
  for (const c of clients) {
    const frames = c.transcript.entries.filter((e) => e.kind === '<');
    assert.ok(frames.length > 0, c.explain());
    for (const f of frames) assert.doesNotMatch(f.text, hidden, `a frame the server sent shows the origin\n${c.explain()}`);
  }
  for (const ctx of ctxs) {
    assert.ok(!('origin' in ctx), JSON.stringify(ctx));
    assert.doesNotMatch(JSON.stringify(ctx), hidden);
  }
}

test('two tabs of one user each get exactly the publications the other made', { timeout: 20000 }, async () => {
  const channel = uniq('echo'); // the default namespace: history, publish for subscribers
  // The header name is case-insensitive: tab 2 writes it capitalized.
  const one = tab('42', 'tab-1');
  const two = tab('42', 'tab-2', { header: 'X-Herald-Origin' });
  const [s1, s2] = await subscribeAll([one, two], channel);

  await publish(channel, 1, '42/tab-1'); // the backend marks what tab 1 did
  await publish(channel, 2); // nobody's
  await publish(channel, 3, '42/tab-2');
  await s1.publish({ n: 4 }); // tab 1 itself: carries 42/tab-1
  await s2.publish({ n: 5 }); // tab 2 itself: carries 42/tab-2
  await publish(channel, 6); // the sentinel
  await untilSeen([s1, s2], [one, two], 6);

  assert.deepEqual(ns(s1), [2, 3, 5, 6], `tab 1 must get all but 1 and 4\n${one.explain()}`);
  assert.deepEqual(offsets(s1), [2, 3, 5, 6], one.explain());
  assert.deepEqual(ns(s2), [1, 2, 4, 6], `tab 2 must get all but 3 and 5\n${two.explain()}`);
  assert.deepEqual(offsets(s2), [1, 2, 4, 6], two.explain());
  // A client publication still names its publisher (user 42), just not its origin.
  assert.equal(s2.pubs[2].info?.user, '42', two.explain());
  assertOriginHidden([one, two], [...s1.pubs, ...s2.pubs], ['tab-1', 'tab-2']);
});

test('coming back, the recovery leaves out its own publications and reaches the top', { timeout: 20000 }, async () => {
  const channel = uniq('echo');
  const one = tab('42', 'tab-1');
  const two = tab('42', 'tab-2');
  const [s1, s2] = await subscribeAll([one, two], channel);
  const subscribedCtxs = [];
  s1.on('subscribed', (ctx) => subscribedCtxs.push(ctx));

  await publish(channel, 1, '42/tab-1');
  await publish(channel, 2);
  await untilSeen([s1], [one], 2);
  assert.deepEqual(ns(s1), [2], one.explain());

  // Away: 3 and 6 are its own (6 at the top of the stream), 4 nobody's, 5 tab 2's.
  one.disconnect();
  await publish(channel, 3, '42/tab-1');
  await publish(channel, 4);
  await s2.publish({ n: 5 });
  await publish(channel, 6, '42/tab-1');

  const again = nextEvent(s1, 'subscribed', { explain: one.explain });
  one.connect();
  const ctx = await again;
  assert.equal(ctx.wasRecovering, true, one.explain());
  assert.equal(ctx.recovered, true, one.explain());
  // The position moved past the own publication at the top.
  assert.equal(ctx.streamPosition.offset, 6, one.explain());

  await publish(channel, 7); // live again after the recovery
  await untilSeen([s1, s2], [one, two], 7);
  assert.deepEqual(ns(s1), [2, 4, 5, 7], `only the others' publications, once each\n${one.explain()}`);
  const got = offsets(s1);
  assert.deepEqual(got, [2, 4, 5, 7], one.explain());
  for (let k = 1; k < got.length; k++) assert.ok(got[k] > got[k - 1], `offsets must increase: ${got}`);
  // Tab 2, never away, got all but its own 5.
  assert.deepEqual(ns(s2), [1, 2, 3, 4, 6, 7], two.explain());
  assertOriginHidden([one, two], [...s1.pubs, ...s2.pubs, ...subscribedCtxs], ['tab-1', 'tab-2']);
});

test("a token's origin claim keeps that connection's own publications from it", { timeout: 20000 }, async () => {
  const channel = uniq('echo');
  const user = uniq('u');
  const desk = newClient(node, { user, claims: { origin: 'desk-7' } });
  const plain = tab(user); // the same user, no origin: it gets everything
  const [sd, sp] = await subscribeAll([desk, plain], channel);

  await publish(channel, 1, 'desk-7'); // the backend marks what the desk did
  await publish(channel, 2, `${user}/desk-7`); // a token's origin is used as is, not user-scoped
  await sd.publish({ n: 3 }); // the desk itself: carries desk-7
  await sp.publish({ n: 4 }); // no origin: carries its user id, which is not desk-7
  await publish(channel, 5);
  await untilSeen([sd, sp], [desk, plain], 5);

  assert.deepEqual(ns(sd), [2, 4, 5], `the desk must not get 1 and 3\n${desk.explain()}`);
  assert.deepEqual(offsets(sd), [2, 4, 5], desk.explain());
  assert.deepEqual(ns(sp), [1, 2, 3, 4, 5], plain.explain());
  assertOriginHidden([desk, plain], [...sd.pubs, ...sp.pubs], ['desk-7']);
});

test('an invalid chosen origin is refused with 3501 and the SDK stays disconnected', { timeout: 20000 }, async () => {
  // '/' (it would reach another scope), a space, too long (65 bytes), not ASCII.
  for (const chosen of ['has/slash', 'has space', 'x'.repeat(65), 'tab-ü']) {
    const client = tab(uniq('u'), chosen);
    const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
    client.connect();
    const ctx = await disconnected;
    assert.equal(ctx.code, 3501, `${JSON.stringify(chosen)}\n${client.explain()}`);
    // 'disconnected', not 'connecting': the SDK does not try again.
    assert.equal(client.state, 'disconnected', client.explain());
    assert.equal(client.sockets.length, 1, client.explain());
    client.disconnect();
  }
  // The longest allowed one (64 bytes) connects.
  const ok = tab(uniq('u'), 'x'.repeat(64));
  const connected = nextEvent(ok, 'connected', { explain: ok.explain });
  ok.connect();
  await connected;
});
