// The JSON protocol by hand, for what the SDK never does: stay silent, send garbage,
// binary frames, unknown methods, batched commands. The server must answer with the
// documented error or close code, and never crash.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, rawClient, closeClients, uniq, within } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({ config: { client: { connect_timeout: '1s', max_channels: 3 } } });
});
afterEach(closeClients);
after(async () => {
  // Whatever was thrown at it, the node is still serving.
  const res = await fetch(`${node.url}/readyz`);
  assert.equal(res.status, 200, node.logs());
  const exit = await node?.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, node.logs());
});

/** A raw client that has connected (as user `user`). */
async function connectedRaw(user = 'raw') {
  const raw = rawClient(node);
  await raw.connect(node.token({ sub: user }));
  return raw;
}

/** Waits for the server to close `raw`; asserts the code (and reason). */
async function assertClosed(raw, code, reason, timeout = 3000) {
  const closed = await within(raw.closed, timeout);
  assert.ok(closed, `not closed within ${timeout} ms\n${raw.explain()}`);
  assert.equal(closed.code, code, raw.explain());
  if (reason) assert.equal(closed.reason, reason, raw.explain());
  return closed;
}

describe('timeouts', () => {
  test('a socket that never sends connect is closed with 3502 after connect_timeout', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.opened;
    const start = Date.now();
    const closed = await assertClosed(raw, 3502, 'stale', 4000);
    const elapsed = closed.at - start;
    assert.ok(elapsed >= 900 && elapsed <= 2500, `closed after ${elapsed} ms, connect_timeout is 1 s`);
  });

  test('a connected socket is not closed by connect_timeout', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    assert.equal(await within(raw.closed, 1800), null, raw.explain());
  });
});

describe('malformed input', () => {
  test('malformed JSON after connect: 3501', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    raw.send('{"id":2,"subscribe":');
    await assertClosed(raw, 3501, 'bad request');
  });

  test('malformed JSON before connect: 3501', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.opened;
    raw.send('hello');
    await assertClosed(raw, 3501);
  });

  test('a line that is JSON but not an object: 3501', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    raw.send('[1,2,3]');
    await assertClosed(raw, 3501);
  });

  test('a binary frame: 3501', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    raw.ws.send(Buffer.from(JSON.stringify({ id: 2, subscribe: { channel: 'x' } })), { binary: true });
    await assertClosed(raw, 3501);
  });

  test('a frame larger than max_frame_bytes: 1009 (RFC 6455 message too big)', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    raw.send({ id: 2, publish: { channel: uniq('feed'), data: { big: 'x'.repeat(70 * 1024) } } });
    await assertClosed(raw, 1009, 'message too big');
  });

  test('a command other than connect before connect: 3501', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.opened;
    raw.send({ id: 1, subscribe: { channel: uniq('feed') } });
    await assertClosed(raw, 3501);
  });

  test('a command without an id (not a pong or send): 3501', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    raw.send({ subscribe: { channel: uniq('feed') } });
    await assertClosed(raw, 3501);
  });

  test('a second connect on the same socket: 3501', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    raw.send({ id: 2, connect: { token: node.token({ sub: 'raw' }) } });
    await assertClosed(raw, 3501);
  });

  test('an invalid connection token: 3500', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.opened;
    raw.send({ id: 1, connect: { token: 'not.a.jwt' } });
    await assertClosed(raw, 3500, 'invalid token');
  });
});

describe('commands', () => {
  test('an unknown method with an id gets error 104 and the connection stays usable', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    const reply = await raw.command('frobnicate', { x: 1 });
    assert.equal(reply.error?.code, 104, raw.explain());
    assert.equal(typeof reply.error.message, 'string');
    assert.deepEqual(Object.keys(reply).sort(), ['error', 'id']);
    const channel = uniq('feed');
    const sub = await raw.command('subscribe', { channel });
    assert.ok(sub.subscribe, raw.explain());
    await node.publish(channel, { still: 'usable' });
    const push = await raw.next((m) => m.push?.pub, { what: 'publication push' });
    assert.deepEqual(push.push, { channel, pub: { data: { still: 'usable' }, offset: 1 } });
    assert.equal(raw.closeInfo, undefined);
  });

  test('errors that keep the connection: 108 not available, 106 channel limit', { timeout: 10000 }, async () => {
    const raw = await connectedRaw();
    // tiny has no presence; locked has no history: "not available" comes before permissions.
    assert.equal((await raw.command('presence', { channel: uniq('tiny:x') })).error?.code, 108, raw.explain());
    assert.equal((await raw.command('presence_stats', { channel: uniq('tiny:x') })).error?.code, 108, raw.explain());
    assert.equal((await raw.command('history', { channel: uniq('locked:x'), limit: 1 })).error?.code, 108, raw.explain());
    // max_channels is 3 on this node.
    for (let k = 0; k < 3; k++) {
      assert.ok((await raw.command('subscribe', { channel: uniq('feed') })).subscribe, raw.explain());
    }
    assert.equal((await raw.command('subscribe', { channel: uniq('feed') })).error?.code, 106, raw.explain());
    assert.equal(raw.closeInfo, undefined, raw.explain());
  });

  test('several commands in one frame are all answered, in order', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.opened;
    const [a, b] = [uniq('feed'), uniq('feed')];
    raw.send(
      [
        { id: 1, connect: { token: node.token({ sub: 'batcher' }) } },
        { id: 2, subscribe: { channel: a } },
        { id: 3, subscribe: { channel: b } },
        { id: 4, subscribe: { channel: 'nope:x' } },
      ]
        .map((c) => JSON.stringify(c))
        .join('\n'),
    );
    await raw.next((m) => m.id === 4, { what: 'reply 4' });
    const replies = raw.messages.filter((m) => m.id);
    assert.deepEqual(replies.map((m) => m.id), [1, 2, 3, 4], raw.explain());
    assert.ok(replies[0].connect && replies[1].subscribe && replies[2].subscribe, raw.explain());
    assert.equal(replies[3].error?.code, 102, raw.explain());
  });

  test('refresh: an expired token gets 109 and the connection stays; another user\'s token is 3500', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: 'eve', ttl: 60 }));
    const ok = await raw.command('refresh', { token: node.token({ sub: 'eve', ttl: 120 }) });
    assert.equal(ok.refresh?.expires, true, raw.explain());
    assert.ok(ok.refresh.ttl > 60 && ok.refresh.ttl <= 120, raw.explain());
    const expired = await raw.command('refresh', { token: node.token({ sub: 'eve', ttl: -10 }) });
    assert.equal(expired.error?.code, 109, raw.explain());
    raw.send({ id: 99, refresh: { token: node.token({ sub: 'mallory', ttl: 60 }) } });
    await assertClosed(raw, 3500);
  });

  test('send has no reply; a trailing newline is fine', { timeout: 10000 }, async () => {
    const raw = rawClient(node);
    await raw.opened;
    raw.send(`${JSON.stringify({ id: 1, connect: { token: node.token({ sub: 'x' }) } })}\n`);
    raw.nextId = 2; // id 1 was used by hand
    await raw.next((m) => m.id === 1 && m.connect, { what: 'connect reply' });
    raw.send({ send: { data: { fire: 'and forget' } } });
    const reply = await raw.command('subscribe', { channel: uniq('feed') });
    assert.ok(reply.subscribe, raw.explain());
    assert.deepEqual(raw.messages.map((m) => m.id), [1, 2], `only the two replies\n${raw.explain()}`);
  });
});
