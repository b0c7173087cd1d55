// @herald/web end to end over a compressed WebSocket: real Chromium offers
// permessage-deflate by itself; a node with `client.websocket_compression` accepts it
// (seen in the handshake through CDP and in the node's metric), and the page receives
// 100 publications of a large object intact and in order, and publishes one itself
// (which Chromium compresses on the way in).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { launchBrowser, range, record, startStack, waitPubs, waitStatus, waitUntil } from './harness.mjs';

const METRIC = 'herald_websocket_compressed_connections_total';
const ANSWER = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A ~2.3 KB object, different in every publication. */
function snapshot(i) {
  const rows = [];
  for (let k = 0; k < 24; k++) {
    rows.push({
      id: `row-${k}`,
      name: `Instrument ${k}`,
      price: Number((100 + k * 1.25 + i * 0.01).toFixed(2)),
      volume: 1000 * k + i,
      currency: 'EUR',
      status: k % 3 ? 'open' : 'halted',
    });
  }
  return { seq: i, kind: 'market-snapshot', note: 'naïve € 日本語', rows };
}

/** A header's value from a CDP headers object, whatever the case of its name. */
const header = (headers, name) => Object.entries(headers ?? {}).find(([k]) => k.toLowerCase() === name)?.[1];

/** A TCP front for `targetPort` that counts the bytes going there (`up`) and coming back (`down`). */
async function startCountingFront(targetPort) {
  const sockets = new Set();
  const front = { up: 0, down: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.on('data', (chunk) => {
      front.up += chunk.length;
    });
    upstream.on('data', (chunk) => {
      front.down += chunk.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  front.wsUrl = `ws://127.0.0.1:${server.address().port}/connection/websocket`;
  front.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  };
  return front;
}

/**
 * Opens the test page (share off: the socket is the page's own, so the page's CDP
 * session sees its handshake) with a CDP session listening before the page loads.
 */
async function openWatchedPage(context, stack, subscribe) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  const cdp = await context.newCDPSession(page);
  const handshakes = { requests: [], responses: [] };
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => handshakes.requests.push(e.request.headers));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => handshakes.responses.push({ status: e.response.status, headers: e.response.headers }));
  await cdp.send('Network.enable');
  const q = new URLSearchParams({ ws: stack.wsUrl, share: 'off', user: 'alice', options: '{}' });
  for (const c of subscribe) q.append('sub', c);
  await page.goto(`${stack.origin}/?${q}`);
  await page.waitForFunction(() => window.t !== undefined);
  return { page, handshakes };
}

test('Chromium negotiates permessage-deflate and gets 100 large publications intact, in order', { timeout: 45_000 }, async (t) => {
  const stack = await startStack({ config: { client: { websocket_compression: true } } });
  const front = await startCountingFront(stack.proxy.port);
  const context = await browser.newContext();
  t.after(async () => {
    await context.close();
    await front.close();
    await stack.close();
  });
  const metricBefore = await stack.node.metric(METRIC);
  assert.equal(metricBefore, 0);

  const { page, handshakes } = await openWatchedPage(context, { ...stack, wsUrl: front.wsUrl }, ['news']);
  await waitStatus(page, { state: 'connected', transport: 'websocket' });
  await waitUntil(async () => (await record(page)).subscribed.length > 0, { what: 'subscribed' });

  // Chromium offered the extension by itself, and the node answered it.
  await waitUntil(() => handshakes.responses.length >= 1, { what: 'the handshake response (CDP)' });
  const offer = header(handshakes.requests[0], 'sec-websocket-extensions');
  assert.match(offer ?? '', /permessage-deflate/, `Chromium's offer: ${JSON.stringify(handshakes.requests[0])}`);
  assert.equal(handshakes.responses[0].status, 101);
  assert.equal(header(handshakes.responses[0].headers, 'sec-websocket-extensions'), ANSWER, JSON.stringify(handshakes.responses[0]));
  const metricAfter = await stack.node.metric(METRIC);
  assert.equal(metricAfter, metricBefore + handshakes.responses.length, 'every handshake counted as compressed');
  assert.ok(metricAfter >= 1);

  const sent = range(1, 100).map(snapshot);
  const downBefore = front.down;
  for (const data of sent) await stack.node.publish('news', data);
  await waitPubs(page, 'news', 100, 20_000);
  const wire = front.down - downBefore;
  let rec = await record(page);
  assert.deepEqual(rec.pubs.news.map((p) => p.offset), range(1, 100));
  assert.deepEqual(rec.pubs.news.map((p) => p.data), sent);
  // Compressed on the wire: a fraction of the data's own JSON.
  const json = sent.reduce((n, d) => n + Buffer.byteLength(JSON.stringify(d)), 0);
  assert.ok(wire * 3 < json, `${wire} bytes reached Chromium for ${json} bytes of JSON data`);

  // From the page: Chromium compresses the message, the node inflates it.
  const own = snapshot(101);
  const upBefore = front.up;
  const r = await page.evaluate((d) => window.t.publish('news', d), own);
  assert.equal(r.ok, true, JSON.stringify(r));
  const up = front.up - upBefore;
  const ownJson = Buffer.byteLength(JSON.stringify(own));
  assert.ok(up * 2 < ownJson, `the page's publish command went up compressed: ${up} bytes for ${ownJson} bytes of data`);
  await waitPubs(page, 'news', 101);
  rec = await record(page);
  assert.equal(rec.pubs.news.at(-1).offset, 101);
  assert.deepEqual(rec.pubs.news.at(-1).data, own);
  assert.deepEqual((await stack.node.api('history', { channel: 'news', limit: 1, reverse: true })).publications[0].data, own);

  assert.equal(handshakes.responses.length, 1, 'one connection all along');
  assert.equal(rec.errors.length, 0, JSON.stringify(rec.errors));
  console.log(`# Chromium over permessage-deflate: offered "${offer}", answered "${ANSWER}"; 100 publications of ${json} bytes of JSON data came in ${wire} bytes on the wire (${(json / wire).toFixed(1)}x less), in order; the page's own publication of ${ownJson} bytes went up in ${up}`);
});
