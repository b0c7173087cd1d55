// A real `redis-server` for the Node suites that run several nodes on one backbone:
// on a free port of its own (never the machine's shared 6379), keeping nothing on disk,
// killed on stop and when the test process exits.
//
//   const redis = await startRedis();   // { port, url, cli(...args), stop() }

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, sleep } from './herald.mjs';

const liveRedis = new Set();
process.on('exit', () => {
  for (const child of liveRedis) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

function redisCli(port, ...args) {
  return new Promise((resolve) => {
    execFile('redis-cli', ['-p', String(port), ...args], { timeout: 2000 }, (err, stdout) =>
      resolve(err ? `ERR ${err.message}` : stdout.trim()),
    );
  });
}

/** A `redis-server` keeping nothing on disk, on a free port; ready when it answers PING. */
export async function startRedis() {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-redis-'));
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    liveRedis.add(child);
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (output = (output + d).slice(-4000)));
    child.stderr.setEncoding('utf8').on('data', (d) => (output = (output + d).slice(-4000)));
    let exitInfo = null;
    let spawnError = null;
    const exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        liveRedis.delete(child);
        resolve((exitInfo = { code, signal }));
      }),
    );
    child.once('error', (e) => (spawnError = e));
    const stop = async () => {
      if (exitInfo === null && !spawnError) {
        child.kill('SIGKILL');
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    };
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && exitInfo === null && !spawnError) {
      if ((await redisCli(port, 'PING')) === 'PONG') {
        return { port, url: `redis://127.0.0.1:${port}`, stop, cli: (...a) => redisCli(port, ...a) };
      }
      await sleep(20);
    }
    await stop();
    if (spawnError) throw new Error(`cannot run redis-server (apt-get install redis-server): ${spawnError.message}`);
    // Someone took the free port between our probe and redis' bind: pick another.
    if (/address already in use/i.test(output) && attempt < 3) continue;
    throw new Error(`redis-server on port ${port} did not answer PING (exit: ${JSON.stringify(exitInfo)})\n${output}`);
  }
}

