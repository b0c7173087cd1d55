// Test helpers: a real Herald node (through the conformance suite's harness) and the
// demo backend as a child process on a free port.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHerald, waitUntil, within } from '../../../tests/node/lib/herald.mjs';

export { closeClients, rawClient, sleep, startHerald, waitUntil } from '../../../tests/node/lib/herald.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const DEMO_DIR = path.resolve(here, '..');
export const MAIN = path.join(DEMO_DIR, 'server', 'main.mjs');

/** The entity namespace the demo publishes to. */
export const ENTITIES_NAMESPACE = Object.freeze({
  history_size: 1000,
  history_ttl: '10m',
  allow_subscribe_for_client: true,
  allow_history_for_subscriber: true,
});

/** A Herald node with the `entities` namespace. */
export function startNode() {
  return startHerald({ config: { namespaces: { entities: ENTITIES_NAMESPACE } } });
}

/** A replacement for `node` (stopped): same port, secret, API key and configuration. */
export function restartNode(node) {
  return startHerald({ ...node.spec, base: {}, port: node.port });
}

// Every demo still running, killed if the test process exits without stopping it.
const liveDemos = new Set();
process.on('exit', () => {
  for (const child of liveDemos) child.kill('SIGKILL');
});

/** Runs main.mjs with `args` to its exit (for flag errors); resolves {code, stdout, stderr}. */
export function runDemo(args, { env = {}, timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd: DEMO_DIR,
      env: { ...cleanEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`main.mjs ${args.join(' ')} did not exit within ${timeout} ms\n${stderr}`));
    }, timeout);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The environment without DEMO_* variables, so only what a test passes applies. */
function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DEMO_')) env[k] = v;
  return env;
}

/** A running demo backend. Create with {@link startDemo}. */
export class Demo {
  constructor(child, url) {
    this.child = child;
    this.url = url;
    this.stdout = '';
    this.stderr = '';
    this.exitInfo = null;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        liveDemos.delete(child);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
  }

  /**
   * One request. `user` sets X-Demo-User; `body` is sent as JSON, `raw` as is.
   * Resolves to {status, headers, body (parsed JSON, else text), text}.
   */
  async request(method, urlPath, { user, body, raw, headers = {} } = {}) {
    const h = { ...headers };
    if (user !== undefined) h['X-Demo-User'] = user;
    let payload;
    if (raw !== undefined) payload = raw;
    else if (body !== undefined) payload = JSON.stringify(body);
    if (payload !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
    const res = await fetch(`${this.url}${urlPath}`, { method, headers: h, body: payload, redirect: 'manual' });
    const text = await res.text();
    let parsed = text;
    if ((res.headers.get('content-type') ?? '').startsWith('application/json')) parsed = JSON.parse(text);
    return { status: res.status, headers: res.headers, body: parsed, text };
  }

  get(urlPath, opts) {
    return this.request('GET', urlPath, opts);
  }

  /** Creates an application as `user`; asserts 201 and returns the entity. */
  async create(user, fields) {
    const r = await this.request('POST', '/api/applications', { user, body: fields });
    if (r.status !== 201) throw new Error(`create as ${user} ${JSON.stringify(fields)}: ${r.status} ${r.text}`);
    return r.body;
  }

  /** Patches `entity` (at its version) as `user`; asserts 200 and returns the entity. */
  async patch(user, entity, fields) {
    const r = await this.request('PATCH', `/api/applications/${entity.id}`, {
      user,
      body: { version: entity.version, ...fields },
    });
    if (r.status !== 200) throw new Error(`patch as ${user} ${JSON.stringify(fields)}: ${r.status} ${r.text}`);
    return r.body;
  }

  /** Deletes `entity` as `user`; asserts 200 and returns {id, version}. */
  async remove(user, entity) {
    const r = await this.request('DELETE', `/api/applications/${entity.id}`, { user });
    if (r.status !== 200) throw new Error(`delete as ${user}: ${r.status} ${r.text}`);
    return r.body;
  }

  async outbox() {
    return (await this.get('/api/outbox')).body;
  }

  /** Waits until the outbox has nothing pending; returns the counts. */
  async drained({ timeout = 10000 } = {}) {
    let last;
    await waitUntil(
      async () => {
        last = await this.outbox();
        return last.pending === 0;
      },
      { timeout, what: 'the outbox to drain', explain: () => `outbox ${JSON.stringify(last)}\n${this.stderr}` },
    );
    return last;
  }

  /** SIGTERM (or `signal`); resolves to the exit info. */
  async stop({ signal = 'SIGTERM', timeout = 5000 } = {}) {
    if (this.exitInfo === null) {
      this.child.kill(signal);
      if ((await within(this.exited, timeout)) === null) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    return this.exitInfo;
  }
}

/**
 * Starts the demo on a free port (`--port 0`) for `node` (or with `heraldApi` instead of
 * the node's URL, e.g. a proxy) and waits for its `listening` line.
 */
export async function startDemo(node, { heraldApi, args = [], env = {}, timeout = 10000 } = {}) {
  const child = spawn(
    process.execPath,
    [
      MAIN,
      '--port',
      '0',
      '--herald-api',
      heraldApi ?? node.url,
      '--herald-ws',
      node.wsUrl,
      '--api-key',
      node.apiKey,
      '--token-secret',
      node.secret,
      ...args,
    ],
    { cwd: DEMO_DIR, env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  liveDemos.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stdout.setEncoding('utf8');
  const listening = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /^demo: listening on (http:\/\/127\.0\.0\.1:\d+)\n/.exec(stdout);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`the demo exited with ${code} before listening\n${stderr}`)));
  });
  child.stderr.on('data', (d) => {
    stderr += d;
    if (process.env.DEMO_TEST_VERBOSE) process.stderr.write(d);
  });
  const url = await within(listening, timeout);
  if (url === null) {
    child.kill('SIGKILL');
    throw new Error(`the demo did not print its listening line within ${timeout} ms\n${stderr}`);
  }
  const demo = new Demo(child, url);
  Object.defineProperty(demo, 'stdout', { get: () => stdout });
  Object.defineProperty(demo, 'stderr', { get: () => stderr });
  return demo;
}

/** The `data` of every publication in `channel`'s history on `node`, oldest first. */
export async function history(node, channel) {
  const result = await node.api('history', { channel, limit: 1000 });
  return result.publications.map((p) => p.data);
}

/** Decodes and verifies an HS256 JWT with `secret`; returns {header, claims} or throws. */
export function verifyHs256(token, secret) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error(`not a JWT: ${token}`);
  const [h, c, s] = parts;
  const expected = crypto.createHmac('sha256', secret).update(`${h}.${c}`).digest('base64url');
  if (!crypto.timingSafeEqual(Buffer.from(s), Buffer.from(expected))) throw new Error('bad signature');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()),
    claims: JSON.parse(Buffer.from(c, 'base64url').toString()),
  };
}
