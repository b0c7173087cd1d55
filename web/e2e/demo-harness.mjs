// The demo dashboard under test: a real herald node, a proxy in front of it that the tests
// can cut, and the demo backend (web/demo/server) serving the built app (web/demo/dist).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startHerald } from '../../tests/node/lib/herald.mjs';
import { startProxy, waitUntil } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const DEMO = path.resolve(here, '..', 'demo');

/** The `entities` namespace the demo publishes in. */
export const DEMO_CONFIG = {
  namespaces: {
    entities: { history_size: 1000, history_ttl: '10m', allow_subscribe_for_client: true, allow_history_for_subscriber: true },
    editing: { allow_subscribe_for_client: true, presence: true, allow_presence_for_subscriber: true, join_leave: true },
  },
};

/** Starts node, proxy and dashboard; `stack.close()` stops them. */
export async function startDemo() {
  if (!fs.existsSync(path.join(DEMO, 'dist', 'index.html'))) throw new Error('web/demo/dist is missing: run npm run build in web/');
  const stack = {};
  stack.node = await startHerald({ config: DEMO_CONFIG });
  stack.proxy = await startProxy(stack.node.port);
  stack.port = await freePort();
  stack.origin = `http://127.0.0.1:${stack.port}`;
  const args = [
    path.join(DEMO, 'server', 'main.mjs'),
    '--port', String(stack.port),
    '--herald-api', stack.node.url,
    '--herald-ws', `ws://127.0.0.1:${stack.proxy.port}/connection/websocket`,
    '--api-key', stack.node.apiKey,
    '--token-secret', stack.node.secret,
    '--static', path.join(DEMO, 'dist'),
  ];
  stack.output = [];
  stack.demo = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const s of [stack.demo.stdout, stack.demo.stderr]) s.on('data', (d) => stack.output.push(String(d)));
  await waitUntil(() => stack.output.join('').includes('listening on'), { what: 'the demo backend', timeout: 15_000 });

  /** Calls the demo's REST API as `user`. */
  stack.rest = async (user, method, pathname, body) => {
    const res = await fetch(`${stack.origin}${pathname}`, {
      method,
      headers: { 'x-demo-user': user, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  stack.close = async () => {
    stack.demo.kill('SIGTERM');
    await new Promise((resolve) => (stack.demo.exitCode !== null ? resolve() : stack.demo.once('exit', resolve)));
    await stack.proxy.close();
    await stack.node.stop();
  };
  return stack;
}

/** A signed-in tab of the dashboard at `pathname`. */
export async function dashboard(context, stack, user, pathname = '/applications', query = '') {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${user} page error] ${e.message}`));
  await page.goto(`${stack.origin}/login?user=${user}`);
  if (pathname !== '/applications' || query) await page.goto(`${stack.origin}${pathname}${query}`);
  await page.locator('.herald-status[data-state="connected"]').waitFor({ timeout: 15_000 });
  return page;
}
