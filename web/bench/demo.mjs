// Change-to-render latency in the demo dashboard: bob's REST write → the row updated in
// alice's tab (the write, the commit, the outbox, Herald, the browser and React), with
// one tab and with three tabs sharing the connection. Real Chromium, real processes.
//
//   npm run bench:demo              (from web/, after npm run build)
//   npm run bench:demo -- --changes 200
import fs from 'node:fs';
import { launchBrowser } from '../e2e/harness.mjs';
import { dashboard, startDemo } from '../e2e/demo-harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const CHANGES = arg('changes', 100);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

async function run(browser, stack, tabs) {
  const context = await browser.newContext();
  const app = (await stack.rest('bob', 'POST', '/api/applications', { name: `bench-${tabs}-0`, status: 'active', restricted: false })).body;
  const pages = [];
  for (let i = 0; i < tabs; i++) pages.push(await dashboard(context, stack, 'alice'));
  // Measure in the tab opened last.
  const probe = pages[pages.length - 1];
  await probe.locator(`tr[data-id="${app.id}"]`).waitFor();
  // Record when each name first shows in the row.
  await probe.evaluate((id) => {
    const seen = (window.__seen = {});
    const row = () => document.querySelector(`tr[data-id="${id}"] td a`);
    new MutationObserver(() => {
      const name = row()?.textContent;
      if (name && !(name in seen)) seen[name] = performance.timeOrigin + performance.now();
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  }, app.id);
  let version = app.version;
  const times = [];
  for (let i = 1; i <= CHANGES; i++) {
    const name = `bench-${tabs}-${i}`;
    const t0 = Date.now();
    const r = await stack.rest('bob', 'PATCH', `/api/applications/${app.id}`, { version, name });
    version = r.body.version;
    await probe.waitForFunction((n) => n in window.__seen, name, { timeout: 10_000 });
    times.push((await probe.evaluate((n) => window.__seen[n], name)) - t0);
  }
  await context.close();
  return times;
}

const stack = await startDemo();
const browser = await launchBrowser();
try {
  for (const tabs of [1, 3]) {
    const xs = await run(browser, stack, tabs);
    console.log(`change → render, ${tabs} tab${tabs > 1 ? 's' : ''} of alice, ${xs.length} changes: p50 ${pct(xs, 50).toFixed(1)} ms, p99 ${pct(xs, 99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`);
  }
  console.log(`load: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
} finally {
  await browser.close();
  await stack.close();
}
