// Prints @herald/web's numbers: the bundle's gzip size, the handover time when the tab
// holding the connection closes, and publish-to-render latency through a shared
// connection against a direct one. Real Chromium, a real herald node (debug or release,
// whichever HERALD_BIN points at).
//
//   npm run bench                  (from web/, after npm run build)
//   npm run bench -- --trials 40 --messages 500
import { gzipSync } from 'node:zlib';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { launchBrowser, openPage, record, sleep, startStack, waitStatus, waitUntil } from '../e2e/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const TRIALS = arg('trials', 20);
const MESSAGES = arg('messages', 300);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const fmt = (x) => (x === undefined ? '-' : x.toFixed(1));

async function bundleSize() {
  // As an app's bundler sees the package: ESM, minified, centrifuge left to the app, the
  // hub split into the chunk that only a tab holding the connection loads.
  const r = await build({
    entryPoints: [path.join(here, '..', 'packages', 'web', 'src', 'index.ts')],
    bundle: true,
    minify: true,
    format: 'esm',
    splitting: true,
    outdir: '/nonexistent',
    external: ['centrifuge'],
    write: false,
    metafile: true,
    logLevel: 'warning',
  });
  const gz = new Map(r.outputFiles.map((f) => [path.relative(process.cwd(), f.path), gzipSync(f.contents, { level: 9 }).length]));
  const outputs = r.metafile.outputs;
  // What a tab loads up front: the entry chunk and every chunk it imports statically.
  const initial = new Set();
  const visit = (name) => {
    if (initial.has(name)) return;
    initial.add(name);
    for (const i of outputs[name].imports) if (i.kind === 'import-statement' && outputs[i.path]) visit(i.path);
  };
  visit(Object.keys(outputs).find((k) => outputs[k].entryPoint));
  const entry = [...initial].reduce((n, k) => n + gz.get(k), 0);
  const total = [...gz.values()].reduce((n, x) => n + x, 0);
  const worker = fs.readFileSync(path.join(here, '..', 'packages', 'web', 'dist', 'worker.js'));
  return { entry, total, workerGzip: gzipSync(worker, { level: 9 }).length };
}

/** Time from closing the leader tab to the first publication sent after that reaching another tab. */
async function handover(browser, stack) {
  const times = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const context = await browser.newContext();
    const channel = `handover-${trial}`;
    const pages = [];
    for (let i = 0; i < 2; i++) pages.push(await openPage(context, stack, { share: 'leader', subscribe: [channel] }));
    for (const p of pages) await waitStatus(p, { state: 'connected', tabs: 2 });
    let leader = null;
    for (const p of pages) if ((await p.evaluate(() => window.t.status())).isLeader) leader = p;
    const other = pages.find((p) => p !== leader);
    await waitUntil(async () => (await record(other)).subscribed.length > 0, { what: 'subscribed' });
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        await stack.node.publish(channel, { sent: Date.now() });
        await sleep(5);
      }
    })();
    await sleep(200);
    const closedAt = Date.now();
    await leader.close();
    await other.waitForFunction(([c, t]) => (window.t.record().pubs[c] ?? []).some((p) => p.data.sent > t), [channel, closedAt], { timeout: 10_000 });
    publishing = false;
    await publisher;
    const first = (await record(other)).pubs[channel].find((p) => p.data.sent > closedAt);
    times.push(first.at - closedAt);
    await context.close();
  }
  return times;
}

/** Publish-to-render latency in one tab of `tabs`, sharing by `share`. */
async function latency(browser, stack, share, tabs) {
  const context = await browser.newContext();
  const channel = `latency-${share}-${tabs}`;
  const pages = [];
  for (let i = 0; i < tabs; i++) pages.push(await openPage(context, stack, { share, subscribe: [channel] }));
  for (const p of pages) await waitStatus(p, { state: 'connected' });
  // Measure in a tab that does not hold the connection, where there is one.
  let probe = pages[0];
  for (const p of pages) if (!(await p.evaluate(() => window.t.status())).isLeader) probe = p;
  await waitUntil(async () => (await record(probe)).subscribed.length > 0, { what: 'subscribed' });
  for (let i = 0; i < MESSAGES; i++) {
    await stack.node.publish(channel, { i, sent: Date.now() });
    await sleep(10);
  }
  await probe.waitForFunction(([c, n]) => (window.t.record().pubs[c] ?? []).length >= n, [channel, MESSAGES], { timeout: 30_000 });
  const pubs = (await record(probe)).pubs[channel];
  await context.close();
  return pubs.map((p) => p.at - p.data.sent);
}

const size = await bundleSize();
console.log(`bundle (gzip, without centrifuge): ${size.entry} bytes loaded by every tab, ${size.total} bytes with the hub chunk (leader or unshared tabs); worker.js with centrifuge: ${size.workerGzip} bytes`);

const stack = await startStack();
const browser = await launchBrowser();
try {
  const h = await handover(browser, stack);
  console.log(`handover (leader tab closed → first new publication in another tab), ${h.length} trials: p50 ${fmt(pct(h, 50))} ms, p99 ${fmt(pct(h, 99))} ms, max ${fmt(Math.max(...h))} ms`);
  const rows = [
    ['direct (share: off, 1 tab)', await latency(browser, stack, 'off', 1)],
    ['shared worker (3 tabs)', await latency(browser, stack, 'worker', 3)],
    ['leader, follower tab (3 tabs)', await latency(browser, stack, 'leader', 3)],
  ];
  for (const [name, xs] of rows) {
    console.log(`publish→render ${name}, ${xs.length} publications: p50 ${fmt(pct(xs, 50))} ms, p99 ${fmt(pct(xs, 99))} ms`);
  }
  console.log(`load: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
} finally {
  await browser.close();
  await stack.close();
}
