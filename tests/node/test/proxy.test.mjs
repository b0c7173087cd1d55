// Proxy hooks with the real npm SDK: a tiny `node:http` backend in this file answers
// every hook (connect, subscribe, publish, rpc, refresh, sub_refresh) the way an
// application would, and the SDK — connecting with a session cookie and no token, as a
// browser does — is let in or refused by it, subscribes with its data and its tag
// filter, publishes through it and calls it. A node whose hooks point at a closed port
// lets nobody in and the SDK keeps retrying. (tests/tests/proxy.rs has the same
// scenarios at the protocol level.)

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import {
  jsonBytes,
  fromJsonBytes,
  startHerald,
  newClient,
  newSub,
  closeClients,
  nextEvent,
  waitUntil,
  uniq,
  freePort,
  sleep,
} from '../lib/herald.mjs';

// ---------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------

const STATIC_KEY = 's3cret';

/** What the backend answers, by hook. `body` is Herald's request, `headers` its headers. */
const answers = {
  connect(body, headers) {
    const session = /(?:^|;\s*)session=([^;]+)/.exec(headers.cookie ?? '')?.[1];
    if (session === undefined) return { error: { code: 101, message: 'unauthorized' } };
    if (session === 'banned') return { disconnect: { code: 4501, reason: 'banned' } };
    return {
      result: {
        user: session,
        info: { name: session.toUpperCase() },
        data: { welcome: session },
        channels: [`news-${session}`],
      },
    };
  },
  subscribe(body) {
    const [kind] = body.channel.replace(/^board:/, '').split('-');
    if (kind === 'open') return { result: { data: { columns: 3, for: body.user } } };
    // Only board 7's tasks, whatever the client asks for.
    if (kind === 'tasks') return { result: { tags_filter: { key: 'board', cmp: 'eq', val: '7' } } };
    return { error: { code: 103, message: 'permission denied' } };
  },
  publish(body) {
    if (body.channel.startsWith('board:readonly')) return { error: { code: 103, message: 'read only' } };
    return {
      result: {
        data: { text: String(body.data?.text ?? '').toUpperCase(), by: body.user },
        tags: { kind: 'note' },
      },
    };
  },
  rpc(body) {
    if (body.method === 'whoami') return { result: { data: { user: body.user, echo: body.data } } };
    if (body.method === 'kick') return { disconnect: { code: 4000, reason: 'kicked' } };
    return { error: { code: 1001, message: 'unknown method' } };
  },
  refresh() {
    return { result: { expire_at: 0 } };
  },
  sub_refresh() {
    return { result: { expire_at: 0 } };
  },
};

/** The backend: a node:http server recording every call it answers. */
async function startBackend() {
  const calls = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const hook = req.url.replace(/^\//, '');
      let body;
      try {
        body = JSON.parse(raw);
      } catch {
        body = { unparsable: raw };
      }
      calls.push({ hook, method: req.method, headers: req.headers, body });
      const answer = answers[hook];
      if (!answer) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(answer(body, req.headers)));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    calls,
    /** The calls to `hook` so far, optionally only those `pred` accepts. */
    of: (hook, pred = () => true) => calls.filter((c) => c.hook === hook && pred(c)),
    explain: () =>
      `backend calls:\n${calls.map((c) => `  ${c.hook} ${JSON.stringify(c.body)} cookie=${c.headers.cookie ?? '-'}`).join('\n')}`,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}

/** The `[proxy]` settings with every hook at `base`, and the `board` namespace. */
function hooks(base) {
  const hook = (name) => ({ url: `${base}/${name}`, timeout: '500ms' });
  return {
    proxy: {
      forward_headers: ['cookie'],
      static_headers: { 'x-herald-key': STATIC_KEY },
      max_in_flight: 512,
      connect: hook('connect'),
      refresh: hook('refresh'),
      subscribe: hook('subscribe'),
      sub_refresh: hook('sub_refresh'),
      publish: hook('publish'),
      rpc: hook('rpc'),
    },
    namespaces: {
      board: {
        history_size: 100,
        history_ttl: '5m',
        subscribe_proxy: true,
        publish_proxy: true,
        sub_refresh_proxy: true,
      },
    },
  };
}

// ---------------------------------------------------------------------------------
// Clients that connect with request headers and no token, as a browser with a cookie
// ---------------------------------------------------------------------------------

/**
 * An SDK client without a token whose WebSocket upgrade request carries `headers`.
 * Its `ws` class is this file's, so it records frames into the client's transcript
 * itself (newClient's recording class is replaced by the `websocket` option).
 */
function headerClient(node, headers, options = {}) {
  let client;
  class HeaderWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { headers });
      client.sockets.push(this);
      const t = client.transcript;
      t.add('ws', `open ${url} headers=${JSON.stringify(headers)}`);
      this.on('message', (data, isBinary) => t.add('<', isBinary ? `<binary ${data.length} bytes>` : data.toString()));
      this.on('close', (code, reason) => t.add('ws', `closed ${code} ${reason.toString()}`));
      this.on('error', (e) => t.add('ws', `error ${e.message}`));
    }

    send(data, ...rest) {
      client.transcript.add('>', typeof data === 'string' ? data : `<binary ${data.length} bytes>`);
      return super.send(data, ...rest);
    }
  }
  client = newClient(node, { token: '', websocket: HeaderWebSocket, ...options });
  return client;
}

/** A client of `user` (the backend's session cookie), connected; resolves to it and its connected ctx. */
async function connectedAs(node, user) {
  const client = headerClient(node, { Cookie: `session=${user}` });
  const connected = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  return { client, ctx: await connected };
}

let backend;
let node;
before(async () => {
  backend = await startBackend();
  node = await startHerald({ config: hooks(backend.base) });
});
afterEach(closeClients);
after(async () => {
  await node?.stop();
  await backend?.stop();
});

const explainBoth = (client) => () => `${client.explain()}\n${backend.explain()}\nserver log:\n${node.logs(30)}`;

// ---------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------

test('the connect hook lets the SDK in by cookie and never sees a forged identity header', { timeout: 15000 }, async () => {
  const user = uniq('alice');
  const client = headerClient(node, { Cookie: `session=${user}`, 'X-User-Id': 'admin' });
  const explain = explainBoth(client);
  const connected = nextEvent(client, 'connected', { explain });
  // The backend's server-side subscription arrives as a client-level subscribed event.
  const serverSub = nextEvent(client, 'subscribed', { explain, filter: (ctx) => ctx.channel === `news-${user}` });
  client.connect();
  const ctx = await connected;
  assert.deepEqual(ctx.data, { welcome: user }, explain());
  assert.equal(ctx.transport, 'websocket');
  assert.equal(client.state, 'connected');
  await serverSub;

  const calls = backend.of('connect', (c) => c.headers.cookie === `session=${user}`);
  assert.equal(calls.length, 1, explain());
  const [call] = calls;
  assert.equal(call.method, 'POST');
  assert.equal(call.headers['content-type'], 'application/json');
  assert.equal(call.headers['x-user-id'], undefined, 'a header the client made up is never forwarded');
  assert.equal(call.headers['x-herald-key'], STATIC_KEY, 'the static header goes with every call');
  assert.equal(call.body.transport, 'websocket');
  assert.equal(call.body.protocol, 'json');
  assert.equal(call.body.encoding, 'json');
  assert.equal(call.body.name, 'js', 'the SDK’s default client name');
  assert.ok(call.body.client, `the connection's client id: ${JSON.stringify(call.body)}`);
  assert.equal('user' in call.body, false, `no user before authentication: ${JSON.stringify(call.body)}`);

  // A later call carries the identity the backend gave and the client id the SDK got.
  await client.rpc('whoami', {});
  const rpc = backend.of('rpc', (c) => c.headers.cookie === `session=${user}`).pop();
  assert.equal(rpc.body.user, user);
  assert.equal(rpc.body.client, ctx.client);
  assert.equal(call.body.client, ctx.client, 'the connect call names the same client id');
  assert.equal(rpc.headers['x-user-id'], undefined);
  assert.equal(rpc.headers['x-herald-key'], STATIC_KEY);

  assert.ok((await node.metric('herald_proxy_calls_total', { hook: 'connect', outcome: 'ok' })) >= 1);
});

test('a backend error 101 stops the SDK with that code, without reconnecting', { timeout: 15000 }, async () => {
  // No session cookie, only a made-up identity header: the backend refuses.
  const client = headerClient(node, { 'X-User-Id': 'alice' });
  const explain = explainBoth(client);
  const before = backend.of('connect').length;
  const disconnected = nextEvent(client, 'disconnected', { explain });
  client.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 101, explain());
  assert.equal(ctx.reason, 'unauthorized', explain());
  assert.equal(client.state, 'disconnected');
  // A permanent error: no second attempt (the reconnect delay here is 100 ms).
  await sleep(700);
  assert.equal(client.sockets.length, 1, explain());
  assert.equal(backend.of('connect').length - before, 1, explain());
  assert.equal(client.state, 'disconnected');
});

test('a backend disconnect 4501 closes the SDK with 4501, without reconnecting', { timeout: 15000 }, async () => {
  const client = headerClient(node, { Cookie: 'session=banned' });
  const explain = explainBoth(client);
  const before = backend.of('connect', (c) => c.headers.cookie === 'session=banned').length;
  const disconnected = nextEvent(client, 'disconnected', { explain });
  let connectedEvents = 0;
  client.on('connected', () => connectedEvents++);
  client.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 4501, explain());
  assert.equal(ctx.reason, 'banned', explain());
  assert.equal(client.state, 'disconnected');
  await sleep(700);
  assert.equal(connectedEvents, 0, explain());
  assert.equal(client.sockets.length, 1, `4500–4999 means no reconnect\n${explain()}`);
  assert.equal(backend.of('connect', (c) => c.headers.cookie === 'session=banned').length - before, 1, explain());
});

test('a backend that is down: error 100, temporary; the SDK keeps trying and never connects', { timeout: 20000 }, async () => {
  const gone = `http://127.0.0.1:${await freePort()}`;
  const down = await startHerald({ config: hooks(gone) });
  try {
    const client = headerClient(down, { Cookie: 'session=alice' });
    const explain = () => `${client.explain()}\nserver log:\n${down.logs(30)}`;
    let connectedEvents = 0;
    client.on('connected', () => connectedEvents++);
    const errors = [];
    client.on('error', (ctx) => errors.push(ctx));
    client.connect();
    await waitUntil(() => errors.length >= 3, { timeout: 6000, what: 'three connect errors', explain });
    for (const e of errors) {
      assert.equal(e.type, 'connect', explain());
      assert.equal(e.error.code, 100, explain());
      assert.equal(e.error.temporary, true, explain());
    }
    assert.equal(client.state, 'connecting', explain());
    assert.equal(connectedEvents, 0);
    assert.ok(client.sockets.length >= 3, `a new attempt each time\n${explain()}`);
    assert.ok(
      (await down.metric('herald_proxy_calls_total', { hook: 'connect', outcome: 'unreachable' })) >= 3,
      explain(),
    );
    client.disconnect();

    // A token still works without the backend; a subscription the backend must
    // authorize gets the same temporary error and the SDK retries it, while one in a
    // namespace without the hook is fine.
    const withToken = newClient(down, { user: uniq('u') });
    const board = newSub(withToken, `board:open-${uniq()}`);
    const plain = newSub(withToken, uniq('plain'));
    const boardError = nextEvent(board, 'error', { explain: withToken.explain });
    const plainSubscribed = nextEvent(plain, 'subscribed', { explain: withToken.explain });
    withToken.connect();
    board.subscribe();
    plain.subscribe();
    const err = await boardError;
    assert.equal(err.type, 'subscribe');
    assert.equal(err.error.code, 100, withToken.explain());
    assert.equal(err.error.temporary, true, withToken.explain());
    await plainSubscribed;
    assert.equal(board.state, 'subscribing', withToken.explain());
    assert.equal(plain.state, 'subscribed');
    assert.equal(withToken.state, 'connected');
  } finally {
    await closeClients();
    await down.stop();
  }
});

test('a backend disconnect 4000 (from the RPC hook) closes the SDK with 4000, and it reconnects', { timeout: 15000 }, async () => {
  // The contrast with 4501: 4000–4499 ask the SDK to come back.
  const user = uniq('alice');
  const { client, ctx: first } = await connectedAs(node, user);
  const explain = explainBoth(client);
  const connecting = nextEvent(client, 'connecting', { explain, filter: (ctx) => ctx.code === 4000 });
  const again = nextEvent(client, 'connected', { explain });
  await assert.rejects(client.rpc('kick', {}));
  const ctx = await connecting;
  assert.equal(ctx.reason, 'kicked', explain());
  const second = await again;
  assert.notEqual(second.client, first.client);
  assert.equal(client.state, 'connected');
  assert.equal(client.sockets.length, 2, explain());
  assert.equal(backend.of('connect', (c) => c.headers.cookie === `session=${user}`).length, 2, explain());
});

test('a Protobuf SDK: the hooks see protocol "protobuf" and JSON data, the client gets bytes', { timeout: 15000 }, async () => {
  const user = uniq('pb');
  const client = headerClient(node, { Cookie: `session=${user}` }, { protobuf: true, data: jsonBytes({ hello: 1 }) });
  const explain = explainBoth(client);
  const connected = nextEvent(client, 'connected', { explain });
  client.connect();
  const ctx = await connected;
  assert.deepEqual(fromJsonBytes(ctx.data), { welcome: user }, explain());
  const call = backend.of('connect', (c) => c.headers.cookie === `session=${user}`).pop();
  assert.equal(call.body.protocol, 'protobuf');
  assert.equal(call.body.encoding, 'json');
  assert.deepEqual(call.body.data, { hello: 1 }, 'the connect data, as JSON');

  const res = await client.rpc('whoami', jsonBytes({ n: 2 }));
  assert.deepEqual(fromJsonBytes(res.data), { user, echo: { n: 2 } }, explain());
  assert.equal(backend.of('rpc', (c) => c.body.user === user).pop().body.protocol, 'protobuf');
});

// ---------------------------------------------------------------------------------
// Subscribe
// ---------------------------------------------------------------------------------

test('the subscribe hook: data on subscribed, refusal on unsubscribed, its tag filter applied', { timeout: 20000 }, async () => {
  const user = uniq('alice');
  const { client, ctx: conn } = await connectedAs(node, user);
  const explain = explainBoth(client);

  // Authorized, with data for the SDK's subscribed event.
  const open = newSub(client, `board:open-${uniq()}`);
  const opened = nextEvent(open, 'subscribed', { explain });
  open.subscribe();
  const ctx = await opened;
  assert.deepEqual(ctx.data, { columns: 3, for: user }, explain());
  assert.equal(open.state, 'subscribed');
  const call = backend.of('subscribe', (c) => c.body.channel === open.channel).pop();
  assert.equal(call.body.user, user, explain());
  assert.equal(call.body.client, conn.client);
  assert.equal(call.headers.cookie, `session=${user}`);
  assert.equal(call.headers['x-herald-key'], STATIC_KEY);
  assert.equal('token' in call.body, false, `no token was sent: ${JSON.stringify(call.body)}`);

  // Refused: a permanent error unsubscribes with the backend's code.
  const closed = newSub(client, `board:closed-${uniq()}`);
  const refused = nextEvent(closed, 'unsubscribed', { explain });
  closed.subscribe();
  const no = await refused;
  assert.equal(no.code, 103, explain());
  assert.equal(no.reason, 'permission denied', explain());
  assert.equal(closed.state, 'unsubscribed');
  assert.equal(client.state, 'connected', 'a refused subscription leaves the connection alone');

  // The backend's filter: only board 7, though the client asked for no filter.
  const tasks = newSub(client, `board:tasks-${uniq()}`);
  const subscribed = nextEvent(tasks, 'subscribed', { explain });
  tasks.subscribe();
  await subscribed;
  for (const [n, board] of [
    [1, '7'],
    [2, '8'],
    [3, '7'],
    [4, '8'],
    [5, '7'],
  ]) {
    await node.publish(tasks.channel, { n }, { tags: { board } });
  }
  await waitUntil(() => tasks.pubs.some((p) => p.data.n === 5), { what: 'the last board-7 task', explain });
  assert.deepEqual(tasks.pubs.map((p) => p.data.n), [1, 3, 5], explain());
  assert.deepEqual(tasks.pubs.map((p) => p.offset), [1, 3, 5], explain());
  assert.deepEqual(tasks.pubs.map((p) => p.tags), [{ board: '7' }, { board: '7' }, { board: '7' }]);
});

// ---------------------------------------------------------------------------------
// RPC and publish
// ---------------------------------------------------------------------------------

test('RPC goes to the backend with the user it assigned; an unknown method rejects with its error', { timeout: 15000 }, async () => {
  const user = uniq('alice');
  const { client } = await connectedAs(node, user);
  const explain = explainBoth(client);
  const res = await client.rpc('whoami', { user: 'admin', n: 1 });
  assert.deepEqual(res.data, { user, echo: { user: 'admin', n: 1 } }, explain());
  const call = backend.of('rpc', (c) => c.body.user === user).pop();
  assert.equal(call.body.method, 'whoami');
  assert.deepEqual(call.body.data, { user: 'admin', n: 1 });
  assert.equal(call.headers.cookie, `session=${user}`);

  await assert.rejects(client.rpc('nope', {}), (err) => {
    assert.equal(err.code, 1001, `${JSON.stringify(err)}\n${explain()}`);
    assert.equal(err.message, 'unknown method');
    return true;
  });
  assert.equal(client.state, 'connected');
});

test('client publications go through the publish hook: rewritten data and tags reach subscribers', { timeout: 20000 }, async () => {
  const channel = `board:open-${uniq()}`;
  const alice = await connectedAs(node, uniq('alice'));
  const bob = await connectedAs(node, uniq('bob'));
  const aliceUser = alice.ctx.data.welcome;
  const subs = [alice.client, bob.client].map((c) => newSub(c, channel));
  const ready = subs.map((s, i) => nextEvent(s, 'subscribed', { explain: [alice, bob][i].client.explain }));
  for (const s of subs) s.subscribe();
  await Promise.all(ready);

  const explain = () => `${alice.client.explain()}\n${bob.client.explain()}\n${backend.explain()}`;
  await subs[0].publish({ text: 'hi' });
  await waitUntil(() => subs.every((s) => s.pubs.length >= 1), { what: 'the publication at both', explain });
  for (const s of subs) {
    assert.equal(s.pubs.length, 1, explain());
    assert.deepEqual(s.pubs[0].data, { text: 'HI', by: aliceUser }, explain());
    assert.deepEqual(s.pubs[0].tags, { kind: 'note' }, explain());
    assert.equal(s.pubs[0].offset, 1);
  }
  const call = backend.of('publish', (c) => c.body.channel === channel).pop();
  assert.deepEqual(call.body.data, { text: 'hi' }, 'the backend sees what the client sent');
  assert.equal(call.body.user, aliceUser);
  assert.equal(call.headers.cookie, `session=${aliceUser}`);

  // Refused by the backend: the promise rejects with its error and nothing is kept.
  const readonly = `board:readonly-${uniq()}`;
  await assert.rejects(alice.client.publish(readonly, { text: 'x' }), (err) => {
    assert.equal(err.code, 103, JSON.stringify(err));
    assert.equal(err.message, 'read only');
    return true;
  });
  const history = await node.api('history', { channel: readonly, limit: 10 });
  assert.deepEqual(history.publications ?? [], []);
  assert.deepEqual(backend.of('publish', (c) => c.body.channel === readonly).pop().body.data, { text: 'x' });
});
