// WebSocket permessage-deflate (RFC 7692) with `client.websocket_compression`: the `ws`
// package and the real npm SDK (JSON and Protobuf) negotiate it and get every
// publication intact and in order, recovery included; clients that do not offer it (or
// offer a window Herald cannot honour) go uncompressed; a node without the setting never
// answers the extension; and frames written by hand that break the extension's rules
// get the close code the README documents, without harming the node. Prints the bytes
// a client read off its TCP socket for the same publications with and without it.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import zlib from 'node:zlib';
import {
  startHerald,
  newClient,
  newSub,
  rawClient,
  RawClient,
  closeClients,
  nextEvent,
  waitUntil,
  uniq,
  sleep,
  jsonBytes,
  fromJsonBytes,
} from '../lib/herald.mjs';

const METRIC = 'herald_websocket_compressed_connections_total';
const ANSWER = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

let node; // client.websocket_compression = true
let plain; // the default: no compression
before(async () => {
  node = await startHerald({ config: { client: { websocket_compression: true } } });
  plain = await startHerald();
});
afterEach(closeClients);
after(async () => {
  await node?.stop();
  await plain?.stop();
});

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

/** A ~2.3 KB JSON object, different in every publication (`i`). */
function snapshot(i) {
  const rows = [];
  for (let k = 0; k < 24; k++) {
    rows.push({
      id: `row-${k}`,
      name: `Instrument ${k}`,
      price: Number((100 + k * 1.25 + i * 0.01).toFixed(2)),
      volume: 1000 * k + i,
      currency: 'EUR',
      status: k % 3 ? 'open' : 'halted',
    });
  }
  return { seq: i, kind: 'market-snapshot', rows };
}

/** The node is still running and its log shows no panic. */
function assertAlive(n) {
  assert.equal(n.exitInfo, null, `the node is still running\n${n.logs()}`);
  const panics = n.output.filter((l) => /panicked/i.test(l));
  assert.deepEqual(panics, [], `no panic in the node's log\n${n.logs()}`);
}

/** A raw JSON-protocol `ws` client to `path` on `n` (ws offers permessage-deflate unless told not to). */
function wsClient(n, wsOptions, path = '/connection/websocket') {
  return new RawClient(`ws://127.0.0.1:${n.port}${path}`, { wsOptions });
}

/** Publications pushed to `raw` on `channel`, in arrival order. */
function pushedPubs(raw, channel) {
  return raw.messages.filter((m) => m.push?.channel === channel && m.push.pub).map((m) => m.push.pub);
}

/**
 * Connects `raw`, subscribes it to a fresh channel, publishes `count` snapshots through
 * the API and waits until every one arrived. Returns what arrived and the bytes read off
 * the TCP socket between the subscribe reply and the last publication.
 */
async function streamSnapshots(n, raw, count) {
  await raw.connect(n.token({ sub: uniq('u') }));
  const channel = uniq('snap');
  const reply = await raw.command('subscribe', { channel });
  assert.ok(reply.subscribe, raw.explain());
  const bytesBefore = raw.ws._socket.bytesRead;
  const sent = [];
  for (let i = 1; i <= count; i++) {
    const data = snapshot(i);
    sent.push(data);
    await n.publish(channel, data);
  }
  await waitUntil(() => pushedPubs(raw, channel).length >= count, {
    timeout: 10000,
    what: `${count} publications`,
    explain: () => raw.explain(),
  });
  const bytes = raw.ws._socket.bytesRead - bytesBefore;
  const pubs = pushedPubs(raw, channel);
  const textBytes = pubs.reduce((s, p) => s + Buffer.byteLength(JSON.stringify({ push: { channel, pub: p } })), 0);
  return { pubs, sent, bytes, textBytes };
}

// ---------------------------------------------------------------------------------
// ws as the client
// ---------------------------------------------------------------------------------

test('ws negotiates permessage-deflate and 300 ~2 KB publications arrive exactly, in order, in a fraction of the bytes', { timeout: 30000 }, async () => {
  const count = 300;
  const metricBefore = await node.metric(METRIC);
  const on = wsClient(node);
  const headers = await on.upgradeHeaders;
  await on.opened;
  assert.equal(headers['sec-websocket-extensions'], ANSWER, 'the answer header');
  assert.equal(on.ws.extensions, 'permessage-deflate', 'ws took the extension');
  const withDeflate = await streamSnapshots(node, on, count);
  assert.equal(await node.metric(METRIC), metricBefore + 1, 'the metric counted the connection');
  assert.deepEqual(withDeflate.pubs.map((p) => p.offset), range(1, count), on.explain());
  assert.deepEqual(withDeflate.pubs.map((p) => p.data), withDeflate.sent);

  // The same publications on a node without compression (ws offers, nobody answers).
  const off = wsClient(plain);
  assert.equal((await off.upgradeHeaders)['sec-websocket-extensions'], undefined);
  await off.opened;
  assert.equal(off.ws.extensions, '');
  const without = await streamSnapshots(plain, off, count);
  assert.deepEqual(without.pubs.map((p) => p.offset), range(1, count), off.explain());
  assert.deepEqual(without.pubs.map((p) => p.data), without.sent);
  assert.ok(without.bytes >= without.textBytes, `uncompressed: ${without.bytes} bytes on the wire for ${without.textBytes} of JSON`);

  const size = Buffer.byteLength(JSON.stringify(snapshot(1)));
  const ratio = without.bytes / withDeflate.bytes;
  console.log(
    `permessage-deflate: ${count} publications of a ${size} byte JSON object: ` +
      `${without.bytes} bytes read off the socket without compression (${Math.round(without.bytes / count)} per publication), ` +
      `${withDeflate.bytes} with permessage-deflate at level 1 (${Math.round(withDeflate.bytes / count)} per publication), ${ratio.toFixed(1)}x less`,
  );
  assert.ok(withDeflate.bytes * 3 < without.bytes, `compressed ${withDeflate.bytes} bytes vs ${without.bytes}: less than a third`);
});

test('ws with perMessageDeflate: false, and ws offering server_max_window_bits=10, go uncompressed and work', { timeout: 15000 }, async () => {
  for (const wsOptions of [{ perMessageDeflate: false }, { perMessageDeflate: { serverMaxWindowBits: 10 } }]) {
    const metricBefore = await node.metric(METRIC);
    const raw = wsClient(node, wsOptions);
    const headers = await raw.upgradeHeaders;
    await raw.opened;
    assert.equal(headers['sec-websocket-extensions'], undefined, `no extension answered to ${JSON.stringify(wsOptions)}`);
    assert.equal(raw.ws.extensions, '');
    const { pubs, sent, bytes, textBytes } = await streamSnapshots(node, raw, 20);
    assert.deepEqual(pubs.map((p) => p.offset), range(1, 20), raw.explain());
    assert.deepEqual(pubs.map((p) => p.data), sent);
    assert.ok(bytes >= textBytes, `uncompressed on the wire: ${bytes} bytes for ${textBytes} of JSON`);
    assert.equal(await node.metric(METRIC), metricBefore, 'not counted as compressed');
    raw.close();
  }
});

test('a node without websocket_compression never answers the extension', { timeout: 10000 }, async () => {
  for (const path of ['/connection/websocket', '/connection/uni_websocket']) {
    const raw = wsClient(plain, undefined, path);
    const headers = await raw.upgradeHeaders;
    await raw.opened;
    assert.equal(headers['sec-websocket-extensions'], undefined, path);
    assert.equal(raw.ws.extensions, '', path);
    raw.close();
  }
  const raw = wsClient(plain);
  await raw.connect(plain.token({ sub: uniq('u') }));
  assert.equal(await plain.metric(METRIC), 0);
});

test('uni_websocket negotiates the extension too and delivers large pushes', { timeout: 10000 }, async () => {
  const metricBefore = await node.metric(METRIC);
  const channel = uniq('uni');
  const raw = wsClient(node, undefined, '/connection/uni_websocket');
  assert.equal((await raw.upgradeHeaders)['sec-websocket-extensions'], ANSWER);
  await raw.opened;
  assert.equal(raw.ws.extensions, 'permessage-deflate');
  raw.send({ token: node.token({ sub: uniq('u') }), subs: { [channel]: {} } });
  await raw.next((m) => m.connect, { what: 'connect push' });
  const bytesBefore = raw.ws._socket.bytesRead;
  const sent = range(1, 20).map(snapshot);
  for (const data of sent) await node.publish(channel, data);
  const pubs = () => raw.messages.filter((m) => m.channel === channel && m.pub).map((m) => m.pub);
  await waitUntil(() => pubs().length >= 20, { what: '20 uni pushes', explain: () => raw.explain() });
  assert.deepEqual(pubs().map((p) => p.offset), range(1, 20), raw.explain());
  assert.deepEqual(pubs().map((p) => p.data), sent);
  const bytes = raw.ws._socket.bytesRead - bytesBefore;
  const json = sent.reduce((s, d) => s + Buffer.byteLength(JSON.stringify(d)), 0);
  assert.ok(bytes * 3 < json, `compressed pushes: ${bytes} bytes on the wire for ${json} bytes of data`);
  assert.equal(await node.metric(METRIC), metricBefore + 1);
});

// ---------------------------------------------------------------------------------
// The npm SDK
// ---------------------------------------------------------------------------------

async function connected(opts) {
  const client = newClient(node, opts);
  const ready = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  client.clientId = (await ready).client;
  return client;
}

async function subscribed(client, channel, opts) {
  const sub = newSub(client, channel, opts);
  const done = nextEvent(sub, 'subscribed', { explain: client.explain });
  sub.subscribe();
  return [sub, await done];
}

/**
 * Counts what `ws` hands over from now on: `payload` (bytes of whole messages, as
 * decompressed) and `wire` (bytes read off its TCP socket).
 */
function countBytes(ws) {
  const start = ws._socket.bytesRead;
  const c = { payload: 0, messages: 0 };
  ws.on('message', (data) => {
    c.payload += data.byteLength;
    c.messages++;
  });
  Object.defineProperty(c, 'wire', { get: () => ws._socket.bytesRead - start });
  return c;
}

for (const protobuf of [false, true]) {
  const name = protobuf ? 'Protobuf' : 'JSON';
  const enc = protobuf ? jsonBytes : (v) => v;
  const dec = protobuf ? fromJsonBytes : (v) => v;

  test(`the SDK (${name}) over permessage-deflate: client and API publications, history, presence`, { timeout: 15000 }, async () => {
    const metricBefore = await node.metric(METRIC);
    const aliceUser = uniq('alice');
    const alice = await connected({ protobuf, user: aliceUser, claims: { info: { name: 'Alice' } } });
    const bob = await connected({ protobuf, user: uniq('bob') });
    for (const c of [alice, bob]) {
      const ws = c.sockets.at(-1);
      assert.equal(ws.extensions, 'permessage-deflate', `the SDK's socket negotiated the extension\n${c.explain()}`);
      if (protobuf) assert.equal(ws.protocol, 'centrifuge-protobuf');
    }
    assert.equal(await node.metric(METRIC), metricBefore + 2);
    const channel = uniq(`sdk-${name}`);
    const [aliceSub] = await subscribed(alice, channel);
    const [bobSub] = await subscribed(bob, channel);
    const bobBytes = countBytes(bob.sockets.at(-1));

    // A client publication, then API ones.
    const sent = [snapshot(0)];
    await aliceSub.publish(enc(sent[0]));
    for (let i = 1; i < 40; i++) {
      sent.push(snapshot(i));
      await node.publish(channel, sent[i]);
    }
    for (const [c, s] of [[alice, aliceSub], [bob, bobSub]]) {
      await waitUntil(() => s.pubs.length >= sent.length, { what: `${sent.length} publications`, explain: c.explain });
      assert.deepEqual(s.pubs.map((p) => p.offset), range(1, sent.length), c.explain());
      assert.deepEqual(s.pubs.map((p) => dec(p.data)), sent);
    }
    assert.equal(bobSub.pubs[0].info.user, aliceUser, 'the client publication carries its publisher');
    assert.equal(bobSub.pubs[0].info.client, alice.clientId);
    if (protobuf) assert.ok(bobSub.pubs.every((p) => p.data instanceof Uint8Array));

    // Compressed on the wire: fewer bytes read than the frames carried.
    const { wire, payload, messages } = bobBytes;
    assert.ok(wire * 3 < payload, `${name}: ${wire} bytes read off the socket for ${payload} bytes in ${messages} messages`);
    console.log(`SDK ${name} over permessage-deflate: ${messages} messages of ${payload} bytes came in ${wire} bytes on the wire`);

    const history = await aliceSub.history({ limit: 100 });
    assert.deepEqual(history.publications.map((p) => p.offset), range(1, sent.length));
    assert.deepEqual(history.publications.map((p) => dec(p.data)), sent);
    const presence = await aliceSub.presence();
    const clients = Object.values(presence.clients).map((c) => c.client).sort();
    assert.deepEqual(clients, [alice.clientId, bob.clientId].sort(), alice.explain());
    const stats = await bobSub.presenceStats();
    assert.equal(stats.numClients, 2);
  });

  test(`the SDK (${name}) recovers after its compressed socket is killed while publications go on: each once, in order`, { timeout: 20000 }, async () => {
    const channel = uniq(`rec-${name}`);
    const client = newClient(node, { protobuf, user: uniq('user'), minReconnectDelay: 500, maxReconnectDelay: 800 });
    const sub = newSub(client, channel);
    const resubscribes = [];
    const first = nextEvent(sub, 'subscribed', { explain: client.explain });
    client.connect();
    sub.subscribe();
    const epoch = (await first).streamPosition.epoch;
    sub.on('subscribed', (ctx) => resubscribes.push(ctx));
    assert.equal(client.sockets.at(-1).extensions, 'permessage-deflate', client.explain());

    let i = 0;
    const publish = async () => node.publish(channel, snapshot(++i));
    for (let k = 0; k < 5; k++) await publish();
    await waitUntil(() => sub.pubs.length === 5, { what: 'first 5 publications', explain: client.explain });

    const away = nextEvent(client, 'connecting', { explain: client.explain });
    client.sockets.at(-1).terminate(); // no close frame: the network dropped
    await away;
    const back = nextEvent(sub, 'subscribed', { timeout: 8000, explain: client.explain });
    let backAt = null;
    back.then(() => (backAt = Date.now()), () => {});
    // Publications go on while the client is away and while it resubscribes.
    while (backAt === null || Date.now() < backAt + 300) {
      await publish();
      await sleep(25);
    }
    const ctx = await back;
    const last = i;
    await waitUntil(() => sub.pubs.length >= last, { what: `${last} publications`, explain: client.explain });
    await sleep(150); // duplicates would have arrived by now
    assert.equal(ctx.wasRecovering, true, client.explain());
    assert.equal(ctx.recovered, true, client.explain());
    assert.equal(ctx.streamPosition.epoch, epoch);
    assert.equal(resubscribes.length, 1, client.explain());
    assert.deepEqual(sub.pubs.map((p) => p.offset), range(1, last), `each publication once, in order\n${client.explain()}`);
    assert.deepEqual(sub.pubs.map((p) => dec(p.data).seq), range(1, last));
    assert.deepEqual(dec(sub.pubs.at(-1).data), snapshot(last));
    assert.ok(client.sockets.length >= 2 && client.sockets.at(-1).extensions === 'permessage-deflate', 'the new socket negotiated it too');
  });
}

// ---------------------------------------------------------------------------------
// Frames written by hand
// ---------------------------------------------------------------------------------

const SYNC_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/**
 * `buf` as a permessage-deflate message body: raw deflate, sync-flushed, tail removed.
 * (The one-shot API ends with `finishFlush`, Z_FINISH unless told: `flush` alone would
 * leave a final block and no 00 00 ff ff tail.)
 */
function deflateMessage(buf) {
  const out = zlib.deflateRawSync(buf, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.deepEqual(out.subarray(-4), SYNC_TAIL);
  return out.subarray(0, -4);
}

/** One masked client frame. */
function clientFrame(opcode, payload, { fin = true, rsv1 = false } = {}) {
  const len = payload.length;
  const head = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode];
  if (len < 126) head.push(0x80 | len);
  else if (len < 65536) head.push(0x80 | 126, len >> 8, len & 0xff);
  else {
    head.push(0x80 | 127);
    for (let s = 56; s >= 0; s -= 8) head.push(Number((BigInt(len) >> BigInt(s)) & 0xffn));
  }
  const mask = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let k = 0; k < body.length; k++) body[k] ^= mask[k % 4];
  return Buffer.concat([Buffer.from(head), mask, body]);
}

/**
 * A WebSocket connection over a bare TCP socket with a handshake written here:
 * `extensions` is the Sec-WebSocket-Extensions offer (none when absent). Server frames
 * are parsed (and inflated when RSV1 is set) into `frames`.
 */
class HandRolled {
  constructor(port, { extensions, path = '/connection/websocket' } = {}) {
    this.frames = [];
    this.log = [];
    this.buf = Buffer.alloc(0);
    this.head = null;
    this.waiters = new Set();
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', (e) => this.log.push(`error ${e.message}`));
    this.ended = new Promise((resolve) => this.socket.once('close', () => {
      this.closedAt = Date.now();
      this.log.push('tcp closed');
      resolve();
      this.check();
    }));
    this.key = crypto.randomBytes(16).toString('base64');
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${this.key}`,
      'Sec-WebSocket-Version: 13',
    ];
    if (extensions) lines.push(`Sec-WebSocket-Extensions: ${extensions}`);
    this.socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    this.socket.on('data', (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.parse();
      this.check();
    });
    // liveClients is the harness's; close these ourselves.
    HandRolled.open.add(this);
  }

  parse() {
    if (!this.head) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [status, ...rest] = this.buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers = {};
      for (const l of rest) {
        const k = l.indexOf(':');
        headers[l.slice(0, k).trim().toLowerCase()] = l.slice(k + 1).trim();
      }
      this.head = { status: Number(status.split(' ')[1]), headers };
      this.log.push(`< ${status} ${JSON.stringify(headers)}`);
      this.buf = this.buf.subarray(end + 4);
    }
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0];
      const b1 = this.buf[1];
      let len = b1 & 0x7f;
      let at = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (b1 & 0x80) throw new Error('a masked frame from the server');
      if (this.buf.length < at + len) return;
      let payload = this.buf.subarray(at, at + len);
      this.buf = this.buf.subarray(at + len);
      const frame = { fin: !!(b0 & 0x80), rsv1: !!(b0 & 0x40), opcode: b0 & 0x0f };
      if (frame.rsv1) {
        try {
          payload = zlib.inflateRawSync(Buffer.concat([payload, SYNC_TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
        } catch (e) {
          frame.inflateError = e.message; // left out of messages(): what waits for it times out
          this.log.push(`< a compressed frame that does not inflate: ${e.message}`);
        }
      }
      frame.payload = payload;
      if (frame.opcode === 8) frame.code = payload.length >= 2 ? payload.readUInt16BE(0) : null;
      this.frames.push(frame);
      this.log.push(`< frame op=${frame.opcode} rsv1=${frame.rsv1} ${frame.opcode === 8 ? `close ${frame.code} ${payload.subarray(2)}` : payload.toString().slice(0, 200)}`);
    }
  }

  check() {
    for (const w of this.waiters) w();
  }

  explain() {
    return `hand-rolled connection:\n  ${this.log.join('\n  ')}`;
  }

  /** Resolves once `fn()` is truthy (its value); rejects after `timeout` ms. */
  until(fn, what, timeout = 3000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out waiting for ${what}\n${this.explain()}`));
      }, timeout);
      const w = () => {
        const v = fn();
        if (v) {
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve(v);
        }
      };
      this.waiters.add(w);
      w();
    });
  }

  async handshake() {
    await this.until(() => this.head, 'the handshake answer');
    assert.equal(this.head.status, 101, this.explain());
    const accept = crypto.createHash('sha1').update(`${this.key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    assert.equal(this.head.headers['sec-websocket-accept'], accept);
    return this.head.headers;
  }

  send(opcode, payload, opts) {
    this.log.push(`> frame op=${opcode} ${JSON.stringify(opts ?? {})} ${payload.length} bytes`);
    this.socket.write(clientFrame(opcode, payload, opts));
  }

  /** JSON replies and pushes received in text frames. */
  messages() {
    return this.frames
      .filter((f) => f.opcode === 1 && !f.inflateError)
      .flatMap((f) => f.payload.toString().split('\n').filter((l) => l.trim() !== ''))
      .map((l) => JSON.parse(l));
  }

  /** Waits for the server's Close frame and then the end of the TCP connection. */
  async closeCode() {
    const frame = await this.until(() => this.frames.find((f) => f.opcode === 8), 'a Close frame');
    await this.until(() => this.closedAt, 'the server closing the TCP connection');
    return frame.code;
  }

  destroy() {
    this.socket.destroy();
    HandRolled.open.delete(this);
  }
}
HandRolled.open = new Set();
afterEach(() => {
  for (const h of HandRolled.open) h.destroy();
});

/** A connect command as JSON text. */
const connectCommand = (id) => Buffer.from(JSON.stringify({ id, connect: { token: node.token({ sub: uniq('hand') }) } }));

/** A fresh client still connects, and the node neither died nor panicked. */
async function nodeStillServes() {
  const raw = rawClient(node);
  const reply = await raw.connect(node.token({ sub: uniq('after') }));
  assert.ok(reply.client, raw.explain());
  raw.close();
  assertAlive(node);
}

test('hand-written compressed frames: whole, fragmented, and a declined window offer', { timeout: 15000 }, async () => {
  // A compressed connect command in one frame, then one split over two (RSV1 on the first only).
  const h = new HandRolled(node.port, { extensions: 'permessage-deflate' });
  assert.equal((await h.handshake())['sec-websocket-extensions'], ANSWER, h.explain());
  h.send(1, deflateMessage(connectCommand(1)), { rsv1: true });
  await h.until(() => h.messages().find((m) => m.id === 1 && m.connect), 'the connect reply');
  const body = deflateMessage(Buffer.from(JSON.stringify({ id: 2, subscribe: { channel: uniq('hand') } })));
  const cut = Math.floor(body.length / 2);
  h.send(1, body.subarray(0, cut), { rsv1: true, fin: false });
  h.send(0, body.subarray(cut));
  await h.until(() => h.messages().find((m) => m.id === 2 && m.subscribe), 'the subscribe reply');
  h.destroy();

  // Only an offer Herald cannot honour: no extension in the answer, and the connection works.
  const w = new HandRolled(node.port, { extensions: 'permessage-deflate; server_max_window_bits=10' });
  assert.equal((await w.handshake())['sec-websocket-extensions'], undefined, w.explain());
  w.send(1, connectCommand(1));
  await w.until(() => w.messages().find((m) => m.id === 1 && m.connect), 'the connect reply');
  assert.ok(w.frames.every((f) => !f.rsv1), 'nothing came compressed');
  w.destroy();
});

const BAD = [
  {
    what: 'RSV1 set on a connection that did not negotiate the extension',
    extensions: undefined,
    code: 1002,
    frame: () => [1, deflateMessage(Buffer.from('{"id":9,"presence":{"channel":"x"}}')), { rsv1: true }],
  },
  {
    what: 'a compressed message that is not valid deflate',
    code: 1007,
    // BTYPE 11 is reserved: no inflater accepts it.
    frame: () => [1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x07, 0x00]), { rsv1: true }],
  },
  {
    what: 'a compressed message that inflates past max_frame_bytes (2 MB of zeros)',
    code: 1009,
    frame: () => {
      const bomb = deflateMessage(Buffer.alloc(2 * 1024 * 1024));
      assert.ok(bomb.length < 64 * 1024, `the bomb itself fits in a frame: ${bomb.length} bytes`);
      return [1, bomb, { rsv1: true }];
    },
  },
  {
    what: 'invalid UTF-8 in a compressed text message',
    code: 1007,
    frame: () => [1, deflateMessage(Buffer.concat([Buffer.from('{"id":9,"presence":{"channel":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}}')])), { rsv1: true }],
  },
  {
    what: 'RSV1 set on a ping (a control frame)',
    code: 1002,
    frame: () => [9, Buffer.from('hi'), { rsv1: true }],
  },
];

for (const bad of BAD) {
  test(`bad input: ${bad.what} → close ${bad.code}`, { timeout: 10000 }, async () => {
    const extensions = 'extensions' in bad ? bad.extensions : 'permessage-deflate; client_max_window_bits';
    const h = new HandRolled(node.port, { extensions });
    const headers = await h.handshake();
    assert.equal(headers['sec-websocket-extensions'], extensions ? ANSWER : undefined, h.explain());
    // A connected client first (its connect compressed when the extension is on).
    const connect = connectCommand(1);
    h.send(1, extensions ? deflateMessage(connect) : connect, { rsv1: !!extensions });
    await h.until(() => h.messages().find((m) => m.id === 1 && m.connect), 'the connect reply');
    h.send(...bad.frame());
    assert.equal(await h.closeCode(), bad.code, h.explain());
    h.destroy();
    await nodeStillServes();
  });
}

test('after all that, the node has not panicked and still counts compressed connections', { timeout: 10000 }, async () => {
  const before = await node.metric(METRIC);
  const raw = rawClient(node);
  await raw.connect(node.token({ sub: uniq('last') }));
  assert.equal(raw.ws.extensions, 'permessage-deflate');
  assert.equal(await node.metric(METRIC), before + 1);
  assertAlive(node);
  assertAlive(plain);
});
