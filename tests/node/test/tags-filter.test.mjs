// Tag filters with the real npm SDK's `tagsFilter` option, JSON and Protobuf: a
// subscription receives only the publications whose tags pass its filter, live and
// after coming back (recovery skips what the filter excludes), while a subscription
// without one receives everything.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, newSub, closeClients, nextEvent, waitUntil, uniq, fromJsonBytes } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({
    config: {
      namespaces: {
        tasks: { history_size: 100, history_ttl: '5m', allow_subscribe_for_client: true, allow_tags_filter: true },
      },
    },
  });
});
afterEach(closeClients);
after(() => node?.stop());

const boardIs = (id) => ({ key: 'board', cmp: 'eq', val: id });
const publish = (channel, n, board) => node.publish(channel, { n }, { tags: { board } });

for (const protobuf of [false, true]) {
  const label = protobuf ? 'Protobuf' : 'JSON';
  const n = (ctx) => (protobuf ? fromJsonBytes(ctx.data) : ctx.data).n;

  test(`${label}: only matching publications arrive, live and recovered`, { timeout: 30000 }, async () => {
    const channel = `tasks:${uniq('board')}`;
    const client = newClient(node, { user: uniq('u'), protobuf });
    const filtered = newSub(client, channel, {
      tagsFilter: { op: 'or', nodes: [boardIs('7'), { key: 'board', cmp: 'in', vals: ['9'] }] },
    });
    const everything = newSub(client, `${channel}`.replace('tasks:', 'tasks:all-'));
    const ready = [nextEvent(filtered, 'subscribed'), nextEvent(everything, 'subscribed')];
    client.connect();
    filtered.subscribe();
    everything.subscribe();
    await Promise.all(ready);

    for (let i = 1; i <= 12; i++) {
      const board = String(6 + (i % 4));
      await publish(channel, i, board);
      await publish(`${channel}`.replace('tasks:', 'tasks:all-'), i, board);
    }
    // Boards 7 8 9 6 7 8 9 6 7 8 9 6: the 7s and 9s.
    const wanted = [1, 3, 5, 7, 9, 11];
    await waitUntil(() => filtered.pubs.length >= wanted.length && everything.pubs.length >= 12, {
      what: 'the live publications',
      explain: client.explain,
    });
    assert.deepEqual(filtered.pubs.map(n), wanted);
    assert.deepEqual(filtered.pubs.map((p) => p.offset), wanted);
    assert.equal(everything.pubs.length, 12);

    // Away for 8 more: recovery brings back only the matching ones.
    client.disconnect();
    for (let i = 13; i <= 20; i++) await publish(channel, i, String(6 + (i % 4)));
    const again = nextEvent(filtered, 'subscribed');
    client.connect();
    const ctx = await again;
    assert.equal(ctx.recovered, true, client.explain());
    await waitUntil(() => filtered.pubs.length >= wanted.length + 4, { what: 'the recovered ones', explain: client.explain });
    assert.deepEqual(filtered.pubs.map(n), [...wanted, 13, 15, 17, 19]);
  });
}

test('a namespace that does not allow filters refuses the subscription with 107', { timeout: 20000 }, async () => {
  const other = await startHerald({
    config: { namespaces: { plain: { allow_subscribe_for_client: true } } },
  });
  try {
    const client = newClient(other, { user: uniq('u') });
    const sub = newSub(client, 'plain:x', { tagsFilter: boardIs('7') });
    // A permanent error: the SDK gives the subscription up with the code.
    const refused = nextEvent(sub, 'unsubscribed');
    client.connect();
    sub.subscribe();
    const ctx = await refused;
    assert.equal(ctx.code, 107, client.explain());
    client.disconnect();
  } finally {
    await other.stop();
  }
});
