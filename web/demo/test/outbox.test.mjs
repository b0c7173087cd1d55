// The transactional outbox: every committed change reaches Herald's entity channels,
// to the right audiences, exactly once, in order, and at once; also while Herald is
// down for a while and when a reply is lost. Read back through Herald's history API,
// and live through real connections holding the demo's tokens.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  ENTITIES_NAMESPACE,
  closeClients,
  history,
  rawClient,
  restartNode,
  sleep,
  startDemo,
  startHerald,
  startNode,
  waitUntil,
} from './helpers.mjs';

const PUBLIC_SCOPES = (id) => ['entities:all', 'entities:applications', `entities:applications.${id}`];
const RESTRICTED_SCOPES = (id) => PUBLIC_SCOPES(id).map((c) => `$${c}`);

/** The events of entity `id` in `channel`, as `action@version` strings. */
async function eventsOf(node, channel, id) {
  return (await history(node, channel)).filter((e) => e.entity_id === id).map((e) => `${e.action}@${e.version}`);
}

describe('publishing through the outbox', () => {
  let node;
  let demo;

  before(async () => {
    node = await startNode();
    demo = await startDemo(node);
  });
  after(async () => {
    await demo?.stop();
    await node?.stop();
  });
  afterEach(closeClients);

  test('a public entity: every change to the three scopes of both audiences, exactly once', async () => {
    const e = await demo.create('bob', { name: 'Ledger' });
    const e2 = await demo.patch('alice', e, { status: 'paused' });
    await demo.remove('bob', e2);
    await demo.drained();

    for (const channel of [...PUBLIC_SCOPES(e.id), ...RESTRICTED_SCOPES(e.id)]) {
      assert.deepEqual(await eventsOf(node, channel, e.id), ['created@1', 'updated@2', 'deleted@3'], channel);
    }
    const events = (await history(node, `entities:applications.${e.id}`)).filter((x) => x.entity_id === e.id);
    const [created, updated, deleted] = events;
    assert.deepEqual(created, {
      entity_type: 'applications',
      entity_id: e.id,
      action: 'created',
      actor: 'bob',
      version: 1,
      timestamp: e.updated_at,
      payload: e,
    });
    assert.equal(updated.actor, 'alice');
    assert.deepEqual(updated.payload, e2);
    assert.equal(updated.timestamp, e2.updated_at);
    assert.equal(deleted.actor, 'bob');
    assert.equal(deleted.payload, null);
    assert.ok(deleted.timestamp >= e2.updated_at);
  });

  test('a restricted entity: only the restricted audience', async () => {
    const r = await demo.create('alice', { name: 'Payroll', restricted: true });
    const r2 = await demo.patch('bob', r, { name: 'Payroll 2' });
    await demo.remove('alice', r2);
    await demo.drained();
    for (const channel of RESTRICTED_SCOPES(r.id)) {
      assert.deepEqual(await eventsOf(node, channel, r.id), ['created@1', 'updated@2', 'deleted@3'], channel);
    }
    for (const channel of PUBLIC_SCOPES(r.id)) {
      assert.deepEqual(await eventsOf(node, channel, r.id), [], channel);
    }
  });

  test('visibility changes: the public audience sees it disappear and reappear', async () => {
    const e = await demo.create('bob', { name: 'Switch' }); // v1 public
    const hidden = await demo.patch('alice', e, { restricted: true }); // v2 restricted
    const hidden2 = await demo.patch('bob', hidden, { name: 'Switch (hidden)' }); // v3 restricted
    const shown = await demo.patch('alice', hidden2, { restricted: false, name: 'Switch' }); // v4 public
    await demo.drained();

    for (const channel of RESTRICTED_SCOPES(e.id)) {
      assert.deepEqual(
        await eventsOf(node, channel, e.id),
        ['created@1', 'updated@2', 'updated@3', 'updated@4'],
        channel,
      );
    }
    for (const channel of PUBLIC_SCOPES(e.id)) {
      assert.deepEqual(await eventsOf(node, channel, e.id), ['created@1', 'deleted@2', 'created@4'], channel);
    }
    const pub = (await history(node, `entities:applications.${e.id}`)).filter((x) => x.entity_id === e.id);
    assert.equal(pub[1].payload, null, 'the public "deleted" carries nothing of the now restricted entity');
    assert.equal(pub[1].actor, 'alice');
    assert.deepEqual(pub[2].payload, shown, 'the public "created" carries the whole entity');
    const restricted = (await history(node, `$entities:applications.${e.id}`)).filter((x) => x.entity_id === e.id);
    assert.deepEqual(restricted[1].payload, hidden);
    assert.deepEqual(restricted[2].payload, hidden2);
  });

  test('a commit wakes the publisher at once (no polling delay)', async () => {
    await demo.drained();
    const latencies = [];
    for (let i = 0; i < 5; i++) {
      const t0 = Date.now();
      const e = await demo.create('bob', { name: `Fast ${i}` });
      await waitUntil(async () => (await eventsOf(node, `entities:applications.${e.id}`, e.id)).length === 1, {
        timeout: 2000,
        interval: 5,
        what: `event of ${e.id}`,
      });
      latencies.push(Date.now() - t0);
    }
    // The safety sweep runs every 5 s; a woken publisher takes milliseconds.
    assert.ok(Math.max(...latencies) < 1000, `latencies ${latencies.join(', ')} ms`);
  });

  test('outbox counts: pending and sent', async () => {
    const before = await demo.drained();
    const e = await demo.create('bob', { name: 'Counted' }); // 1 row
    const e2 = await demo.patch('bob', e, { restricted: true }); // 2 rows
    await demo.remove('bob', e2); // 1 row
    const after = await demo.drained();
    assert.deepEqual(after, { pending: 0, sent: before.sent + 4 });
  });

  test('live: alice (with a subscription token) gets every event, carol never a restricted one', async () => {
    const token = async (user) => (await demo.get('/api/herald/token', { user })).text;
    const subToken = async (user, channel) =>
      (await demo.get(`/api/herald/subscription-token?channel=${encodeURIComponent(channel)}`, { user })).text;

    const alice = rawClient(node);
    await alice.connect(await token('alice'));
    const aliceSub = await alice.command('subscribe', {
      channel: '$entities:applications',
      token: await subToken('alice', '$entities:applications'),
    });
    assert.ok(aliceSub.subscribe, alice.explain());

    const carol = rawClient(node);
    await carol.connect(await token('carol'));
    // Herald itself refuses carol the restricted audience: she has no subscription token.
    const denied = await carol.command('subscribe', { channel: '$entities:applications' });
    assert.ok(denied.error, carol.explain());
    const stolen = await carol.command('subscribe', {
      channel: '$entities:applications',
      token: await subToken('alice', '$entities:applications'),
    });
    assert.ok(stolen.error, `alice's subscription token does not work for carol\n${carol.explain()}`);
    assert.ok((await carol.command('subscribe', { channel: 'entities:applications' })).subscribe, carol.explain());

    const secret = await demo.create('bob', { name: 'Secret', restricted: true });
    const open = await demo.create('bob', { name: 'Open' });
    const open2 = await demo.patch('bob', open, { restricted: true });
    const secret2 = await demo.patch('bob', secret, { name: 'Secret 2' });
    await demo.remove('bob', secret2);
    await demo.remove('bob', open2);
    await demo.drained();

    const seen = (client) =>
      client.messages
        .filter((m) => m.push?.pub)
        .map((m) => m.push.pub.data)
        .filter((d) => d.entity_id === secret.id || d.entity_id === open.id)
        .map((d) => `${d.entity_id === secret.id ? 'secret' : 'open'} ${d.action}@${d.version}`);
    const aliceWants = [
      'secret created@1',
      'open created@1',
      'open updated@2',
      'secret updated@2',
      'secret deleted@3',
      'open deleted@3',
    ];
    await waitUntil(() => seen(alice).length >= aliceWants.length, { what: "alice's events", explain: () => alice.explain() });
    assert.deepEqual(seen(alice), aliceWants);

    await waitUntil(() => seen(carol).length >= 2, { what: "carol's events", explain: () => carol.explain() });
    await sleep(200); // anything else would have arrived by now
    assert.deepEqual(seen(carol), ['open created@1', 'open deleted@2']);
    const frames = carol.transcript.entries.filter((e) => e.kind === '<').map((e) => e.text);
    assert.ok(!frames.some((f) => f.includes(secret.id)), 'no frame to carol names the restricted entity');
    assert.ok(!frames.some((f) => f.includes('Secret')), 'no frame to carol carries its data');
  });
});

describe('when Herald is unreachable', () => {
  test('changes made while Herald is down are published once it is back, once each, in order', async () => {
    let node = await startNode();
    const demo = await startDemo(node);
    try {
      const before = await demo.create('bob', { name: 'Before' });
      await demo.drained();

      await node.stop();
      const a = await demo.create('bob', { name: 'During' });
      const a2 = await demo.patch('alice', a, { status: 'retired' });
      const b = await demo.create('alice', { name: 'During (restricted)', restricted: true });
      assert.deepEqual(
        (await demo.get('/api/applications', { user: 'bob' })).body.slice(0, 3).map((e) => e.id),
        [b.id, a.id, before.id],
        'the API keeps working while Herald is down',
      );
      await sleep(400); // a few failed tries
      assert.deepEqual(await demo.outbox(), { pending: 3, sent: 1 });
      assert.match(demo.stderr, /outbox: cannot publish #2 \(request failed: /);

      node = await restartNode(node);
      await demo.drained({ timeout: 10000 });
      assert.deepEqual(await demo.outbox(), { pending: 0, sent: 4 });

      const all = (await history(node, '$entities:all')).map((e) => `${e.entity_id} ${e.action}@${e.version}`);
      assert.deepEqual(all, [`${a.id} created@1`, `${a.id} updated@2`, `${b.id} created@1`]);
      const pub = (await history(node, 'entities:applications')).map((e) => `${e.entity_id} ${e.action}@${e.version}`);
      assert.deepEqual(pub, [`${a.id} created@1`, `${a.id} updated@2`]);
      assert.deepEqual((await history(node, `entities:applications.${a.id}`)).at(-1).payload, a2);
      assert.match(demo.stderr, /outbox: publishing again after/);
    } finally {
      await demo.stop();
      await node.stop();
    }
  });

  test('a lost reply is retried with the same idempotency key: published once', async () => {
    const node = await startNode();
    // A proxy to Herald that forwards every publish but, the first two times, drops
    // Herald's reply: the demo sees a failure although Herald did publish.
    let dropped = 0;
    const keys = [];
    const proxy = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        if (req.url === '/api/publish_entity') keys.push(JSON.parse(body).idempotency_key);
        const up = http.request(
          `${node.url}${req.url}`,
          { method: req.method, headers: { ...req.headers, host: `127.0.0.1:${node.port}` } },
          (upRes) => {
            const got = [];
            upRes.on('data', (c) => got.push(c));
            upRes.on('end', () => {
              if (req.url === '/api/publish_entity' && dropped < 2) {
                dropped++;
                res.destroy();
                return;
              }
              res.writeHead(upRes.statusCode, upRes.headers);
              res.end(Buffer.concat(got));
            });
          },
        );
        up.on('error', () => res.destroy());
        up.end(body);
      });
    });
    await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const demo = await startDemo(node, { heraldApi: `http://127.0.0.1:${proxy.address().port}` });
    try {
      const e = await demo.create('bob', { name: 'Once' });
      const e2 = await demo.patch('bob', e, { name: 'Twice?' });
      await demo.drained();
      assert.equal(dropped, 2);
      assert.equal(keys.length, 4, `two lost replies and two successful tries: ${keys.join(', ')}`);
      assert.equal(keys[0], keys[1], 'the retry reuses the key');
      assert.equal(keys[1], keys[2], 'and again');
      assert.notEqual(keys[2], keys[3]);
      assert.match(keys[0], /^demo-outbox-[0-9a-f]{8}-1$/);
      assert.match(keys[3], /^demo-outbox-[0-9a-f]{8}-2$/);
      for (const channel of [...PUBLIC_SCOPES(e.id), ...RESTRICTED_SCOPES(e.id)]) {
        assert.deepEqual(await eventsOf(node, channel, e.id), ['created@1', 'updated@2'], channel);
      }
      assert.deepEqual((await history(node, `entities:applications.${e.id}`))[1].payload, e2);
    } finally {
      await demo.stop();
      await new Promise((resolve) => proxy.close(resolve));
      await node.stop();
    }
  });

  test('an error reply (no entities namespace) keeps the row until Herald accepts it', async () => {
    // A node without the entities namespace refuses every publish_entity.
    const bare = await startHerald();
    const demo = await startDemo(bare);
    let node;
    try {
      const e = await demo.create('bob', { name: 'Refused' });
      await sleep(300);
      assert.deepEqual(await demo.outbox(), { pending: 1, sent: 0 });
      assert.match(demo.stderr, /outbox: cannot publish #1 \(HTTP 200: error 102/);
      await bare.stop();
      node = await startHerald2(bare);
      await demo.drained();
      assert.deepEqual(await eventsOf(node, '$entities:all', e.id), ['created@1']);
    } finally {
      await demo.stop();
      await bare.stop();
      await node?.stop();
    }
  });
});

/** `stopped` restarted on its port with the same keys, now with the entities namespace. */
function startHerald2(stopped) {
  return startHerald({
    ...stopped.spec,
    base: {},
    port: stopped.port,
    config: { ...stopped.spec.config, namespaces: { ...stopped.spec.config.namespaces, entities: ENTITIES_NAMESPACE } },
  });
}
