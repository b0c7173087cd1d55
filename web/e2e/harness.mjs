// End-to-end harness for @herald/web: a real herald node, a TCP proxy between the browser
// and the node that tests can cut and block (Playwright's setOffline does not cut a
// SharedWorker's socket), a small HTTP server for the test page and its tokens, and
// Debian's Chromium driven by playwright-core.
//
//   const stack = await startStack();          // node + proxy + page server
//   const browser = await launchBrowser();
//   const page = await openPage(await browser.newContext(), stack, { share: 'worker' });
//   await stack.close(); await browser.close();

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { freePort, startHerald, sleep, waitUntil } from '../../tests/node/lib/herald.mjs';

export { sleep, waitUntil, startHerald };

const here = path.dirname(fileURLToPath(import.meta.url));
const WEB = path.resolve(here, '..');

/** Chromium from Debian (never a downloaded browser). */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y --no-install-recommends chromium`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A TCP proxy in front of `port` that counts connections and can cut or refuse them. */
export async function startProxy(targetPort) {
  const sockets = new Set();
  const proxy = { port: await freePort(), connections: 0, blocked: false, targetPort };
  const server = net.createServer((client) => {
    proxy.connections++;
    if (proxy.blocked) return void client.destroy();
    const upstream = net.connect(proxy.targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(proxy.port, '127.0.0.1', resolve));
  proxy.cut = () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  proxy.block = (on) => {
    proxy.blocked = on;
    if (on) proxy.cut();
  };
  proxy.close = () => {
    proxy.cut();
    return new Promise((resolve) => server.close(resolve));
  };
  return proxy;
}

const bundles = new Map();

/** A test page's script, bundled once per process from the packages' sources. */
function bundle(entry) {
  if (!bundles.has(entry)) {
    bundles.set(entry, build({
      entryPoints: [path.join(here, entry)],
      bundle: true,
      format: 'esm',
      target: 'es2022',
      jsx: 'automatic',
      define: { 'process.env.NODE_ENV': '"development"' },
      write: false,
      logLevel: 'warning',
    }).then((r) => r.outputFiles[0].text));
  }
  return bundles.get(entry);
}

/** Serves the test page, the worker script and tokens signed for `node`. */
async function startPageServer(stack) {
  const js = await bundle('page.ts');
  const reactJs = await bundle('react-page.tsx');
  const workerFile = path.join(WEB, 'packages', 'web', 'dist', 'worker.js');
  if (!fs.existsSync(workerFile)) throw new Error(`${workerFile} is missing: run npm run build in web/`);
  const worker = fs.readFileSync(workerFile, 'utf8');
  const port = await freePort();
  stack.tokenRequests = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://127.0.0.1:${port}`);
    const send = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    switch (url.pathname) {
      case '/':
        return send(200, 'text/html', '<!doctype html><meta charset="utf-8"><title>herald e2e</title><body><script type="module" src="/app/page.js"></script></body>');
      case '/app/page.js':
        return send(200, 'text/javascript', js);
      case '/react':
        return send(200, 'text/html', '<!doctype html><meta charset="utf-8"><title>herald react e2e</title><body><div id="root"></div><script type="module" src="/app/react.js"></script></body>');
      case '/app/react.js':
        return send(200, 'text/javascript', reactJs);
      case '/api/apps':
        return send(200, 'application/json', JSON.stringify(stack.apps));
      case '/app/worker.js':
        return send(200, 'text/javascript', worker);
      case '/subtoken': {
        // Private channels: granted to `alice` only.
        const user = url.searchParams.get('user') || 'alice';
        const channel = url.searchParams.get('channel') || '';
        if (user !== 'alice') return send(403, 'text/plain', 'no');
        return send(200, 'text/plain', stack.node.subToken({ sub: user, channel }));
      }
      case '/token':
        stack.tokenRequests++;
        if (url.searchParams.get('bad')) return send(200, 'text/plain', 'not.a.token');
        return send(200, 'text/plain', stack.node.token({
          sub: url.searchParams.get('user') || 'alice',
          ...(url.searchParams.get('ttl') ? { ttl: Number(url.searchParams.get('ttl')) } : {}),
        }));
      default:
        return send(404, 'text/plain', 'not found');
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { port, close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }) };
}

/** A herald node (memory broker), a proxy in front of it and the page server. */
export async function startStack({ config } = {}) {
  const stack = { apps: [] };
  stack.node = await startHerald({ config });
  stack.proxy = await startProxy(stack.node.port);
  stack.pages = await startPageServer(stack);
  stack.pageUrl = (pathname, query = {}) => `${stack.origin}${pathname}?${new URLSearchParams({ ws: stack.wsUrl, ...query })}`;
  stack.wsUrl = `ws://127.0.0.1:${stack.proxy.port}/connection/websocket`;
  stack.origin = `http://127.0.0.1:${stack.pages.port}`;
  /** Kills the node and starts a new one on the same port with the same keys (history lost). */
  stack.restartNode = async ({ downMs = 0 } = {}) => {
    await stack.node.stop({ signal: 'SIGKILL' });
    if (downMs) await sleep(downMs);
    stack.node = await startHerald({ ...stack.node.spec, base: {}, config: stack.node.spec.config, port: stack.node.port });
  };
  stack.close = async () => {
    await stack.pages.close();
    await stack.proxy.close();
    await stack.node.stop();
  };
  return stack;
}

/**
 * Opens the test page in `context`. Query: share mode, channels to subscribe at load,
 * whether the token is refused, client options as JSON.
 */
export async function openPage(context, stack, { share = 'auto', subscribe = [], badToken = false, user = 'alice', tokenTtl, options = {} } = {}) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  const q = new URLSearchParams({ ws: stack.wsUrl, share, user, options: JSON.stringify(options) });
  if (badToken) q.set('bad', '1');
  if (tokenTtl) q.set('ttl', String(tokenTtl));
  for (const c of subscribe) q.append('sub', c);
  await page.goto(`${stack.origin}/?${q}`);
  await page.waitForFunction(() => window.t !== undefined);
  return page;
}

/** The page's record: publications per channel, events, statuses. */
export function record(page) {
  return page.evaluate(() => window.t.record());
}

/** Waits until the page's status has `state` (and more fields when given). */
export function waitStatus(page, want, timeout = 10_000) {
  return page.waitForFunction((w) => Object.entries(w).every(([k, v]) => window.t.status()[k] === v), want, { timeout });
}

/** Waits until `page` has received `n` publications on `channel`. */
export function waitPubs(page, channel, n, timeout = 10_000) {
  return page.waitForFunction(([c, k]) => (window.t.record().pubs[c] ?? []).length >= k, [channel, n], { timeout });
}

/** Offsets of the publications `page` received on `channel`. */
export async function offsets(page, channel) {
  return (await record(page)).pubs[channel]?.map((p) => p.offset) ?? [];
}

/** 1..n */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
