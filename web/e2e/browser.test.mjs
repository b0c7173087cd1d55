// @herald/web end to end: real Chromium tabs, a real herald node, a proxy the test controls.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, offsets, openPage, range, record, sleep, startStack, waitPubs, waitStatus, waitUntil } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A stack and a fresh browser context per test; both closed at the end. */
async function setup(t, opts) {
  const stack = await startStack(opts);
  const context = await browser.newContext();
  t.after(async () => {
    await context.close();
    await stack.close();
  });
  return { stack, context };
}

const numClients = async (node) => (await node.api('info')).nodes[0].num_clients;

/** Publishes `n` messages to `channel` through the HTTP API, one after another. */
async function publishMany(node, channel, n, tag = 'p') {
  for (let i = 1; i <= n; i++) await node.publish(channel, { tag, i, sent: Date.now() });
}

for (const share of ['worker', 'leader']) {
  describe(`sharing by ${share}`, () => {
    test('three tabs share one connection and each gets every publication once, in order', async (t) => {
      const { stack, context } = await setup(t);
      const pages = [];
      for (let i = 0; i < 3; i++) pages.push(await openPage(context, stack, { share, subscribe: ['news'] }));
      for (const p of pages) await waitStatus(p, { state: 'connected', tabs: 3 });
      await waitUntil(async () => (await record(pages[2])).subscribed.length > 0, { what: 'subscribed' });
      assert.equal(await numClients(stack.node), 1, 'one connection for three tabs');
      assert.equal(stack.proxy.connections, 1, 'one socket opened through the proxy');
      assert.equal((await pages[0].evaluate(() => window.t.status())).mode, share);
      await publishMany(stack.node, 'news', 30);
      for (const p of pages) {
        await waitPubs(p, 'news', 30);
        assert.deepEqual(await offsets(p, 'news'), range(1, 30));
      }
      // One tab leaving keeps the subscription for the others.
      await pages[0].evaluate(() => window.t.unsubscribe('news'));
      await sleep(1500);
      await publishMany(stack.node, 'news', 5);
      for (const p of pages.slice(1)) {
        await waitPubs(p, 'news', 35);
        assert.deepEqual(await offsets(p, 'news'), range(1, 35));
      }
      assert.equal((await offsets(pages[0], 'news')).length, 30, 'the tab that left gets nothing more');
    });
  });
}

test('closing the leader tab hands the connection over with no gap and no duplicate', async (t) => {
  const { stack, context } = await setup(t);
  const pages = [];
  for (let i = 0; i < 3; i++) pages.push(await openPage(context, stack, { share: 'leader', subscribe: ['tasks'] }));
  for (const p of pages) await waitStatus(p, { state: 'connected', tabs: 3 });
  const leaders = [];
  for (const p of pages) if ((await p.evaluate(() => window.t.status())).isLeader) leaders.push(p);
  assert.equal(leaders.length, 1, 'exactly one leader');
  const leader = leaders[0];
  const others = pages.filter((p) => p !== leader);
  await waitUntil(async () => (await record(others[1])).subscribed.length > 0, { what: 'subscribed' });

  // Publish steadily while the leader closes.
  let publishing = true;
  let sent = 0;
  const publisher = (async () => {
    while (publishing) {
      await stack.node.publish('tasks', { i: ++sent });
      await sleep(20);
    }
  })();
  await sleep(300);
  const closedAt = Date.now();
  await leader.close();
  await Promise.race(others.map((p) => waitStatus(p, { isLeader: true }, 5000)));
  await sleep(500);
  publishing = false;
  await publisher;
  for (const p of others) {
    await waitPubs(p, 'tasks', sent, 5000);
    assert.deepEqual(await offsets(p, 'tasks'), range(1, sent), 'every publication once, in order');
    const st = await p.evaluate(() => window.t.status());
    assert.equal(st.tabs, 2);
    assert.equal(st.state, 'connected');
  }
  const newLeaders = [];
  for (const p of others) if ((await p.evaluate(() => window.t.status())).isLeader) newLeaders.push(p);
  assert.equal(newLeaders.length, 1, 'one new leader');
  assert.ok(Date.now() - closedAt < 5000);
  await waitUntil(async () => (await numClients(stack.node)) === 1, { what: 'one client on the node after the handover' });
});

test('offline: every tab shows it; items enqueued in two tabs are published once each, in order', async (t) => {
  const { stack, context } = await setup(t);
  const a = await openPage(context, stack, { share: 'worker', subscribe: ['orders'] });
  const b = await openPage(context, stack, { share: 'worker', subscribe: ['orders'] });
  for (const p of [a, b]) await waitStatus(p, { state: 'connected', tabs: 2 });

  await context.setOffline(true);
  stack.proxy.block(true); // setOffline does not cut a SharedWorker's socket: cut it at the proxy
  for (const p of [a, b]) await waitStatus(p, { state: 'offline' });
  for (let i = 1; i <= 5; i++) {
    const ra = await a.evaluate((i) => window.t.enqueue('orders', { tab: 'a', i }), i);
    const rb = await b.evaluate((i) => window.t.enqueue('orders', { tab: 'b', i }), i);
    assert.ok(ra.ok && rb.ok, 'enqueued');
  }
  await a.waitForFunction(() => window.t.outbox().pending === 10);
  await b.waitForFunction(() => window.t.outbox().pending === 10);
  assert.equal((await stack.node.api('history', { channel: 'orders', limit: 100 })).publications?.length ?? 0, 0);

  await context.setOffline(false);
  stack.proxy.block(false);
  for (const p of [a, b]) await waitStatus(p, { state: 'connected' }, 15_000);
  for (const p of [a, b]) await p.waitForFunction(() => window.t.outbox().pending === 0, null, { timeout: 15_000 });
  const pubs = (await stack.node.api('history', { channel: 'orders', limit: 100 })).publications ?? [];
  const sent = pubs.map((p) => `${p.data.tab}${p.data.i}`);
  assert.equal(sent.length, 10, `each item once: ${sent}`);
  assert.deepEqual(sent.filter((s) => s[0] === 'a'), ['a1', 'a2', 'a3', 'a4', 'a5']);
  assert.deepEqual(sent.filter((s) => s[0] === 'b'), ['b1', 'b2', 'b3', 'b4', 'b5']);
  // And both tabs saw them live, once each.
  for (const p of [a, b]) {
    await waitPubs(p, 'orders', 10);
    assert.deepEqual(await offsets(p, 'orders'), range(1, 10));
  }
});

test('an outbox item whose reply is lost is applied once when resent', async (t) => {
  const { stack, context } = await setup(t);
  // Client publishes in the default namespace are for subscribers.
  const a = await openPage(context, stack, { share: 'worker', subscribe: ['pay'] });
  await waitStatus(a, { state: 'connected' });
  await waitUntil(async () => (await record(a)).subscribed.length > 0, { what: 'subscribed' });
  // The same key twice, as a resend after a lost reply would: one publication.
  const r1 = await a.evaluate(() => window.t.publish('pay', { n: 1 }, 'k-1'));
  const r2 = await a.evaluate(() => window.t.publish('pay', { n: 1 }, 'k-1'));
  assert.ok(r1.ok && r2.ok, JSON.stringify([r1, r2]));
  assert.deepEqual(r1.position, r2.position, 'the first result, returned again');
  const pubs = (await stack.node.api('history', { channel: 'pay', limit: 10 })).publications ?? [];
  assert.equal(pubs.length, 1);
});

test('a node restart: reconnecting, connected, then resync for the lost history', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'worker', subscribe: ['kpi'] });
  await waitStatus(p, { state: 'connected' });
  await waitUntil(async () => (await record(p)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'kpi', 3);
  await waitPubs(p, 'kpi', 3);
  await stack.restartNode({ downMs: 500 });
  // The status may pass through reconnecting before the new node is up: read its history.
  await waitUntil(async () => (await record(p)).statuses.some((s) => s.state === 'reconnecting'), { what: 'reconnecting' });
  await waitStatus(p, { state: 'connected' }, 15_000);
  await waitUntil(async () => (await record(p)).resyncs.length > 0, { what: 'resync', timeout: 10_000 });
  const { resyncs, statuses } = await record(p);
  assert.equal(resyncs.length, 1);
  assert.equal(resyncs[0].channel, 'kpi');
  assert.equal(resyncs[0].reason, 'epoch-changed');
  assert.equal(resyncs[0].from.offset, 3);
  const states = statuses.map((s) => s.state);
  assert.ok(states.indexOf('reconnecting') < states.lastIndexOf('connected'), states.join(','));
  // Live publications resume after the resync.
  await stack.node.publish('kpi', { after: true });
  await waitPubs(p, 'kpi', 4);
  assert.deepEqual((await record(p)).pubs.kpi.at(-1).data, { after: true });
});

test('a reload and a new tab resume from the stored position with recovered: true', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'worker', subscribe: ['board'] });
  await waitStatus(p, { state: 'connected' });
  await waitUntil(async () => (await record(p)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'board', 5);
  await waitPubs(p, 'board', 5);
  await sleep(400); // positions are written in batches every 100 ms

  await p.reload();
  await p.waitForFunction(() => window.t !== undefined);
  await waitStatus(p, { state: 'connected' });
  await waitUntil(async () => (await record(p)).subscribed.length > 0, { what: 'subscribed after reload' });
  let rec = await record(p);
  assert.equal(rec.subscribed[0].wasRecovering, true);
  assert.equal(rec.subscribed[0].recovered, true);
  assert.equal(rec.subscribed[0].position.offset, 5);
  await publishMany(stack.node, 'board', 2);
  await waitPubs(p, 'board', 2);
  assert.deepEqual(await offsets(p, 'board'), [6, 7]);

  // The only tab closes; publications go on; a new tab catches up from storage.
  await sleep(400);
  await p.close();
  await publishMany(stack.node, 'board', 3);
  const q = await openPage(context, stack, { share: 'worker', subscribe: ['board'] });
  await waitPubs(q, 'board', 3);
  rec = await record(q);
  assert.equal(rec.subscribed[0].recovered, true);
  assert.deepEqual(await offsets(q, 'board'), [8, 9, 10]);
  assert.equal(rec.resyncs.length, 0);
});

test('a refused token ends in failed, with no retries', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'off', badToken: true });
  await waitStatus(p, { state: 'failed' });
  const st = await p.evaluate(() => window.t.status());
  assert.equal(st.reason.code, 3500);
  const { errors } = await record(p);
  assert.ok(errors.some((e) => e.kind === 'auth' && e.code === 3500), JSON.stringify(errors));
  await sleep(3000);
  assert.equal(stack.proxy.connections, 1, 'one upgrade request, no retries');
  assert.equal((await p.evaluate(() => window.t.status())).state, 'failed');
});

test('a shared worker that cannot load falls back to a leader tab, and says so', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'worker', subscribe: ['news'], options: { workerUrl: '/app/missing-worker.js' } });
  await waitStatus(p, { state: 'connected', mode: 'leader', isLeader: true });
  const { errors } = await record(p);
  assert.ok(errors.some((e) => e.kind === 'share'), JSON.stringify(errors));
  await waitUntil(async () => (await record(p)).subscribed.length > 0, { what: 'subscribed' });
  await stack.node.publish('news', { x: 1 });
  await waitPubs(p, 'news', 1);
});

test('an expiring token is refreshed through a tab while the worker holds the connection', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'worker', subscribe: ['news'], tokenTtl: 3 });
  await waitStatus(p, { state: 'connected' });
  const before = stack.tokenRequests;
  await sleep(6000); // past two expiries
  assert.ok(stack.tokenRequests >= before + 1, `token requests: ${before} → ${stack.tokenRequests}`);
  const st = await p.evaluate(() => window.t.status());
  assert.equal(st.state, 'connected');
  assert.equal(stack.proxy.connections, 1, 'refreshed in place, never reconnected');
  await stack.node.publish('news', { x: 1 });
  await waitPubs(p, 'news', 1);
});

test('a throwing handler is reported and never stops delivery to other handlers or channels', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'worker', subscribe: ['a', 'b'] });
  await waitStatus(p, { state: 'connected' });
  await p.evaluate(() => window.t.addThrowingHandler('a'));
  await waitUntil(async () => (await record(p)).subscribed.length >= 2, { what: 'subscribed' });
  for (let i = 0; i < 3; i++) {
    await stack.node.publish('a', { i });
    await stack.node.publish('b', { i });
  }
  await waitPubs(p, 'a', 3);
  await waitPubs(p, 'b', 3);
  const { errors } = await record(p);
  assert.equal(errors.filter((e) => e.kind === 'handler').length, 3);
  assert.equal((await p.evaluate(() => window.t.status())).state, 'connected');
});

test('outbox bounds and refusals: full is an error event, a refused item waits in failed', async (t) => {
  const { stack, context } = await setup(t);
  const p = await openPage(context, stack, { share: 'worker', options: { outbox: { maxItems: 2 } } });
  await waitStatus(p, { state: 'connected' });
  // `locked` allows clients nothing: the server refuses these for good (103).
  const r1 = await p.evaluate(() => window.t.enqueue('locked:x', { n: 1 }));
  assert.ok(r1.ok);
  await p.waitForFunction(() => window.t.outbox().failed === 1, null, { timeout: 10_000 });
  const failed = await p.evaluate(() => window.t.failed());
  assert.equal(failed.length, 1);
  assert.equal(failed[0].error.code, 103);
  const r2 = await p.evaluate(() => window.t.enqueue('locked:x', { n: 2 }, { ttlMs: 60_000 }));
  await p.waitForFunction(() => window.t.outbox().failed === 2, null, { timeout: 10_000 });
  assert.ok(r2.ok);
  // Two items held (both failed): a third does not fit, and nothing is dropped.
  const r3 = await p.evaluate(() => window.t.enqueue('news', { n: 3 }));
  assert.equal(r3.ok, false);
  assert.equal(r3.error.kind, 'outbox-full');
  const { errors } = await record(p);
  assert.ok(errors.some((e) => e.kind === 'outbox-full'));
  assert.ok(errors.filter((e) => e.kind === 'outbox-failed').length >= 2);
  assert.equal(await p.evaluate((id) => window.t.discard(id), failed[0].id), true);
  await p.waitForFunction(() => window.t.outbox().failed === 1);
});

test('close() lets go of the shared connection: other tabs see one tab fewer', async (t) => {
  const { stack, context } = await setup(t);
  const a = await openPage(context, stack, { share: 'worker', subscribe: ['news'] });
  const b = await openPage(context, stack, { share: 'worker', subscribe: ['news'] });
  await waitStatus(b, { state: 'connected', tabs: 2 });
  await a.evaluate(() => window.t.close());
  await waitStatus(b, { tabs: 1 });
  await stack.node.publish('news', { x: 1 });
  await waitPubs(b, 'news', 1);
  await sleep(300);
  assert.equal((await offsets(a, 'news')).length, 0, 'a closed client delivers nothing');
});

test('a hung leader is replaced by a follower, with no gap and no duplicate', async (t) => {
  const { stack, context } = await setup(t);
  const pages = [];
  for (let i = 0; i < 2; i++) pages.push(await openPage(context, stack, { share: 'leader', subscribe: ['ops'] }));
  for (const p of pages) await waitStatus(p, { state: 'connected', tabs: 2 });
  let leader = pages[0];
  if (!(await leader.evaluate(() => window.t.status())).isLeader) leader = pages[1];
  const follower = pages.find((p) => p !== leader);
  await waitUntil(async () => (await record(follower)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'ops', 3);
  await waitPubs(follower, 'ops', 3);

  // Hang the leader's main thread (as a frozen or stuck tab would be): no timers, no
  // messages, its lock still held. (CDP's frozen lifecycle state only applies to hidden pages.)
  const hung = leader.evaluate(() => {
    const until = Date.now() + 16_000;
    while (Date.now() < until);
  });
  await sleep(200);
  await publishMany(stack.node, 'ops', 3);
  // The follower hears nothing for ~10 s, takes the lock and catches up from its position.
  await waitStatus(follower, { isLeader: true, state: 'connected' }, 25_000);
  await publishMany(stack.node, 'ops', 2);
  await waitPubs(follower, 'ops', 8);
  assert.deepEqual(await offsets(follower, 'ops'), range(1, 8));

  // The old leader wakes up, finds its lock gone, and follows.
  await hung;
  await waitStatus(leader, { isLeader: false, state: 'connected', tabs: 2 }, 10_000);
  await publishMany(stack.node, 'ops', 1);
  await waitPubs(leader, 'ops', 9);
  assert.deepEqual(await offsets(leader, 'ops'), range(1, 9));
  await waitUntil(async () => (await numClients(stack.node)) === 1, { what: 'one client on the node', timeout: 10_000 });
});

test('a tab that navigates away and back resumes from its own position while another tab kept going', async (t) => {
  const { stack, context } = await setup(t);
  const a = await openPage(context, stack, { share: 'worker', subscribe: ['feed'] });
  const b = await openPage(context, stack, { share: 'worker', subscribe: ['feed'] });
  for (const p of [a, b]) await waitStatus(p, { state: 'connected', tabs: 2 });
  await waitUntil(async () => (await record(a)).subscribed.length > 0 && (await record(b)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'feed', 4);
  for (const p of [a, b]) await waitPubs(p, 'feed', 4);
  const url = a.url();
  await a.goto('about:blank');
  await publishMany(stack.node, 'feed', 3); // b receives these; a is away
  await waitPubs(b, 'feed', 7);
  await a.goto(url);
  await a.waitForFunction(() => window.t !== undefined);
  await waitPubs(a, 'feed', 3);
  const rec = await record(a);
  assert.deepEqual(await offsets(a, 'feed'), [5, 6, 7], 'exactly what this tab missed');
  assert.equal(rec.subscribed[0].recovered, true);
  assert.equal(rec.resyncs.length, 0);
});

test('a shared worker that dies is started again; tabs resume from their positions', async (t) => {
  const { stack, context } = await setup(t);
  const a = await openPage(context, stack, { share: 'worker', subscribe: ['alerts'] });
  const b = await openPage(context, stack, { share: 'worker', subscribe: ['alerts'] });
  for (const p of [a, b]) await waitStatus(p, { state: 'connected', tabs: 2 });
  await waitUntil(async () => (await record(a)).subscribed.length > 0 && (await record(b)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'alerts', 3);
  for (const p of [a, b]) await waitPubs(p, 'alerts', 3);

  const cdp = await browser.newBrowserCDPSession();
  const { targetInfos } = await cdp.send('Target.getTargets');
  const worker = targetInfos.find((i) => i.type === 'shared_worker');
  assert.ok(worker, `a shared worker target: ${JSON.stringify(targetInfos.map((i) => i.type))}`);
  await cdp.send('Target.closeTarget', { targetId: worker.targetId });
  await publishMany(stack.node, 'alerts', 3);
  for (const p of [a, b]) {
    await waitPubs(p, 'alerts', 6, 15_000);
    assert.deepEqual(await offsets(p, 'alerts'), range(1, 6));
  }
  await waitStatus(a, { state: 'connected', tabs: 2, mode: 'worker' });
  await waitUntil(async () => (await numClients(stack.node)) === 1, { what: 'one client on the node', timeout: 10_000 });
});

test('private channels: a subscription token from the app admits alice, bob gets a permission error', async (t) => {
  const { stack, context } = await setup(t);
  const alice = await openPage(context, stack, { share: 'worker', subscribe: ['$vip'] });
  const other = await browser.newContext();
  t.after(() => other.close());
  const bob = await openPage(other, stack, { share: 'worker', user: 'bob', subscribe: ['$vip'] });
  for (const p of [alice, bob]) await waitStatus(p, { state: 'connected' });
  await waitUntil(async () => (await record(alice)).subscribed.length > 0, { what: 'alice subscribed' });
  await waitUntil(async () => (await record(bob)).errors.some((e) => e.channel === '$vip'), { what: 'bob refused' });
  await stack.node.publish('$vip', { secret: 1 });
  await waitPubs(alice, '$vip', 1);
  await sleep(300);
  assert.equal((await offsets(bob, '$vip')).length, 0, 'bob never receives a private publication');
});
