// @herald/web end to end: fallback from WebSocket to HTTP-streaming and SSE when the
// WebSocket is refused or upgrades and then stays silent, in real Chromium against a real
// node. Prints the measured fallback times.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { launchBrowser, offsets, openPage, range, record, sleep, startStack, waitPubs, waitStatus, waitUntil } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/**
 * A TCP front for the node's proxy that plays a broken middlebox for some requests:
 * WebSocket upgrades are refused (`ws: 'refuse'`, HTTP 403) or accepted and then never
 * answered (`ws: 'silent'`); requests whose path contains one of `refusePaths` get a 502
 * without CORS headers. Everything else passes through.
 */
async function startFront(targetPort, { ws = 'pass', refusePaths = [] } = {}) {
  const sockets = new Set();
  const front = { upgrades: 0, refused: 0, port: 0 };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const text = head.toString('latin1');
      if (!text.includes('\r\n\r\n') && head.length < 16_384) return;
      client.off('data', onData);
      const path = text.split(' ')[1] ?? '';
      const upgrade = /^upgrade:\s*websocket/im.test(text);
      if (upgrade) front.upgrades++;
      if (upgrade && ws === 'refuse') {
        front.refused++;
        return void client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      }
      if (upgrade && ws === 'silent') {
        const key = /^sec-websocket-key:\s*(\S+)/im.exec(text)?.[1] ?? '';
        const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        // Upgraded, then nothing: frames from the page go nowhere, none come back.
        return void client.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      }
      if (refusePaths.some((p) => path.includes(p))) {
        front.refused++;
        return void client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      }
      const upstream = net.connect(targetPort, '127.0.0.1');
      sockets.add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
      };
      upstream.on('error', drop).on('close', drop);
      client.on('close', drop);
      upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
    };
    client.on('data', onData);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  front.port = server.address().port;
  front.wsUrl = `ws://127.0.0.1:${front.port}/connection/websocket`;
  front.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  };
  return front;
}

/** A stack, a front in front of it, and a browser context; all closed at the end. */
async function setup(t, frontOpts) {
  const stack = await startStack();
  const front = await startFront(stack.proxy.port, frontOpts);
  const context = await browser.newContext();
  t.after(async () => {
    await context.close();
    await front.close();
    await stack.close();
  });
  // Pages connect through the front; derived endpoints (`auto`) point there too.
  return { stack, front, context, via: { ...stack, wsUrl: front.wsUrl } };
}

async function publishMany(node, channel, n, tag = 'p') {
  for (let i = 1; i <= n; i++) await node.publish(channel, { tag, i });
}

const status = (page) => page.evaluate(() => window.t.status());

for (const share of ['off', 'worker']) {
  test(`share ${share}: a refused WebSocket upgrade falls back to HTTP-streaming and keeps delivering`, async (t) => {
    const { stack, front, context, via } = await setup(t, { ws: 'refuse' });
    const page = await openPage(context, via, { share, subscribe: ['news'], options: { transports: 'auto' } });
    await waitStatus(page, { state: 'connected', transport: 'http_stream' });
    assert.equal((await status(page)).mode, share);
    assert.ok(front.refused >= 1, 'the upgrade was refused');
    await waitUntil(async () => (await record(page)).subscribed.length > 0, { what: 'subscribed' });
    await publishMany(stack.node, 'news', 20);
    await waitPubs(page, 'news', 20);
    assert.deepEqual(await offsets(page, 'news'), range(1, 20));
    const rec = await record(page);
    console.log(`# share ${share}, refused WebSocket → http_stream: connected ${rec.firstConnectedMs} ms after creation`);
    // A refusal is a failure to open, not silence: nothing is passed over for long.
    assert.deepEqual(rec.fallbacks, []);
  });
}

test('WebSocket refused and HTTP-streaming blocked: SSE carries the connection, commands and all', async (t) => {
  const { stack, context, via } = await setup(t, { ws: 'refuse', refusePaths: ['/connection/http_stream'] });
  const page = await openPage(context, via, { share: 'off', subscribe: ['news'], options: { transports: 'auto' } });
  await waitStatus(page, { state: 'connected', transport: 'sse' }, 15_000);
  await waitUntil(async () => (await record(page)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'news', 10);
  await waitPubs(page, 'news', 10);
  assert.deepEqual(await offsets(page, 'news'), range(1, 10));
  // A client publish goes over /emulation too.
  const r = await page.evaluate(() => window.t.publish('news', { from: 'page' }, 'sse-key-1'));
  assert.equal(r.ok, true, JSON.stringify(r));
  await waitPubs(page, 'news', 11);
  console.log(`# refused WebSocket and HTTP-streaming → sse: connected ${(await record(page)).firstConnectedMs} ms after creation`);
});

for (const share of ['off', 'leader']) {
  test(`share ${share}: a WebSocket that opens and stays silent (Playwright routeWebSocket) falls back in time and keeps delivering`, async (t) => {
    const { stack, front, context, via } = await setup(t);
    // Accepted in the browser, never connected to the server, never answered.
    let sockets = 0;
    await context.routeWebSocket(/\/connection\/websocket/, () => {
      sockets++;
    });
    const silentMs = 1500;
    const page = await openPage(context, via, {
      share,
      subscribe: ['news'],
      options: { transports: 'auto', silentTransportTimeoutMs: silentMs },
    });
    await waitStatus(page, { state: 'connected', transport: 'http_stream' }, 10_000);
    let rec = await record(page);
    assert.equal(rec.fallbacks.length, 1, JSON.stringify(rec.fallbacks));
    const fb = rec.fallbacks[0];
    assert.equal(fb.from, 'websocket');
    assert.equal(fb.to, 'http_stream');
    assert.equal(fb.reason, 'silent');
    assert.ok(fb.waitedMs >= silentMs && fb.waitedMs < silentMs + 1000, `waited ${fb.waitedMs} ms`);
    assert.ok(rec.firstConnectedMs < silentMs + 2000, `connected after ${rec.firstConnectedMs} ms`);
    console.log(`# share ${share}, silent WebSocket → http_stream: silence detected after ${fb.waitedMs} ms, connected ${rec.firstConnectedMs} ms after creation (silentTransportTimeoutMs ${silentMs})`);
    const st = await status(page);
    assert.deepEqual(st.skippedTransports.map((s) => s.transport), ['websocket']);
    assert.equal(sockets, 1);
    assert.equal(front.upgrades, 0, 'the silent socket never reached the network');

    await waitUntil(async () => (await record(page)).subscribed.length > 0, { what: 'subscribed' });
    await publishMany(stack.node, 'news', 10);
    await waitPubs(page, 'news', 10);

    // The outbox sends over the fallback transport.
    const queued = await page.evaluate(() => window.t.enqueue('news', { from: 'outbox' }));
    assert.equal(queued.ok, true);
    await page.waitForFunction(() => window.t.outbox().pending === 0, null, { timeout: 10_000 });
    await waitPubs(page, 'news', 11);

    // The connection drops; the reconnect stays on HTTP-streaming (the silent WebSocket is
    // remembered) and recovers what was published meanwhile.
    stack.proxy.cut();
    await publishMany(stack.node, 'news', 5, 'gap');
    await waitUntil(async () => (await record(page)).statuses.filter((s) => s.state === 'connected').length >= 2, { what: 'reconnected', timeout: 10_000 });
    await waitPubs(page, 'news', 16);
    await publishMany(stack.node, 'news', 2, 'after');
    await waitPubs(page, 'news', 18);
    assert.deepEqual(await offsets(page, 'news'), range(1, 18));
    rec = await record(page);
    assert.equal(sockets, 1, 'the silent WebSocket was not tried again');
    assert.equal(rec.fallbacks.length, 1);
    assert.equal((await status(page)).transport, 'http_stream');
  });
}

test('share worker: a silent WebSocket is detected inside the SharedWorker, and every tab keeps delivering', async (t) => {
  const { stack, front, context, via } = await setup(t, { ws: 'silent' });
  const silentMs = 1500;
  const options = { transports: 'auto', silentTransportTimeoutMs: silentMs };
  const a = await openPage(context, via, { share: 'worker', subscribe: ['news'], options });
  await waitStatus(a, { state: 'connected', transport: 'http_stream', mode: 'worker' }, 10_000);
  const b = await openPage(context, via, { share: 'worker', subscribe: ['news'], options });
  await waitStatus(b, { state: 'connected', transport: 'http_stream', tabs: 2 });
  const rec = await record(a);
  assert.equal(rec.fallbacks.length, 1);
  assert.ok(rec.fallbacks[0].waitedMs >= silentMs && rec.fallbacks[0].waitedMs < silentMs + 1000, `waited ${rec.fallbacks[0].waitedMs} ms`);
  console.log(`# share worker, silent WebSocket (a middlebox that upgrades) → http_stream: silence detected after ${rec.fallbacks[0].waitedMs} ms, connected ${rec.firstConnectedMs} ms after creation`);
  assert.equal(front.upgrades, 1, 'one WebSocket upgrade, then none');
  for (const p of [a, b]) await waitUntil(async () => (await record(p)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'news', 10);
  for (const p of [a, b]) {
    await waitPubs(p, 'news', 10);
    assert.deepEqual(await offsets(p, 'news'), range(1, 10));
  }
  await sleep(200);
  assert.equal(front.upgrades, 1);

  // The worker dies; the new one hears from the tabs that WebSocket was silent, and goes
  // straight to HTTP-streaming.
  const cdp = await browser.newBrowserCDPSession();
  const { targetInfos } = await cdp.send('Target.getTargets');
  const worker = targetInfos.find((i) => i.type === 'shared_worker');
  assert.ok(worker, 'a shared worker target');
  await cdp.send('Target.closeTarget', { targetId: worker.targetId });
  await publishMany(stack.node, 'news', 3, 'handover');
  for (const p of [a, b]) {
    await waitPubs(p, 'news', 13, 15_000);
    assert.deepEqual(await offsets(p, 'news'), range(1, 13));
  }
  await waitStatus(a, { state: 'connected', transport: 'http_stream', tabs: 2 });
  assert.equal(front.upgrades, 1, 'the new worker did not try the silent WebSocket');
});

test('the default silent-transport timeout: 4 s after the WebSocket opened', async (t) => {
  const { stack, context, via } = await setup(t);
  await context.routeWebSocket(/\/connection\/websocket/, () => {});
  const page = await openPage(context, via, { share: 'off', subscribe: ['news'], options: { transports: 'auto' } });
  await waitStatus(page, { state: 'connected', transport: 'http_stream' }, 10_000);
  const rec = await record(page);
  assert.equal(rec.fallbacks.length, 1);
  assert.ok(rec.fallbacks[0].waitedMs >= 4000 && rec.fallbacks[0].waitedMs < 5000, `waited ${rec.fallbacks[0].waitedMs} ms`);
  console.log(`# defaults, silent WebSocket → http_stream: silence detected after ${rec.fallbacks[0].waitedMs} ms, connected ${rec.firstConnectedMs} ms after creation`);
  await waitUntil(async () => (await record(page)).subscribed.length > 0, { what: 'subscribed' });
  await publishMany(stack.node, 'news', 3);
  await waitPubs(page, 'news', 3);
  assert.deepEqual(await offsets(page, 'news'), range(1, 3));
});
