// @herald/react end to end: React 19 in StrictMode, in real Chromium, against a real herald node.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, sleep, startStack, waitUntil } from './harness.mjs';

/** The `entities` namespace of the entity-event convention, next to the harness's namespaces. */
const CONFIG = {
  namespaces: {
    entities: { history_size: 100, history_ttl: '5m', allow_subscribe_for_client: true, allow_history_for_subscriber: true },
  },
};

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function setup(t) {
  const stack = await startStack({ config: CONFIG });
  const context = await browser.newContext();
  t.after(async () => {
    await context.close();
    await stack.close();
  });
  return { stack, context };
}

async function open(context, stack, query = {}) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.goto(stack.pageUrl('/react', query));
  await page.getByText('Live', { exact: true }).waitFor({ timeout: 10_000 });
  return page;
}

let version = 0;
/** Publishes an entity event of `applications` to its type and entity channels. */
async function entityEvent(node, action, id, actor, payload) {
  const event = { entity_type: 'applications', entity_id: id, action, actor, version: payload?.version ?? ++version, timestamp: Date.now(), payload };
  await node.publish('entities:applications', event);
  await node.publish(`entities:applications.${id}`, event);
}

const rows = (page) => page.locator('[data-testid=apps] li').allTextContents();

test('StrictMode and two components on one channel make one server subscription; one unmounting keeps the other', async (t) => {
  const { stack, context } = await setup(t);
  const page = await open(context, stack);
  await waitUntil(async () => {
    const res = await stack.node.api('channels', { pattern: 'news' });
    return res.channels.news?.num_clients === 1;
  }, { what: 'one subscriber of news on the node' });
  for (let i = 1; i <= 3; i++) await stack.node.publish('news', { i });
  await page.waitForFunction(() => window.r.a.length === 3 && window.r.b.length === 3);
  assert.deepEqual(await page.evaluate(() => [window.r.a, window.r.b]), [[1, 2, 3], [1, 2, 3]]);
  await page.getByTestId('toggle-b').click();
  await sleep(1500); // past the hub's linger
  await stack.node.publish('news', { i: 4 });
  await page.waitForFunction(() => window.r.a.length === 4);
  assert.deepEqual(await page.evaluate(() => [window.r.a, window.r.b]), [[1, 2, 3, 4], [1, 2, 3]]);
  const res = await stack.node.api('channels', { pattern: 'news' });
  assert.equal(res.channels.news?.num_clients, 1);
});

test('ConnectionStatus: a label, aria-live, and reconnecting with its reason while the node is away', async (t) => {
  const { stack, context } = await setup(t);
  const page = await open(context, stack);
  const status = page.getByRole('status').first();
  assert.equal(await status.getAttribute('aria-live'), 'polite');
  assert.equal(await status.getAttribute('data-state'), 'connected');
  stack.proxy.block(true);
  await page.getByText('Reconnecting…').waitFor();
  assert.match(await status.getAttribute('title'), /next try in \d+ s/);
  stack.proxy.block(false);
  await page.getByText('Live', { exact: true }).waitFor({ timeout: 15_000 });
});

test('useLiveList: created rows appear highlighted, updated rows change in place, deleted rows go', async (t) => {
  const { stack, context } = await setup(t);
  stack.apps = [{ id: '1', name: 'billing', version: 1 }];
  const page = await open(context, stack);
  await page.locator('[data-testid=apps] li').first().waitFor();
  assert.deepEqual(await rows(page), ['billing']);
  await entityEvent(stack.node, 'created', '2', 'bob', { id: '2', name: 'search', version: 1 });
  await page.locator('li[data-id="2"]').waitFor();
  assert.deepEqual(await rows(page), ['search', 'billing']);
  assert.equal(await page.locator('li[data-id="2"]').getAttribute('data-highlighted'), 'yes');
  await entityEvent(stack.node, 'updated', '1', 'bob', { id: '1', name: 'billing v2', version: 2 });
  await page.getByText('billing v2').waitFor();
  // An older event (version 1 again) changes nothing.
  await entityEvent(stack.node, 'updated', '1', 'bob', { id: '1', name: 'stale', version: 1 });
  await entityEvent(stack.node, 'deleted', '2', 'bob', { id: '2', name: 'search', version: 2 });
  await page.locator('li[data-id="2"]').waitFor({ state: 'detached' });
  assert.deepEqual(await rows(page), ['billing v2']);
});

test('toasts for other users\' changes only, with Refresh and Dismiss, gone after their time', async (t) => {
  const { stack, context } = await setup(t);
  stack.apps = [{ id: '7', name: 'crm', version: 1 }];
  const page = await open(context, stack, { detail: '7', toastMs: '1500' });
  await page.getByTestId('detail').getByText('crm').waitFor();
  await entityEvent(stack.node, 'updated', '7', 'bob', { id: '7', name: 'crm 2', version: 2 });
  await page.getByText('Updated by bob').waitFor();
  await page.getByRole('button', { name: 'Dismiss' }).click();
  await page.getByText('Updated by bob').waitFor({ state: 'detached' });
  // The user's own change: no toast.
  await entityEvent(stack.node, 'updated', '7', 'alice', { id: '7', name: 'crm 3', version: 3 });
  await page.getByTestId('detail').getByText('crm 3').waitFor();
  await sleep(300);
  assert.equal(await page.locator('.herald-toast').count(), 0);
  // Refresh reloads; and a toast left alone goes by itself.
  await entityEvent(stack.node, 'updated', '7', 'carol', { id: '7', name: 'crm 4', version: 4 });
  await page.getByText('Updated by carol').waitFor();
  await page.getByRole('button', { name: 'Refresh' }).click();
  assert.equal(await page.evaluate(() => window.r.refreshed), 1);
  await entityEvent(stack.node, 'updated', '7', 'dave', { id: '7', name: 'crm 5', version: 5 });
  await page.getByText('Updated by dave').waitFor();
  await page.getByText('Updated by dave').waitFor({ state: 'detached', timeout: 5000 });
});

test('edit conflict names who saved; a delete calls onDeleted', async (t) => {
  const { stack, context } = await setup(t);
  stack.apps = [{ id: '9', name: 'hr', version: 1 }];
  const page = await open(context, stack, { detail: '9' });
  await page.getByTestId('detail').getByText('hr').waitFor();
  await entityEvent(stack.node, 'updated', '9', 'alice', { id: '9', name: 'hr (mine)', version: 2 });
  await page.getByTestId('detail').getByText('hr (mine)').waitFor();
  assert.equal(await page.getByTestId('conflict').count(), 0, 'my own save is no conflict');
  await entityEvent(stack.node, 'updated', '9', 'bob', { id: '9', name: 'hr (bob)', version: 3 });
  await page.getByTestId('conflict').getByText('bob saved version 3').waitFor();
  await page.getByRole('button', { name: 'Keep editing' }).click();
  await page.getByTestId('conflict').waitFor({ state: 'detached' });
  await entityEvent(stack.node, 'deleted', '9', 'bob', { id: '9', name: 'hr (bob)', version: 4 });
  await page.getByTestId('notice').getByText('Deleted by bob').waitFor();
  assert.deepEqual(await page.evaluate(() => window.r.deleted), ['9']);
});
