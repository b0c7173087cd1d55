// The server HTTP API: the npm `cent.js` client (written for Centrifugo) works
// unchanged, and the raw shapes, errors and status codes match the Centrifugo family.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { CentClient, CentException } from 'cent.js';
import {
  startHerald,
  newClient,
  newSub,
  rawClient,
  closeClients,
  nextEvent,
  waitUntil,
  uniq,
  sleep,
} from '../lib/herald.mjs';

let node;
let cent;
before(async () => {
  node = await startHerald();
  cent = new CentClient({ url: `${node.url}/api`, apiKey: node.apiKey });
});
afterEach(closeClients);
after(() => node?.stop());

/** A connected client of `user` subscribed to each of `channels`. */
async function subscriber(user, ...channels) {
  const client = newClient(node, { user });
  const subs = channels.map((ch) => newSub(client, ch));
  const ready = subs.map((s) => nextEvent(s, 'subscribed', { explain: client.explain }));
  client.connect();
  subs.forEach((s) => s.subscribe());
  await Promise.all(ready);
  return { client, subs };
}

describe('cent.js', () => {
  test('publish reaches a subscribed SDK client', { timeout: 10000 }, async () => {
    const channel = uniq('cent');
    const { client, subs } = await subscriber('alice', channel);
    const res = await cent.publish({ channel, data: { via: 'cent.js' } });
    assert.equal(res.offset, 1);
    assert.equal(typeof res.epoch, 'string');
    await waitUntil(() => subs[0].pubs.length === 1, { what: 'publication', explain: client.explain });
    assert.deepEqual(subs[0].pubs[0].data, { via: 'cent.js' });
    assert.equal(subs[0].pubs[0].offset, 1);
  });

  test('getHistory, getPresence, getPresenceStats, getInfo, getChannels return sane shapes', { timeout: 10000 }, async () => {
    const channel = uniq('cent');
    await subscriber('alice', channel);
    for (let i = 1; i <= 3; i++) await cent.publish({ channel, data: { i } });

    const history = await cent.getHistory({ channel, limit: 10 });
    assert.deepEqual(history.publications.map((p) => [p.offset, p.data.i]), [
      [1, 1],
      [2, 2],
      [3, 3],
    ]);
    assert.equal(history.offset, 3);
    assert.equal(typeof history.epoch, 'string');
    const top = await cent.getHistory({ channel, limit: 0 });
    assert.deepEqual(top.publications, []);
    assert.equal(top.offset, 3);

    assert.deepEqual(await cent.getPresenceStats({ channel }), { num_clients: 1, num_users: 1 });
    const presence = await cent.getPresence({ channel });
    const infos = Object.values(presence.presence);
    assert.equal(infos.length, 1);
    assert.equal(infos[0].user, 'alice');
    assert.equal(typeof infos[0].client, 'string');

    const info = await cent.getInfo();
    assert.ok(Array.isArray(info.nodes) && info.nodes.length === 1, JSON.stringify(info));
    const [n] = info.nodes;
    for (const key of ['uid', 'name', 'version']) assert.equal(typeof n[key], 'string', key);
    for (const key of ['num_clients', 'num_users', 'num_channels', 'num_subs', 'uptime']) {
      assert.equal(typeof n[key], 'number', key);
    }
    assert.ok(n.num_clients >= 1 && n.num_channels >= 1);

    const channels = await cent.getChannels({ pattern: `${channel}*` });
    assert.deepEqual(channels, { channels: { [channel]: { num_clients: 1 } } });
  });

  test('broadcast, unsubscribe, disconnect and removeHistory act on SDK clients', { timeout: 10000 }, async () => {
    const [c1, c2] = [uniq('b'), uniq('b')];
    const { client, subs } = await subscriber('bob', c1, c2);

    const res = await cent.broadcast({ channels: [c1, c2], data: { all: true } });
    assert.equal(res.responses.length, 2, JSON.stringify(res));
    assert.ok(res.responses.every((r) => r.result.offset === 1), JSON.stringify(res));
    await waitUntil(() => subs.every((s) => s.pubs.length === 1), { what: 'broadcast', explain: client.explain });

    const gone = nextEvent(subs[0], 'unsubscribed', { explain: client.explain });
    await cent.unsubscribe({ user: 'bob', channel: c1 });
    assert.equal((await gone).code, 2000, client.explain());

    await cent.removeHistory({ channel: c2 });
    const history = await cent.getHistory({ channel: c2, limit: 10 });
    assert.deepEqual(history.publications, []);

    const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
    await cent.disconnect({ user: 'bob' });
    assert.equal((await disconnected).code, 3503, client.explain());
  });

  test('disconnect and unsubscribe can target one connection of a user', { timeout: 10000 }, async () => {
    const channel = uniq('target');
    const one = await subscriber('dora', channel);
    const two = await subscriber('dora', channel);
    const oneId = one.client.transcript.entries.find((e) => e.text.includes('"connect":{"client"'));
    const clientId = JSON.parse(oneId.text.split('\n')[0]).connect.client;

    const gone = nextEvent(one.subs[0], 'unsubscribed', { explain: one.client.explain });
    await cent.unsubscribe({ user: 'dora', channel, client: clientId });
    assert.equal((await gone).code, 2000);
    const disconnected = nextEvent(one.client, 'disconnected', { explain: one.client.explain });
    await cent.disconnect({ user: 'dora', client: clientId });
    await disconnected;

    await sleep(100);
    assert.equal(two.client.state, 'connected', two.client.explain());
    assert.equal(two.subs[0].state, 'subscribed', two.client.explain());
    await cent.publish({ channel, data: { to: 'two' } });
    await waitUntil(() => two.subs[0].pubs.length === 1, { what: 'publication', explain: two.client.explain });
  });

  test('disconnect with an application code (4000–4999) and reason reaches the client', { timeout: 10000 }, async () => {
    // Codes 4000–4499 (reconnect) and 4500–4999 (terminal) are the application's own
    // (see the reference's code ranges and Centrifuge's Disconnect docs); the
    // Centrifugo disconnect API passes {code, reason} through to the client.
    const terminal = await subscriber('frank', uniq('x'));
    const gone = nextEvent(terminal.client, 'disconnected', { explain: terminal.client.explain });
    gone.catch(() => {}); // awaited below unless the API call already failed
    const res = await node.apiRaw('disconnect', { user: 'frank', disconnect: { code: 4501, reason: 'banned' } });
    assert.deepEqual(res.body, { result: {} }, `API reply: ${JSON.stringify(res)}`);
    assert.deepEqual(await gone, { code: 4501, reason: 'banned' }, terminal.client.explain());

    const moved = await subscriber('gina', uniq('x'));
    const away = nextEvent(moved.client, 'connecting', { explain: moved.client.explain });
    away.catch(() => {});
    const res2 = await node.apiRaw('disconnect', { user: 'gina', disconnect: { code: 4001, reason: 'moved' } });
    assert.deepEqual(res2.body, { result: {} }, `API reply: ${JSON.stringify(res2)}`);
    assert.deepEqual(await away, { code: 4001, reason: 'moved' }, moved.client.explain());
    await nextEvent(moved.client, 'connected', { explain: moved.client.explain }); // 4000–4499: it comes back
  });

  test('pipeline: several commands in one request', { timeout: 10000 }, async () => {
    const channel = uniq('pipe');
    const results = await cent.pipeline([
      { method: 'publish', params: { channel, data: { n: 1 } } },
      { method: 'publish', params: { channel, data: { n: 2 } } },
      { method: 'history', params: { channel, limit: 10 } },
    ]);
    assert.equal(results.length, 3);
    assert.equal(results[0].offset, 1);
    assert.equal(results[1].offset, 2);
    assert.deepEqual(results[2].publications.map((p) => p.data.n), [1, 2]);
  });

  test('a wrong API key and API errors raise CentException', { timeout: 10000 }, async () => {
    const wrong = new CentClient({ url: `${node.url}/api`, apiKey: 'not-the-key' });
    await assert.rejects(wrong.publish({ channel: uniq('x'), data: {} }), CentException);
    await assert.rejects(cent.publish({ channel: 'nope:x', data: {} }), CentException);
  });
});

describe('raw API', () => {
  test('publish result is {offset, epoch}; the epoch is stable', { timeout: 10000 }, async () => {
    const channel = uniq('raw');
    const a = await node.apiRaw('publish', { channel, data: { n: 1 } });
    const b = await node.apiRaw('publish', { channel, data: { n: 2 } });
    assert.equal(a.status, 200);
    assert.deepEqual(Object.keys(a.body), ['result']);
    assert.deepEqual(b.body.result, { offset: 2, epoch: a.body.result.epoch });
  });

  test('batch runs each command and answers each in order', { timeout: 10000 }, async () => {
    const channel = uniq('batch');
    const res = await node.api('batch', {
      commands: [
        { publish: { channel, data: { n: 1 } } },
        { publish: { channel: 'nope:x', data: { n: 2 } } },
        { history: { channel, limit: 5 } },
      ],
    });
    assert.equal(res.replies.length, 3, JSON.stringify(res));
    assert.equal(res.replies[0].publish.offset, 1, JSON.stringify(res));
    assert.equal(res.replies[1].error.code, 102, JSON.stringify(res));
    assert.equal(res.replies[2].history.publications.length, 1, JSON.stringify(res));
  });

  // Publication data is embedded as raw JSON: what a publisher sends is what every
  // reader gets, byte for byte (minus insignificant whitespace), as with Centrifugo.
  // Written by hand: JSON.stringify could keep neither the integer (> 2^64) nor the
  // decimal's digits, and a parse into a map would sort the keys.
  const VERBATIM = '{"b":1,"a":[123456789012345678901234567890,0.10000000000000000555]}';

  test('API publish passes data through verbatim to subscribers', { timeout: 10000 }, async () => {
    const channel = uniq('verbatim');
    const { client, subs } = await subscriber('ivan', channel);
    const res = await fetch(`${node.url}/api/publish`, {
      method: 'POST',
      headers: { 'X-API-Key': node.apiKey },
      body: `{"channel":${JSON.stringify(channel)},"data":${VERBATIM}}`,
    });
    assert.equal(res.status, 200, await res.text());
    await waitUntil(() => subs[0].pubs.length === 1, { what: 'publication', explain: client.explain });
    const frame = client.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"pub"'));
    assert.ok(
      frame.text.includes(`"data":${VERBATIM}`),
      `expected the push to carry "data":${VERBATIM}\nbut the frame was: ${frame.text}`,
    );
  });

  test('API history returns data verbatim', { timeout: 10000 }, async () => {
    const channel = uniq('verbatim');
    const raw = rawClient(node);
    await raw.connect(node.token({ sub: 'ivan' }));
    await raw.command('subscribe', { channel });
    // Published over the client protocol, which keeps the bytes: the live push shows it.
    raw.send(`{"id":9,"publish":{"channel":${JSON.stringify(channel)},"data":${VERBATIM}}}`);
    await raw.next((m) => m.id === 9, { what: 'publish reply' });
    // The reply and the push travel separately: their order is not defined.
    await raw.next((m) => m.push?.pub, { what: 'publication push' });
    const push = raw.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"pub"'));
    assert.ok(push?.text.includes(`"data":${VERBATIM}`), raw.explain());
    // The client protocol's history keeps them too.
    raw.send({ id: 10, history: { channel, limit: 5 } });
    await raw.next((m) => m.id === 10, { what: 'history reply' });
    const clientHistory = raw.transcript.entries.find((e) => e.kind === '<' && e.text.includes('"id":10'));
    assert.ok(clientHistory.text.includes(`"data":${VERBATIM}`), raw.explain());

    const res = await fetch(`${node.url}/api/history`, {
      method: 'POST',
      headers: { 'X-API-Key': node.apiKey },
      body: JSON.stringify({ channel, limit: 5 }),
    });
    const text = await res.text();
    assert.ok(text.includes(`"data":${VERBATIM}`), `expected "data":${VERBATIM} in the API history reply\nbut it was: ${text}`);
  });

  test('an idempotency key publishes once', { timeout: 10000 }, async () => {
    const channel = uniq('idem');
    const { client, subs } = await subscriber('carol', channel);
    const first = await node.publish(channel, { once: true }, { idempotency_key: 'k1' });
    const again = await node.publish(channel, { once: true }, { idempotency_key: 'k1' });
    assert.deepEqual(again, first);
    const other = await node.publish(channel, { once: false }, { idempotency_key: 'k2' });
    assert.equal(other.offset, first.offset + 1);
    await waitUntil(() => subs[0].pubs.length === 2, { what: 'publications', explain: client.explain });
    await sleep(100);
    assert.deepEqual(subs[0].pubs.map((p) => p.offset), [1, 2], client.explain());
  });

  test('API errors: codes and HTTP statuses', { timeout: 10000 }, async () => {
    const channel = uniq('err');
    const expectError = async (method, params, code, status = 200, opts) => {
      const res = await node.apiRaw(method, params, opts);
      assert.equal(res.status, status, `${method} ${JSON.stringify(params)} → ${JSON.stringify(res)}`);
      assert.equal(res.body?.error?.code, code, `${method} ${JSON.stringify(params)} → ${JSON.stringify(res)}`);
      assert.equal(typeof res.body.error.message, 'string');
    };
    await expectError('publish', { channel, data: {} }, 101, 401, { apiKey: '' });
    await expectError('publish', { channel, data: {} }, 101, 401, { apiKey: 'wrong' });
    await expectError('no_such_method', {}, 104, 404);
    await expectError('publish', { channel: 'nope:x', data: {} }, 102);
    // A request that cannot succeed as written is a 400; a refusal of a well-formed one
    // (unknown channel, no history there) a 200 with the error.
    await expectError('publish', { channel }, 107, 400); // no data
    await expectError('publish', { channel: 'has space', data: {} }, 107, 400);
    await expectError('history', { channel: uniq('locked:x'), limit: 1 }, 108); // no history there
    await expectError('presence', { channel: uniq('tiny:x') }, 108); // no presence there
    await expectError('disconnect', { user: 'x', disconnect: { code: 1, reason: '' } }, 107, 400);
    const { epoch } = await node.publish(channel, { n: 1 });
    assert.ok(epoch);
    await expectError('history', { channel, limit: 1, since: { offset: 1, epoch: 'other' } }, 112);

    // A body that is not JSON.
    const res = await fetch(`${node.url}/api/publish`, {
      method: 'POST',
      headers: { 'X-API-Key': node.apiKey },
      body: '{not json',
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, 107);

    // `Authorization: apikey <key>` is accepted like X-API-Key.
    const auth = await fetch(`${node.url}/api/info`, {
      method: 'POST',
      headers: { Authorization: `apikey ${node.apiKey}` },
      body: '{}',
    });
    assert.equal(auth.status, 200);
  });
});
