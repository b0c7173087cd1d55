// The demo dashboard end to end: alice, bob and carol in real Chromium, a real herald node,
// the demo backend with SQLite and its transactional outbox.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { launchBrowser, sleep, startHerald, waitUntil } from './harness.mjs';
import { dashboard, startDemo } from './demo-harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Screenshots, kept as test artifacts (not committed). */
const ARTIFACTS = path.join(here, 'artifacts');

let browser;
before(async () => {
  browser = await launchBrowser();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});
after(async () => {
  await browser?.close();
});

async function setup(t) {
  const stack = await startDemo();
  const contexts = {};
  for (const user of ['alice', 'bob', 'carol']) contexts[user] = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  t.after(async () => {
    for (const c of Object.values(contexts)) await c.close();
    await stack.close();
  });
  return { stack, contexts };
}

const rowNames = (page) => page.locator('[data-testid=applications] tbody tr td:first-child a').allTextContents();
const row = (page, id) => page.locator(`[data-testid=applications] tr[data-id="${id}"]`);

test('live list: bob changes applications; alice\'s three tabs share one connection and show each change; carol never sees a restricted one', async (t) => {
  const { stack, contexts } = await setup(t);
  const alice = [];
  for (let i = 0; i < 3; i++) alice.push(await dashboard(contexts.alice, stack, 'alice'));
  const bob = await dashboard(contexts.bob, stack, 'bob');
  // carol's connection in her page (no sharing), so that every frame she receives can be read.
  const carol = await contexts.carol.newPage();
  const carolFrames = [];
  carol.on('websocket', (ws) => ws.on('framereceived', (f) => carolFrames.push(String(f.payload))));
  await carol.goto(`${stack.origin}/login?user=carol`);
  await carol.goto(`${stack.origin}/applications?share=off`);
  await carol.locator('.herald-status[data-state="connected"]').waitFor({ timeout: 15_000 });

  await waitUntil(async () => (await stack.node.api('info')).nodes[0].num_clients === 3, { what: 'three connections: alice (three tabs), bob, carol' });
  await alice[0].getByText('3 tabs').waitFor();

  // Through the UI: bob creates one; alice's tabs show it without a reload.
  await bob.getByLabel('New application name').fill('Payroll');
  await bob.getByRole('button', { name: 'Create' }).click();
  for (const p of alice) await p.getByRole('link', { name: 'Payroll' }).waitFor();

  // Through the REST API: create, a restricted one, update, delete.
  const crm = (await stack.rest('bob', 'POST', '/api/applications', { name: 'CRM', status: 'active', restricted: false })).body;
  const vault = (await stack.rest('bob', 'POST', '/api/applications', { name: 'Vault', status: 'active', restricted: true })).body;
  await stack.rest('bob', 'PATCH', `/api/applications/${crm.id}`, { version: crm.version, status: 'paused' });
  for (const p of alice) {
    await row(p, crm.id).getByText('paused').waitFor();
    await p.getByRole('link', { name: 'Vault' }).waitFor();
  }
  await alice[0].screenshot({ path: path.join(ARTIFACTS, 'list.png') });
  const payroll = (await stack.rest('bob', 'GET', '/api/applications')).body.find((a) => a.name === 'Payroll');
  await stack.rest('bob', 'DELETE', `/api/applications/${payroll.id}`);
  for (const p of alice) {
    await row(p, payroll.id).waitFor({ state: 'detached' });
    assert.deepEqual(await rowNames(p), ['Vault', 'CRM']);
  }
  // Through the UI again: bob renames CRM on its edit page, then deletes it from its detail page.
  await bob.goto(`${stack.origin}/applications/${crm.id}/edit`);
  await bob.getByRole('heading', { name: 'Edit CRM' }).waitFor();
  await bob.getByLabel('Name').fill('CRM 2');
  await bob.getByRole('button', { name: 'Save' }).click();
  await bob.getByTestId('detail-name').getByText('CRM 2').waitFor();
  for (const p of alice) await row(p, crm.id).getByText('CRM 2').waitFor();
  await row(carol, crm.id).getByText('CRM 2').waitFor();
  await bob.getByRole('button', { name: 'Delete' }).click();
  for (const p of alice) await row(p, crm.id).waitFor({ state: 'detached' });
  await row(carol, crm.id).waitFor({ state: 'detached' });
  for (const p of alice) assert.deepEqual(await rowNames(p), ['Vault']);
  // carol saw CRM come and go; Vault never, neither listed nor in any frame.
  assert.deepEqual(await rowNames(carol), []);
  assert.ok(carolFrames.length > 0);
  assert.ok(!carolFrames.some((f) => f.includes(vault.id) || f.includes('Vault')), 'no frame to carol mentions the restricted application');
  await carol.reload();
  await carol.locator('.herald-status[data-state="connected"]').waitFor();
  await carol.getByRole('heading', { name: 'Applications' }).waitFor();
  await sleep(300);
  assert.deepEqual(await rowNames(carol), []);
});

test('detail page: a toast for bob\'s update with Refresh and Dismiss, gone after 10 s, none for bob\'s own change', async (t) => {
  const { stack, contexts } = await setup(t);
  const app = (await stack.rest('alice', 'POST', '/api/applications', { name: 'Billing', status: 'active', restricted: false })).body;
  const alice = await dashboard(contexts.alice, stack, 'alice', `/applications/${app.id}`);
  const bob = await dashboard(contexts.bob, stack, 'bob', `/applications/${app.id}`);
  await alice.getByTestId('detail-name').getByText('Billing').waitFor();

  let v = app.version;
  const patch = async (body) => {
    const r = await stack.rest('bob', 'PATCH', `/api/applications/${app.id}`, { version: v, ...body });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    v = r.body.version;
  };
  await patch({ name: 'Billing 2' });
  await alice.getByText('Updated by bob').waitFor();
  await alice.screenshot({ path: path.join(ARTIFACTS, 'toast.png') });
  assert.equal(await alice.getByTestId('detail-name').textContent(), 'Billing', 'not changed under the reader');
  await alice.getByRole('button', { name: 'Refresh' }).click();
  await alice.getByTestId('detail-name').getByText('Billing 2').waitFor();
  await patch({ status: 'paused' });
  await alice.getByText('Updated by bob').waitFor();
  await alice.getByRole('button', { name: 'Dismiss' }).click();
  await alice.getByText('Updated by bob').waitFor({ state: 'detached' });
  await patch({ status: 'retired' });
  await alice.getByText('Updated by bob').waitFor();
  const shownAt = Date.now();
  await alice.getByText('Updated by bob').waitFor({ state: 'detached', timeout: 13_000 });
  const lasted = Date.now() - shownAt;
  assert.ok(lasted > 8000 && lasted < 12_500, `the toast lasted ${lasted} ms`);
  // bob saw none of his own changes as toasts.
  assert.equal(await bob.locator('.herald-toast').count(), 0);
  await bob.getByTestId('detail-status').getByText('retired').waitFor();
});

test('edit conflict: alice is warned that bob saved, and her stale save gets a clear 409 message', async (t) => {
  const { stack, contexts } = await setup(t);
  const app = (await stack.rest('alice', 'POST', '/api/applications', { name: 'Search', status: 'active', restricted: false })).body;
  const alice = await dashboard(contexts.alice, stack, 'alice', `/applications/${app.id}/edit`);
  await alice.getByRole('heading', { name: 'Edit Search' }).waitFor();
  const bob = await dashboard(contexts.bob, stack, 'bob', `/applications/${app.id}/edit`);
  await bob.getByRole('heading', { name: 'Edit Search' }).waitFor();
  await alice.getByTestId('also-editing').getByText('bob').waitFor();
  await bob.getByTestId('also-editing').getByText('alice').waitFor();
  await bob.getByLabel('Name').fill('Search (bob)');
  await bob.getByRole('button', { name: 'Save' }).click();
  await bob.getByTestId('detail-name').getByText('Search (bob)').waitFor();
  const banner = alice.getByTestId('conflict-area').getByRole('alert');
  await banner.getByText(/bob saved this at .* \(version 2\)/).waitFor();
  await alice.screenshot({ path: path.join(ARTIFACTS, 'conflict.png') });
  assert.equal(await bob.getByRole('alert').count(), 0, 'no warning for one\'s own save');
  await alice.getByRole('button', { name: 'Keep editing' }).click();
  await alice.getByLabel('Name').fill('Search (alice)');
  await alice.getByRole('button', { name: 'Save' }).click();
  await alice.getByTestId('save-error').getByText(/bob saved a newer version/).waitFor();
  const now = (await stack.rest('alice', 'GET', `/api/applications/${app.id}`)).body;
  assert.equal(now.name, 'Search (bob)');
});

test('a delete while alice reads the detail page: a notice, then back to the list', async (t) => {
  const { stack, contexts } = await setup(t);
  const app = (await stack.rest('bob', 'POST', '/api/applications', { name: 'Legacy', status: 'retired', restricted: false })).body;
  const alice = await dashboard(contexts.alice, stack, 'alice', `/applications/${app.id}`);
  await alice.getByTestId('detail-name').getByText('Legacy').waitFor();
  await stack.rest('bob', 'DELETE', `/api/applications/${app.id}`);
  await alice.getByText('This application was deleted by bob').waitFor();
  await alice.waitForURL(/\/applications$/, { timeout: 5000 });
  await alice.getByRole('heading', { name: 'Applications' }).waitFor();
  assert.equal(await row(alice, app.id).count(), 0);
});

test('offline: alice sees it; bob changes two applications; back online both appear, in order, once', async (t) => {
  const { stack, contexts } = await setup(t);
  const a = (await stack.rest('bob', 'POST', '/api/applications', { name: 'A', status: 'active', restricted: false })).body;
  const b = (await stack.rest('bob', 'POST', '/api/applications', { name: 'B', status: 'active', restricted: false })).body;
  // alice's connection in her page (no sharing), so that the order the changes reach
  // her in can be read off her frames: React may render both in one pass.
  const alice = await contexts.alice.newPage();
  const frames = [];
  alice.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));
  await alice.goto(`${stack.origin}/login?user=alice`);
  await alice.goto(`${stack.origin}/applications?share=off`);
  await alice.locator('.herald-status[data-state="connected"]').waitFor({ timeout: 15_000 });
  await row(alice, b.id).waitFor();
  await contexts.alice.setOffline(true);
  stack.proxy.block(true);
  await alice.locator('.herald-status[data-state="offline"]').getByText('Offline').waitFor();
  await stack.rest('bob', 'PATCH', `/api/applications/${a.id}`, { version: a.version, name: 'A2' });
  await stack.rest('bob', 'PATCH', `/api/applications/${b.id}`, { version: b.version, name: 'B2' });
  await sleep(300);
  assert.deepEqual(await rowNames(alice), ['B', 'A'], 'nothing arrives while offline');
  const sinceOnline = frames.length;
  await contexts.alice.setOffline(false);
  stack.proxy.block(false);
  await alice.locator('.herald-status[data-state="connected"]').waitFor({ timeout: 15_000 });
  await row(alice, a.id).getByText('A2').waitFor();
  await row(alice, b.id).getByText('B2').waitFor();
  assert.deepEqual(await rowNames(alice), ['B2', 'A2']);
  assert.equal(await alice.locator('[data-testid=applications] tbody tr').count(), 2, 'once each');
  const after = frames.slice(sinceOnline).join('\n');
  const [ia, ib] = ['"name":"A2"', '"name":"B2"'].map((n) => after.indexOf(n));
  assert.ok(ia >= 0 && ib > ia, `in the order bob made them (A2 at ${ia}, B2 at ${ib})`);
});

test('a node restart: reconnecting and back, and the list resyncs with no stale rows', async (t) => {
  const { stack, contexts } = await setup(t);
  const keep = (await stack.rest('bob', 'POST', '/api/applications', { name: 'Keep', status: 'active', restricted: false })).body;
  const gone = (await stack.rest('bob', 'POST', '/api/applications', { name: 'Gone', status: 'active', restricted: false })).body;
  const alice = await dashboard(contexts.alice, stack, 'alice');
  await row(alice, gone.id).waitFor();
  await stack.node.stop({ signal: 'SIGKILL' });
  await alice.locator('.herald-status[data-state="reconnecting"]').waitFor();
  // Changes while the node is down wait in the outbox.
  await stack.rest('bob', 'DELETE', `/api/applications/${gone.id}`);
  const added = (await stack.rest('bob', 'POST', '/api/applications', { name: 'Added', status: 'active', restricted: false })).body;
  stack.node = await startHerald({ ...stack.node.spec, base: {}, config: stack.node.spec.config, port: stack.node.port });
  await alice.locator('.herald-status[data-state="connected"]').waitFor({ timeout: 15_000 });
  await row(alice, added.id).waitFor({ timeout: 10_000 });
  await row(alice, gone.id).waitFor({ state: 'detached' });
  assert.deepEqual(await rowNames(alice), ['Added', 'Keep']);
  assert.ok(await row(alice, keep.id).count());
});
