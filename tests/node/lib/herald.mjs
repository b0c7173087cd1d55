// Test harness for the Node conformance suite: starts real `herald serve` processes,
// signs tokens, and builds clients (the real npm `centrifuge` SDK, and a raw `ws`
// client for protocol edge cases) that record every frame they see, so that a failed
// assertion can show exactly what went over the wire.
//
// Typical use in a test file:
//
//   const node = await startHerald();              // in before()
//   const client = newClient(node, { user: 'u1' });
//   ...
//   afterEach(closeClients); after(() => node.stop());
//
// closeClients() closes every client of the process, so files whose tests run
// concurrently (describe with { concurrency: true }) call it in after() instead.
//
// Environment: HERALD_BIN (the binary), HERALD_LOG (server log filter, default
// info,herald_gateway=debug), HERALD_TEST_VERBOSE=1 (echo server logs to stderr).

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';

export { sleep };

// ---------------------------------------------------------------------------------
// Locating the binary
// ---------------------------------------------------------------------------------

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root: this file lives in <repo>/tests/node/lib/. */
export const REPO_ROOT = path.resolve(here, '..', '..', '..');

/**
 * The herald binary: $HERALD_BIN, else <repo>/target/debug/herald. Throws with the
 * build command when it is missing, so a fresh checkout fails with a clear message
 * instead of a spawn ENOENT.
 */
export function heraldBin() {
  const bin = process.env.HERALD_BIN || path.join(REPO_ROOT, 'target', 'debug', 'herald');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(
      `herald binary not found or not executable at ${bin}. ` +
        `Build it with \`cd ${REPO_ROOT} && cargo build -p herald\`, or point HERALD_BIN at one.`,
    );
  }
  return bin;
}

// ---------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------

/** A random hex string of `bytes` random bytes (secrets are generated per run). */
export function randomHex(bytes = 32) {
  return crypto.randomBytes(bytes).toString('hex');
}

/** A unique channel-name suffix, so tests sharing a node never share a channel. */
export function uniq(prefix = 'c') {
  return `${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

/**
 * A port that was free a moment ago: bind port 0, read the number, close. Another
 * process could take it before herald binds it; startHerald retries on that.
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Seconds since the epoch, as JWT `exp` wants them. */
export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

const HMAC_ALGS = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };

/**
 * Signs a JWT with node:crypto: HS256 unless `alg` says HS384/HS512, or 'none' for an
 * unsigned token (which a server must refuse). Herald uses the configured secret
 * string's bytes as the HMAC key, so the key here is the same string.
 */
export function signJwt(secret, claims, { alg = 'HS256' } = {}) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const signingInput = `${part({ alg, typ: 'JWT' })}.${part(claims)}`;
  if (alg === 'none') return `${signingInput}.`;
  const hash = HMAC_ALGS[alg];
  if (!hash) throw new Error(`signJwt: unsupported alg ${alg}`);
  const sig = crypto.createHmac(hash, secret).update(signingInput).digest('base64url');
  return `${signingInput}.${sig}`;
}

/**
 * Polls `fn` until it returns a truthy value (returned) or `timeout` ms pass. `what`
 * and `explain()` go into the timeout error, so a hang says what it waited for.
 */
export async function waitUntil(fn, { timeout = 5000, interval = 20, what = 'condition', explain } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${explain ? `\n${explain()}` : ''}`);
    }
    await sleep(interval);
  }
}

/**
 * `promise`'s value, or null if it takes longer than `ms`. The timer is cleared either
 * way: a pending timer would keep the test process alive after its tests are done.
 */
export async function within(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Waits started by nextEvent and not yet settled. closeClients() abandons them, so a
// test that failed before awaiting one does not keep its timer (and the process) alive.
const pendingWaits = new Set();

/**
 * The next `event` from an EventEmitter-like object (the SDK's client and
 * subscriptions) for which `filter(ctx)` holds; rejects after `timeout` ms.
 */
export function nextEvent(emitter, event, { timeout = 5000, filter = () => true, explain } = {}) {
  return new Promise((resolve, reject) => {
    const wait = {
      abandon: () => {
        clearTimeout(timer);
        emitter.off(event, onEvent);
        pendingWaits.delete(wait);
      },
    };
    const onEvent = (ctx) => {
      if (!filter(ctx)) return;
      wait.abandon();
      resolve(ctx);
    };
    const timer = setTimeout(() => {
      wait.abandon();
      reject(new Error(`timed out after ${timeout} ms waiting for '${event}'${explain ? `\n${explain()}` : ''}`));
    }, timeout);
    emitter.on(event, onEvent);
    pendingWaits.add(wait);
  });
}

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

/**
 * The configuration every node starts from (token secret and API key are added per
 * node). Namespaces cover the permission matrix the tests need:
 * - default: history + everything for subscribers, presence;
 * - tiny:    history of 3, to make recovery impossible on purpose;
 * - locked:  nothing allowed for clients;
 * - room:    presence and join/leave;
 * - dm:      user-limited channels only (`dm:x#42,43`).
 */
export const BASE_CONFIG = Object.freeze({
  // Browser tests serve their pages from other ports than the node's.
  client: { ping_interval: '25s', allowed_origins: ['*'] },
  shutdown: { drain_window: '200ms', timeout: '5s' },
  namespaces: {
    default: {
      history_size: 100,
      history_ttl: '5m',
      allow_subscribe_for_client: true,
      allow_publish_for_subscriber: true,
      allow_history_for_subscriber: true,
      presence: true,
      allow_presence_for_subscriber: true,
    },
    tiny: { history_size: 3, history_ttl: '5m', allow_subscribe_for_client: true },
    locked: {},
    room: {
      history_size: 10,
      history_ttl: '5m',
      allow_subscribe_for_client: true,
      presence: true,
      allow_presence_for_subscriber: true,
      join_leave: true,
    },
    dm: { allow_user_limited_channels: true },
  },
});

const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Deep-merges plain objects; `over` wins. Arrays and scalars are replaced. */
export function mergeConfig(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over ?? {})) {
    out[k] = isTable(v) && isTable(out[k]) ? mergeConfig(out[k], v) : v;
  }
  return out;
}

function tomlKey(k) {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k);
}

function tomlValue(v) {
  if (typeof v === 'string') return JSON.stringify(v); // JSON escapes are valid TOML basic-string escapes
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`cannot write ${typeof v} as TOML`);
}

/**
 * Serializes a nested plain object as TOML. A table gets a `[header]` when it has
 * keys of its own or is empty (so `locked: {}` still declares the namespace).
 */
export function toToml(obj) {
  const lines = [];
  const emit = (table, prefix) => {
    const entries = Object.entries(table).filter(([, v]) => v !== undefined);
    const scalars = entries.filter(([, v]) => !isTable(v));
    const tables = entries.filter(([, v]) => isTable(v));
    if (prefix && (scalars.length > 0 || tables.length === 0)) lines.push(`[${prefix}]`);
    for (const [k, v] of scalars) lines.push(`${tomlKey(k)} = ${tomlValue(v)}`);
    for (const [k, v] of tables) emit(v, prefix ? `${prefix}.${tomlKey(k)}` : tomlKey(k));
  };
  emit(obj, '');
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------
// Running a node
// ---------------------------------------------------------------------------------

// Every child still alive; killed on exit so that no test run leaves a server behind,
// even when a test file crashes before its after() hooks run.
const liveChildren = new Set();
process.on('exit', () => {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A server API error reply ({"error": {"code", "message"}}). */
export class ApiError extends Error {
  constructor(method, error, status) {
    super(`API ${method} failed (HTTP ${status}): ${error.code} ${error.message}`);
    this.code = error.code;
    this.status = status;
  }
}

/** One running `herald serve` process. Create with {@link startHerald}. */
export class HeraldNode {
  constructor(spec, child, dir) {
    /** What it was started with ({ port, secret, apiKey, config, args }): pass it to
     * startHerald again to start a replacement node on the same port with the same keys. */
    this.spec = spec;
    this.port = spec.port;
    this.secret = spec.secret;
    this.apiKey = spec.apiKey;
    this.url = `http://127.0.0.1:${spec.port}`;
    this.wsUrl = `ws://127.0.0.1:${spec.port}/connection/websocket`;
    this.child = child;
    this.dir = dir;
    this.output = []; // last lines of stdout/stderr, for failure messages
    this.exitInfo = null;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        liveChildren.delete(child);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    const keep = (stream) => {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        if (process.env.HERALD_TEST_VERBOSE) process.stderr.write(chunk);
        const lines = (rest + chunk).split('\n');
        rest = lines.pop();
        this.output.push(...lines);
        if (this.output.length > 400) this.output.splice(0, this.output.length - 400);
      });
    };
    keep(child.stdout);
    keep(child.stderr);
  }

  /** The node's recent log output (for assertion messages). */
  logs(lines = 60) {
    return this.output.slice(-lines).join('\n');
  }

  /** A connection token for `sub` with extra claims; `ttl` (seconds) sets `exp`. */
  token({ sub = 'user-1', ttl, ...claims } = {}) {
    const c = { sub, ...claims };
    if (ttl !== undefined) c.exp = nowSeconds() + ttl;
    return signJwt(this.secret, c);
  }

  /** A subscription token granting `channel` to `sub`; `ttl` (seconds) sets `exp`. */
  subToken({ sub = 'user-1', channel, ttl, ...claims }) {
    const c = { sub, channel, ...claims };
    if (ttl !== undefined) c.exp = nowSeconds() + ttl;
    return signJwt(this.secret, c);
  }

  /** POSTs /api/<method> and returns { status, body } without interpreting them. */
  async apiRaw(method, params = {}, { apiKey = this.apiKey } = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (apiKey) headers['X-API-Key'] = apiKey;
    const res = await fetch(`${this.url}/api/${method}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(params),
    });
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: res.status, body };
  }

  /** Calls a server API method; returns `result`, throws ApiError on `error`. */
  async api(method, params = {}) {
    const { status, body } = await this.apiRaw(method, params);
    if (body && body.error) throw new ApiError(method, body.error, status);
    if (status !== 200) throw new Error(`API ${method}: HTTP ${status}: ${JSON.stringify(body)}`);
    return method === 'batch' ? body : body.result;
  }

  /**
   * The value of a Prometheus sample from /metrics, e.g.
   * `metric('herald_disconnects_total', { code: '3008' })`; 0 when absent.
   */
  async metric(name, labels = {}) {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = m[2] ? m[2].split(',') : [];
      if (want.every((w) => have.includes(w))) return Number(m[3]);
    }
    return 0;
  }

  /** Publishes through the API; resolves to { offset, epoch }. */
  publish(channel, data, extra = {}) {
    return this.api('publish', { channel, data, ...extra });
  }

  /** Sends `signal` and waits for the process to exit; SIGKILL after `timeout` ms. */
  async stop({ signal = 'SIGTERM', timeout = 6000 } = {}) {
    if (this.exitInfo === null) {
      this.child.kill(signal);
      if ((await within(this.exited, timeout)) === null) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    return this.exitInfo;
  }
}

// HERALD_* variables configure the server and unknown ones are a configuration error
// (HERALD_BIN is ours, not the server's), so the child gets none of them except the
// ones the server ignores by design.
function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HERALD_')) env[k] = v;
  }
  env.HERALD_LOG = process.env.HERALD_LOG || 'info,herald_gateway=debug';
  env.NO_COLOR = '1'; // plain log lines in failure messages
  return env;
}

async function spawnOnce(bin, spec, timeout) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-test-'));
  const file = path.join(dir, 'herald.toml');
  const config = mergeConfig(spec.config, {
    token: { hmac_secret: spec.secret },
    api: { key: spec.apiKey },
  });
  fs.writeFileSync(file, toToml(config));
  const args = ['serve', '--config', file, '--listen', `127.0.0.1:${spec.port}`, ...(spec.args ?? [])];
  const child = spawn(bin, args, {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveChildren.add(child);
  const node = new HeraldNode(spec, child, dir);
  child.once('error', () => {}); // surfaced through `exited` / the readiness timeout
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (node.exitInfo) break;
    try {
      const res = await fetch(`${node.url}/readyz`);
      await res.arrayBuffer();
      if (res.status === 200) return node;
    } catch {
      // not listening yet
    }
    await sleep(25);
  }
  await node.stop({ signal: 'SIGKILL' });
  const err = new Error(
    `herald did not become ready on port ${spec.port} (exit: ${JSON.stringify(node.exitInfo)})\n` +
      `config:\n${toToml(config).replace(spec.secret, '<secret>')}\nlog:\n${node.logs()}`,
  );
  err.addrInUse = /address already in use|AddrInUse/i.test(node.logs());
  throw err;
}

/**
 * Starts a node and waits until /readyz answers 200.
 *
 * @param {object} opts
 * @param {object} [opts.config]  merged over BASE_CONFIG (pass `base: {}` to start from nothing)
 * @param {object} [opts.base]    the configuration to merge `config` over
 * @param {number} [opts.port]    a fixed port (a restart on the same port); default: a free one
 * @param {string} [opts.secret]  token HMAC secret; default: 64 random hex chars
 * @param {string} [opts.apiKey]  server API key; default: random
 * @param {string[]} [opts.args]  extra `herald serve` arguments (e.g. `--broker redis`)
 */
export async function startHerald({ config = {}, base = BASE_CONFIG, port, secret, apiKey, args = [], timeout = 10000 } = {}) {
  const bin = heraldBin();
  const fixedPort = port !== undefined;
  for (let attempt = 1; ; attempt++) {
    const spec = {
      port: fixedPort ? port : await freePort(),
      secret: secret ?? randomHex(32),
      apiKey: apiKey ?? randomHex(16),
      config: mergeConfig(base, config),
      args,
    };
    try {
      return await spawnOnce(bin, spec, timeout);
    } catch (e) {
      // Someone took the free port between our probe and herald's bind: pick another.
      if (e.addrInUse && !fixedPort && attempt < 3) continue;
      throw e;
    }
  }
}

// ---------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------

// Every client and raw socket made here, closed by closeClients() so that a test's
// reconnecting clients never outlive it (they would keep the test process alive).
const liveClients = new Set();

const clip = (s, n = 400) => (s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s);

/** A log of frames and events with times relative to its creation. */
/**
 * `n` nodes on one Redis (`redisUrl`) with one token secret and one API key, as a
 * cluster behind a balancer is run: a client may land on any of them.
 */
export async function startCluster(n, redisUrl, { config = {} } = {}) {
  const secret = randomHex(32);
  const apiKey = randomHex(16);
  const nodes = [];
  for (let k = 0; k < n; k++) {
    nodes.push(await startHerald({ secret, apiKey, args: ['--broker', 'redis', '--redis-url', redisUrl], config }));
  }
  return nodes;
}

export class Transcript {
  constructor() {
    this.t0 = Date.now();
    this.entries = [];
  }

  add(kind, text) {
    this.entries.push({ t: Date.now() - this.t0, kind, text });
  }

  /**
   * Human-readable lines: `+ms kind text`, long frames (tokens) clipped. A long
   * transcript keeps its first `head` and last `tail` entries.
   */
  toString(head = 40, tail = 80) {
    const line = (e) => `  +${e.t}ms ${e.kind} ${clip(e.text)}`;
    if (this.entries.length <= head + tail) return this.entries.map(line).join('\n');
    return [
      ...this.entries.slice(0, head).map(line),
      `  … ${this.entries.length - head - tail} entries left out …`,
      ...this.entries.slice(-tail).map(line),
    ].join('\n');
  }
}

/**
 * A `ws` WebSocket subclass for the SDK's `websocket` option that records every frame
 * into `transcript` and keeps its instances in `sockets` (so a test can kill the live
 * socket abruptly).
 */
function recordingWebSocket(transcript, sockets) {
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols, options) {
      super(url, protocols, options);
      sockets.push(this);
      transcript.add('ws', `open ${url}`);
      this.on('message', (data, isBinary) => {
        transcript.add('<', isBinary ? `<binary ${data.length} bytes>` : data.toString());
      });
      this.on('close', (code, reason) => transcript.add('ws', `closed ${code} ${reason.toString()}`));
      this.on('error', (e) => transcript.add('ws', `error ${e.message}`));
    }

    send(data, ...rest) {
      transcript.add('>', typeof data === 'string' ? data : `<binary ${data.length} bytes>`);
      return super.send(data, ...rest);
    }
  };
}

const CLIENT_EVENTS = ['connecting', 'connected', 'disconnected', 'error', 'subscribed', 'subscribing', 'unsubscribed'];
const SUB_EVENTS = ['subscribing', 'subscribed', 'unsubscribed', 'error', 'join', 'leave'];

/**
 * A `centrifuge` SDK client for `node`, not yet connected. Extra fields:
 * `client.transcript` (frames and events), `client.sockets` (the ws instances, latest
 * last), `client.explain()` (the transcript as text, for assertion messages).
 *
 * Options: `user` (token subject, default 'user-1'), `token` (explicit token; '' for
 * none), `claims` (extra connection claims), `protobuf` (true: the SDK's Protobuf build,
 * binary frames; payloads are then bytes, see `jsonBytes`/`fromJsonBytes`), plus any SDK
 * option (getToken, minReconnectDelay, ...). Reconnect delays default low to keep tests
 * fast.
 */
export function newClient(node, { user = 'user-1', token, claims = {}, url, protobuf = false, ...options } = {}) {
  const transcript = new Transcript();
  const sockets = [];
  const Sdk = protobuf ? CentrifugeProtobuf : Centrifuge;
  const client = new Sdk(url ?? node.wsUrl, {
    token: token ?? node.token({ sub: user, ...claims }),
    websocket: recordingWebSocket(transcript, sockets),
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    timeout: 4000,
    ...options,
  });
  for (const ev of CLIENT_EVENTS) {
    client.on(ev, (ctx) => transcript.add('event', `client ${ev} ${JSON.stringify(ctx)}`));
  }
  client.transcript = transcript;
  client.sockets = sockets;
  client.explain = () => `client transcript:\n${transcript}`;
  liveClients.add({ close: () => client.disconnect() });
  return client;
}

/** A value as the JSON bytes a Protobuf client sends as data. */
export function jsonBytes(value) {
  return new TextEncoder().encode(JSON.stringify(value));
}

/** The value in JSON bytes a Protobuf client received (undefined for none). */
export function fromJsonBytes(bytes) {
  return bytes === undefined || bytes.length === 0 ? undefined : JSON.parse(new TextDecoder().decode(bytes));
}

/**
 * A subscription on `client` whose events go into the client's transcript and whose
 * publications are collected in `sub.pubs` (every delivery, duplicates included).
 */
export function newSub(client, channel, options = {}) {
  const sub = client.newSubscription(channel, options);
  sub.pubs = [];
  sub.on('publication', (ctx) => {
    sub.pubs.push(ctx);
    client.transcript.add('event', `sub ${channel} publication offset=${ctx.offset} ${JSON.stringify(ctx.data)}`);
  });
  for (const ev of SUB_EVENTS) {
    sub.on(ev, (ctx) => client.transcript.add('event', `sub ${channel} ${ev} ${JSON.stringify(ctx)}`));
  }
  return sub;
}

/**
 * A bare `ws` client speaking the JSON protocol by hand, for what the SDK would never
 * do: not answering pings, not connecting, sending garbage. It does not answer pings.
 */
export class RawClient {
  /** `wsOptions` go to the `ws` constructor (e.g. `{ perMessageDeflate: false }`). */
  constructor(url, { protocols, wsOptions } = {}) {
    this.transcript = new Transcript();
    this.messages = []; // every decoded message, in order (pings are `{}`)
    this.nextId = 1;
    this.waiters = new Set();
    this.ws = new WebSocket(url, protocols, wsOptions);
    // The upgrade response's headers (e.g. the extension the server answered).
    this.upgradeHeaders = new Promise((resolve) => this.ws.once('upgrade', (res) => resolve(res.headers)));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    this.ws.on('error', (e) => this.transcript.add('ws', `error ${e.message}`));
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
        this.transcript.add('ws', `closed ${code} ${reason.toString()}`);
        resolve(this.closeInfo);
        for (const w of this.waiters) w.check();
      });
    });
    this.ws.on('message', (data, isBinary) => {
      const text = data.toString();
      this.transcript.add('<', isBinary ? `<binary ${data.length} bytes>` : text);
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue;
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          msg = { unparsable: line };
        }
        this.messages.push(msg);
      }
      for (const w of this.waiters) w.check();
    });
    liveClients.add({ close: () => this.ws.terminate() });
  }

  /** The transcript as text, for assertion messages. */
  explain() {
    return `raw client transcript:\n${this.transcript}`;
  }

  /** Sends a string as is, or an object as one JSON text frame. */
  send(msg) {
    const text = typeof msg === 'string' ? msg : JSON.stringify(msg);
    this.transcript.add('>', text);
    this.ws.send(text);
  }

  /** Sends `{"id": <next>, <method>: params}` and resolves to its reply. */
  async command(method, params = {}, { timeout = 3000 } = {}) {
    const id = this.nextId++;
    this.send({ id, [method]: params });
    return this.next((m) => m.id === id, { timeout, what: `reply to ${method} id=${id}` });
  }

  /** Connects with `token` and resolves to the connect reply (throws on error). */
  async connect(token) {
    await this.opened;
    const reply = await this.command('connect', token ? { token } : {});
    if (!reply.connect) throw new Error(`connect failed: ${JSON.stringify(reply)}\n${this.explain()}`);
    return reply.connect;
  }

  /** The first message (received so far or later) matching `pred`. */
  next(pred, { timeout = 3000, what = 'message' } = {}) {
    return new Promise((resolve, reject) => {
      const w = {
        check: () => {
          const m = this.messages.find(pred);
          if (m) {
            done();
            resolve(m);
          } else if (this.closeInfo) {
            done();
            reject(new Error(`socket closed while waiting for ${what}\n${this.explain()}`));
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeout} ms waiting for ${what}\n${this.explain()}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(w);
      };
      this.waiters.add(w);
      w.check();
    });
  }

  close() {
    this.ws.terminate();
  }
}

/** A raw client to `node`'s WebSocket endpoint. */
export function rawClient(node, opts) {
  return new RawClient(node.wsUrl, opts);
}

/**
 * Disconnects every SDK client and raw socket created through this module, and
 * abandons pending nextEvent() waits (their promises never settle).
 */
export async function closeClients() {
  for (const w of [...pendingWaits]) w.abandon();
  for (const c of liveClients) {
    try {
      c.close();
    } catch {
      // closing twice is fine
    }
  }
  liveClients.clear();
  // Let close frames go out before the next test (or the node's stop) starts.
  await sleep(20);
}
