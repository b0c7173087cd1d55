// The unidirectional SSE endpoint from a browser with no SDK at all: a page on another
// origin opens Chromium's native EventSource on /connection/uni_sse with the connect
// request (a subscription) in `cf_connect`, reads publications, closes, and reopens with
// its last offset in `subs` (recover: true): the connect push brings exactly the
// publications it missed, then live ones follow.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { freePort } from '../../tests/node/lib/herald.mjs';
import { launchBrowser, range, startHerald } from './harness.mjs';

let browser;
let node;
let pages;
before(async () => {
  browser = await launchBrowser();
  node = await startHerald();
  // A blank page on an origin of its own, so that the stream is a CORS request.
  const port = await freePort();
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'no-store' });
    res.end('<!doctype html><meta charset="utf-8"><title>uni_sse</title>');
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  pages = {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
});
after(async () => {
  await browser?.close();
  await pages?.close();
  await node?.stop();
});

/** Opens a native EventSource in the page; its messages collect in `window.streams[name]`. */
function openStream(page, name, url) {
  return page.evaluate(([n, u]) => {
    window.streams ??= {};
    window.sources ??= {};
    const record = { messages: [], errors: 0, opened: false };
    window.streams[n] = record;
    const source = new EventSource(u);
    window.sources[n] = source;
    source.onopen = () => { record.opened = true; };
    source.onerror = () => { record.errors += 1; };
    source.onmessage = (e) => record.messages.push(JSON.parse(e.data));
  }, [name, url]);
}

const messages = (page, name) => page.evaluate((n) => window.streams[n].messages, name);

/** Waits until stream `name` has its connect push and at least `pubs` publications. */
function waitMessages(page, name, pubs = 0, timeout = 10_000) {
  return page.waitForFunction(([n, k]) => {
    const list = window.streams[n].messages;
    return list.some((m) => m.connect) && list.filter((m) => m.pub).length >= k;
  }, [name, pubs], { timeout });
}

/** Offsets of `channel`'s publications in a uni stream: recovered ones in the connect push, then live ones. */
function offsetsOf(list, channel) {
  const out = [];
  for (const m of list) {
    if (m.connect) out.push(...(m.connect.subs?.[channel]?.publications ?? []).map((p) => p.offset));
    if (m.channel === channel && m.pub) out.push(m.pub.offset);
  }
  return out;
}

test('a native EventSource on uni_sse reads publications and recovers the missed ones on reopen', { timeout: 60_000 }, async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
    await page.goto(pages.url);
    const channel = `news-${Date.now()}`;
    const token = node.token({ sub: 'alice' });
    const uniSse = (request) => `${node.url}/connection/uni_sse?${new URLSearchParams({ cf_connect: JSON.stringify(request) })}`;

    await openStream(page, 'first', uniSse({ token, subs: { [channel]: {} } }));
    await waitMessages(page, 'first');
    const connect = (await messages(page, 'first')).find((m) => m.connect).connect;
    assert.ok(connect.subs[channel], `subscribed by the request: ${JSON.stringify(connect)}`);
    let epoch;
    for (let i = 1; i <= 5; i++) ({ epoch } = await node.publish(channel, { i }));
    await waitMessages(page, 'first', 5);
    const first = await messages(page, 'first');
    assert.deepEqual(offsetsOf(first, channel), range(1, 5));
    assert.deepEqual(first.filter((m) => m.pub).map((m) => m.pub.data), range(1, 5).map((i) => ({ i })));
    const last = offsetsOf(first, channel).at(-1);

    // Closed by the page: what is published now is missed.
    await page.evaluate(() => window.sources.first.close());
    for (let i = 6; i <= 9; i++) await node.publish(channel, { i });

    await openStream(page, 'second', uniSse({ token, subs: { [channel]: { recover: true, offset: last, epoch } } }));
    await waitMessages(page, 'second');
    const again = (await messages(page, 'second')).find((m) => m.connect).connect.subs[channel];
    assert.equal(again.recovered, true, JSON.stringify(again));
    assert.equal(again.was_recovering, true, JSON.stringify(again));
    assert.deepEqual(again.publications.map((p) => p.offset), range(6, 9), JSON.stringify(again));
    assert.deepEqual(again.publications.map((p) => p.data), range(6, 9).map((i) => ({ i })));

    await node.publish(channel, { i: 10 });
    await waitMessages(page, 'second', 1);
    const second = await messages(page, 'second');
    assert.deepEqual(offsetsOf(second, channel), range(6, 10), JSON.stringify(second));
    assert.deepEqual([...offsetsOf(first, channel), ...offsetsOf(second, channel)], range(1, 10), 'every publication once, in order');
    const errors = await page.evaluate(() => [window.streams.first.errors, window.streams.second.errors]);
    assert.deepEqual(errors, [0, 0], 'no stream failed (a CORS refusal would be an error)');
    await page.evaluate(() => window.sources.second.close());
  } finally {
    await context.close();
  }
});
