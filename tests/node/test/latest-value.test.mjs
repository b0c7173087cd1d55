// Latest-value channels with the real npm SDK: a subscription to a status channel shows
// the channel's newest value as its first publication event, at once; a client that was
// away resubscribes and gets only the newest value, however many went by.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, newSub, closeClients, nextEvent, waitUntil, uniq } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({
    config: {
      namespaces: {
        status: { history_size: 1, history_ttl: '5m', allow_subscribe_for_client: true, latest_value: true },
      },
    },
  });
});
afterEach(closeClients);
after(() => node?.stop());

test('a new subscription starts with the newest value', { timeout: 20000 }, async () => {
  const channel = `status:${uniq('api')}`;
  for (const state of ['ok', 'degraded', 'down']) await node.publish(channel, { state });
  const client = newClient(node, { user: uniq('u') });
  const sub = newSub(client, channel);
  const subscribed = nextEvent(sub, 'subscribed');
  client.connect();
  sub.subscribe();
  await subscribed;
  await waitUntil(() => sub.pubs.length === 1, { what: 'the newest value', explain: client.explain });
  assert.deepEqual(sub.pubs[0].data, { state: 'down' });
  assert.equal(sub.pubs[0].offset, 3);
  await node.publish(channel, { state: 'ok' });
  await waitUntil(() => sub.pubs.length === 2, { what: 'the next value', explain: client.explain });
  assert.deepEqual(sub.pubs.map((p) => p.offset), [3, 4]);
});

test('coming back, the resubscription brings only the newest value', { timeout: 20000 }, async () => {
  const channel = `status:${uniq('db')}`;
  await node.publish(channel, { n: 1 });
  const client = newClient(node, { user: uniq('u') });
  const sub = newSub(client, channel);
  const subscribed = nextEvent(sub, 'subscribed');
  client.connect();
  sub.subscribe();
  const first = await subscribed;
  await waitUntil(() => sub.pubs.length === 1, { what: 'the first value', explain: client.explain });
  assert.equal(first.recovered, true);

  // Away while 20 values go by; the SDK resubscribes with its position when it
  // connects again.
  client.disconnect();
  for (let n = 2; n <= 21; n++) await node.publish(channel, { n });
  const again = nextEvent(sub, 'subscribed');
  client.connect();
  const ctx = await again;
  assert.equal(ctx.wasRecovering, true, client.explain());
  assert.equal(ctx.recovered, true, client.explain());
  await waitUntil(() => sub.pubs.length === 2, { what: 'the newest value after the drop', explain: client.explain });
  assert.deepEqual(sub.pubs.map((p) => p.data.n), [1, 21]);
  assert.deepEqual(sub.pubs.map((p) => p.offset), [1, 21]);
});
