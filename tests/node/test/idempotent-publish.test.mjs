// The client `publish` command's `idempotency_key`, a Herald extension: the real SDK's
// ordinary publish is unchanged on the wire, and a keyed publish sent through the same
// SDK connection (or a raw socket) publishes once and returns the first position.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, newSub, rawClient, closeClients, nextEvent, waitUntil, sleep, uniq } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald();
});
afterEach(closeClients);
after(() => node?.stop());

/** A connected SDK client of `user` with a subscription to `channel`. */
async function subscribed(user, channel) {
  const client = newClient(node, { user });
  const sub = newSub(client, channel);
  const ok = nextEvent(sub, 'subscribed', { explain: client.explain });
  sub.subscribe();
  client.connect();
  await ok;
  await client.ready();
  return { client, sub };
}

/** Every JSON line the transcript saw in direction `dir` ('>' sent, '<' received). */
function lines(client, dir) {
  return client.transcript.entries
    .filter((e) => e.kind === dir)
    .flatMap((e) => e.text.split('\n'))
    .filter((l) => l.trim() !== '');
}

/** The exact text of the reply to the publish command carrying `data`. */
function publishReplyText(client, data) {
  const sent = lines(client, '>')
    .map((l) => JSON.parse(l))
    .find((c) => c.publish && JSON.stringify(c.publish.data) === JSON.stringify(data));
  assert.ok(sent, `publish of ${JSON.stringify(data)} not sent\n${client.explain()}`);
  const reply = lines(client, '<').find((l) => JSON.parse(l).id === sent.id);
  assert.ok(reply, `no reply to publish id=${sent.id}\n${client.explain()}`);
  return { id: sent.id, command: sent, reply };
}

test('the SDK publish is unchanged: no key sent, reply exactly {}', { timeout: 10000 }, async () => {
  const channel = uniq('idem');
  const { client, sub } = await subscribed('sdk-plain', channel);
  const result = await client.publish(channel, { n: 1 });
  assert.deepEqual(result, {});
  await waitUntil(() => sub.pubs.length === 1, { what: 'own publication', explain: client.explain });
  assert.equal(sub.pubs[0].offset, 1, client.explain());
  const { id, command, reply } = publishReplyText(client, { n: 1 });
  assert.equal(command.publish.idempotency_key, undefined, client.explain());
  assert.equal(reply, `{"id":${id},"publish":{}}`, client.explain());
});

test('a keyed publish through the SDK connection publishes once', { timeout: 10000 }, async () => {
  const channel = uniq('idem');
  const { client, sub } = await subscribed('sdk-keyed', channel);
  const keyed = (data) =>
    client._callPromise({ publish: { channel, data, idempotency_key: 'order-42' } }, (r) => r.publish);
  const first = await keyed({ n: 1 });
  const again = await keyed({ n: 2 });
  assert.equal(first.offset, 1, client.explain());
  assert.equal(typeof first.epoch, 'string');
  assert.ok(first.epoch.length > 0, client.explain());
  assert.deepEqual(again, first, client.explain());

  const history = await client.history(channel, { limit: 10 });
  assert.equal(history.publications.length, 1, JSON.stringify(history));
  assert.deepEqual(history.publications[0].data, { n: 1 });
  assert.equal(history.offset, first.offset);
  assert.equal(history.epoch, first.epoch);

  await waitUntil(() => sub.pubs.length === 1, { what: 'the publication', explain: client.explain });
  await sleep(300);
  assert.equal(sub.pubs.length, 1, `the duplicate was delivered\n${client.explain()}`);

  // The ordinary SDK publish on the same connection is unaffected.
  assert.deepEqual(await client.publish(channel, { n: 3 }), {});
  const { id, reply } = publishReplyText(client, { n: 3 });
  assert.equal(reply, `{"id":${id},"publish":{}}`, client.explain());
});

test('raw frames: same key same position, other user separate, 257 bytes is 107', { timeout: 10000 }, async () => {
  const channel = uniq('idem');
  const connect = async (user) => {
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: user }));
    const sub = await raw.command('subscribe', { channel });
    assert.ok(sub.subscribe, raw.explain());
    return raw;
  };
  const alice = await connect('raw-alice');
  const bob = await connect('raw-bob');
  const publish = (raw, data, idempotency_key) =>
    raw.command('publish', idempotency_key === undefined ? { channel, data } : { channel, data, idempotency_key });

  const first = await publish(alice, 1, 'k');
  assert.equal(first.publish?.offset, 1, alice.explain());
  const again = await publish(alice, 2, 'k');
  assert.deepEqual(again.publish, first.publish, alice.explain());
  const bobs = await publish(bob, 3, 'k');
  assert.deepEqual(bobs.publish, { offset: 2, epoch: first.publish.epoch }, bob.explain());

  const plain = await publish(alice, 4);
  const text = alice.transcript.entries
    .filter((e) => e.kind === '<')
    .flatMap((e) => e.text.split('\n'))
    .find((l) => JSON.parse(l).id === plain.id);
  assert.equal(text, `{"id":${plain.id},"publish":{}}`, alice.explain());

  const tooLong = await publish(alice, 5, 'x'.repeat(257));
  assert.equal(tooLong.error?.code, 107, alice.explain());
  const atLimit = await publish(alice, 6, 'x'.repeat(256));
  assert.equal(atLimit.publish?.offset, 4, alice.explain());

  const { publications } = await node.api('history', { channel, limit: 10 });
  assert.deepEqual(
    publications.map((p) => p.data),
    [1, 3, 4, 6],
  );
});
