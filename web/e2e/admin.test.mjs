// The node's admin page (/admin) in Debian's Chromium: sign in, the nodes table, a
// channel found by search, a live tail fed by the publish form, and a disconnect code.
// With HERALD_ADMIN_SCREENSHOT=<file> it also saves the screenshot the README shows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { newClient, rawClient, closeClients } from '../../tests/node/lib/herald.mjs';
import { launchBrowser, startHerald } from './harness.mjs';

const PASSWORD = 'correct horse battery staple';

test('the admin page signs in, shows the cluster, tails a channel and publishes', async (t) => {
  const node = await startHerald({
    config: {
      node_name: 'herald-demo-1',
      admin: { enabled: true, password: PASSWORD, secret: crypto.randomBytes(32).toString('hex') },
      namespaces: {
        board: { allow_subscribe_for_client: true, history_size: 100, history_ttl: '5m' },
        kpi: { allow_subscribe_for_client: true, history_size: 100, history_ttl: '5m' },
      },
    },
  });
  const browser = await launchBrowser();
  t.after(async () => {
    await closeClients();
    await browser.close();
    await node.stop();
  });

  // Real subscribers on two channels, so the page has something to list.
  const clients = [];
  for (const [user, channels] of [['ada', ['board:tasks', 'kpi:revenue']], ['bo', ['board:tasks']], ['cy', ['board:tasks', 'status']]]) {
    const client = newClient(node, { user });
    for (const c of channels) client.newSubscription(c).subscribe();
    client.connect();
    clients.push(client);
  }
  await Promise.all(clients.map((c) => c.ready(5000)));

  // A connection the node closes with 3500 (a token that is not one).
  const refused = rawClient(node);
  await refused.opened;
  refused.send({ id: 1, connect: { token: 'not-a-token' } });
  assert.equal((await refused.closed).code, 3500);

  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));

  await page.goto(`http://127.0.0.1:${node.port}/admin`);
  await page.locator('#login').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#app').isVisible(), false);

  // A wrong password says so, and the page stays locked.
  await page.fill('#password', 'not the password at all');
  await page.click('#login-form button[type=submit]');
  await page.locator('#login-error', { hasText: 'Wrong password' }).waitFor();
  assert.equal(await page.locator('#app').isVisible(), false);

  await page.fill('#password', PASSWORD);
  await page.click('#login-form button[type=submit]');
  await page.locator('#app').waitFor({ state: 'visible' });

  // The nodes table.
  const row = page.locator('#nodes-body tr');
  await row.first().waitFor();
  assert.equal(await row.count(), 1);
  const cells = await row.first().locator('td').allTextContents();
  assert.equal(cells[0], 'herald-demo-1');
  assert.equal(cells[1], 'ready');
  assert.equal(cells[2], '3', `connections: ${cells}`);
  assert.equal(cells[4], '5', `subscriptions: ${cells}`);
  await page.locator('#summary', { hasText: '1 node · 3 connections · 5 subscriptions' }).waitFor();

  // Channels, most subscribed first, then a search.
  await page.locator('#channels-body tr').first().waitFor();
  assert.deepEqual(await page.locator('#channels-body tr td:first-child').allTextContents(), ['board:tasks', 'kpi:revenue', 'status']);
  assert.equal(await page.locator('#channels-body tr').first().locator('td').nth(1).textContent(), '3');
  await page.fill('#channel-filter', 'kpi');
  await page.click('#channel-search button');
  await page.waitForFunction(() => document.querySelectorAll('#channels-body tr').length === 1);
  assert.equal(await page.locator('#channels-body tr td:first-child').textContent(), 'kpi:revenue');

  // The recent disconnect, with its code.
  await page.locator('#disconnects-body tr td', { hasText: '3500' }).first().waitFor({ timeout: 10_000 });
  await page.locator('#disconnect-codes', { hasText: '3500 ×1' }).waitFor();

  // Follow the channel from its row, publish from the form, see it in the tail and in
  // a real subscriber.
  const got = new Promise((resolve) => {
    clients[0].getSubscription('kpi:revenue').on('publication', (ctx) => resolve(ctx.data));
  });
  await page.click('#channels-body tr button');
  await page.locator('#tail-status', { hasText: 'Following kpi:revenue' }).waitFor();
  assert.equal(await page.inputValue('#publish-channel'), 'kpi:revenue');
  await page.fill('#publish-data', '{"revenue": 1250, "currency": "EUR"}');
  await page.click('#publish-form button');
  await page.locator('#publish-result', { hasText: 'Published to kpi:revenue at offset 1' }).waitFor();
  await page.locator('#tail-list li', { hasText: '"revenue":1250' }).waitFor();
  assert.deepEqual(await got, { revenue: 1250, currency: 'EUR' });
  // Publications from elsewhere reach the tail too.
  await node.api('publish', { channel: 'kpi:revenue', data: { revenue: 1300, currency: 'EUR' } });
  await page.locator('#tail-list li', { hasText: '"revenue":1300' }).waitFor();
  await page.locator('#tail-status', { hasText: '2 publications' }).waitFor();

  // Bad input gets a clear message and nothing is sent.
  await page.fill('#publish-data', '{revenue: 1}');
  await page.click('#publish-form button');
  await page.locator('#publish-result', { hasText: 'The data is not JSON' }).waitFor();
  await page.fill('#publish-channel', 'nope:x');
  await page.fill('#publish-data', '1');
  await page.click('#publish-form button');
  await page.locator('#publish-result', { hasText: 'Not published' }).waitFor();
  await page.fill('#tail-channel', 'nope:x');
  await page.click('#tail-start');
  await page.locator('#tail-status', { hasText: 'Cannot follow nope:x' }).waitFor();

  if (process.env.HERALD_ADMIN_SCREENSHOT) {
    // The README's picture: the tail on a real channel again, with a few updates.
    await page.fill('#channel-filter', '');
    await page.click('#channel-search button');
    await page.fill('#tail-channel', 'kpi:revenue');
    await page.click('#tail-start');
    await page.locator('#tail-status', { hasText: 'Following kpi:revenue' }).waitFor();
    for (const revenue of [1310, 1342, 1398]) {
      await node.api('publish', { channel: 'kpi:revenue', data: { revenue, currency: 'EUR' } });
    }
    await page.locator('#tail-list li', { hasText: '1398' }).waitFor();
    await page.fill('#publish-channel', 'kpi:revenue');
    await page.fill('#publish-data', '{"revenue": 1400, "currency": "EUR"}');
    await page.click('#publish-form button');
    await page.locator('#tail-list li', { hasText: '1400' }).waitFor();
    await page.locator('#publish-result', { hasText: 'Published' }).waitFor();
    await page.waitForTimeout(2500); // a nodes refresh with a publication rate
    await page.screenshot({ path: process.env.HERALD_ADMIN_SCREENSHOT, fullPage: true });
  }

  // Signing out locks the page again, and the session is gone on reload.
  await page.click('#logout');
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.reload();
  await page.locator('#login').waitFor({ state: 'visible' });

  const elsewhere = requests.filter((u) => !u.startsWith(`http://127.0.0.1:${node.port}/`));
  assert.deepEqual(elsewhere, [], 'the page loads nothing from elsewhere');
  // Refused requests (the wrong password, the bad channel) log a line in Chromium's
  // console; anything else there is a script error.
  assert.deepEqual(errors.filter((e) => !e.startsWith('Failed to load resource')), [], 'no script errors');
});
