// Connecting with the real SDK: tokens, expired and invalid tokens. (Token refresh
// over time is in expiry.test.mjs.)

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald,
  newClient,
  closeClients,
  nextEvent,
  signJwt,
  randomHex,
  nowSeconds,
  sleep,
} from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald();
});
afterEach(closeClients);
after(() => node?.stop());

test('connect with a token: connected event carries a client id', { timeout: 10000 }, async () => {
  const client = newClient(node, { user: 'alice' });
  const connected = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  const ctx = await connected;
  assert.equal(typeof ctx.client, 'string', client.explain());
  assert.match(ctx.client, /^[0-9a-f-]{36}$/, `client id should be a UUID\n${client.explain()}`);
  assert.equal(ctx.transport, 'websocket');
  assert.equal(client.state, 'connected');

  // The connect reply announces ping/pong so the SDK answers server pings.
  const reply = client.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"connect"'));
  const connect = JSON.parse(reply.text.split('\n')[0]).connect;
  assert.equal(connect.client, ctx.client);
  assert.equal(connect.ping, 25);
  assert.equal(connect.pong, true);
  assert.ok(connect.version, 'connect reply has a server version');
  assert.equal(connect.expires, undefined, 'a token without exp does not expire');
});

test('two connections of the same user get different client ids', { timeout: 10000 }, async () => {
  const a = newClient(node, { user: 'alice' });
  const b = newClient(node, { user: 'alice' });
  const ca = nextEvent(a, 'connected');
  const cb = nextEvent(b, 'connected');
  a.connect();
  b.connect();
  const [x, y] = await Promise.all([ca, cb]);
  assert.notEqual(x.client, y.client);
});

test('a token signed with another secret is refused with 3500 and no reconnect', { timeout: 10000 }, async () => {
  const client = newClient(node, { token: signJwt(randomHex(32), { sub: 'mallory' }) });
  const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
  client.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 3500, client.explain());
  await sleep(300);
  assert.equal(client.state, 'disconnected', `the SDK must not reconnect after 3500\n${client.explain()}`);
  assert.equal(client.sockets.length, 1, client.explain());
});

test('HS384 and HS512 tokens are accepted; alg none and a tampered payload are refused', { timeout: 10000 }, async () => {
  for (const alg of ['HS384', 'HS512']) {
    const client = newClient(node, { token: signJwt(node.secret, { sub: `user-${alg}` }, { alg }) });
    const connected = nextEvent(client, 'connected', { explain: client.explain });
    client.connect();
    await connected;
    client.disconnect();
  }
  const unsigned = signJwt(node.secret, { sub: 'mallory' }, { alg: 'none' });
  const [head, , sig] = node.token({ sub: 'alice' }).split('.');
  const tampered = [head, Buffer.from(JSON.stringify({ sub: 'admin' })).toString('base64url'), sig].join('.');
  for (const token of [unsigned, tampered]) {
    const client = newClient(node, { token });
    const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
    client.connect();
    assert.equal((await disconnected).code, 3500, client.explain());
  }
});

test('a connection without a token is refused when anonymous clients are not allowed', { timeout: 10000 }, async () => {
  const client = newClient(node, { token: '' });
  const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
  client.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 3500, client.explain());
});

test('an already expired token with getToken ends up connected', { timeout: 10000 }, async () => {
  let calls = 0;
  const client = newClient(node, {
    user: 'dave',
    token: signJwt(node.secret, { sub: 'dave', exp: nowSeconds() - 60 }),
    getToken: async () => {
      calls += 1;
      return node.token({ sub: 'dave', ttl: 60 });
    },
  });
  const connected = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  await connected;
  assert.equal(calls, 1, client.explain());
  // The first connect was answered with 109 (token expired), not a disconnect.
  const first = client.transcript.entries.find((e) => e.kind === '<');
  assert.match(first.text, /"error":\{"code":109/, client.explain());
  assert.equal(client.state, 'connected');
});

test('an expired token without getToken is not accepted', { timeout: 10000 }, async () => {
  const client = newClient(node, {
    user: 'erin',
    token: signJwt(node.secret, { sub: 'erin', exp: nowSeconds() - 60 }),
  });
  const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
  client.connect();
  await disconnected;
  assert.equal(client.state, 'disconnected');
  const first = client.transcript.entries.find((e) => e.kind === '<');
  assert.match(first.text, /"error":\{"code":109/, client.explain());
});
