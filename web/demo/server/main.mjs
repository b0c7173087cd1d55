#!/usr/bin/env node
// The Herald demo backend: `node web/demo/server/main.mjs --help` lists the flags;
// web/demo/README.md ("## Backend") is the contract.

import fs from 'node:fs';
import { USAGE, UsageError, parseConfig } from './config.mjs';
import { createServer } from './http.mjs';
import { OutboxPublisher } from './outbox.mjs';
import { openStore } from './store.mjs';

const log = (line) => process.stderr.write(`demo: ${line}\n`);

function fail(message, status) {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(status);
}

let config;
try {
  config = parseConfig(process.argv.slice(2), process.env);
} catch (e) {
  if (e instanceof UsageError) fail(`${e.message}\n${USAGE.split('\n')[0]}\n(--help lists every flag)`, 2);
  throw e;
}
if (config.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (config.staticDir !== null) {
  let isDir = false;
  try {
    isDir = fs.statSync(config.staticDir).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) fail(`--static: ${config.staticDir} is not a directory`, 2);
}

let store;
try {
  store = openStore(config.db);
} catch (e) {
  fail(`cannot open the database ${config.db}: ${e.message}`, 1);
}
const publisher = new OutboxPublisher(store, {
  heraldApi: config.heraldApi,
  apiKey: config.apiKey,
  log,
  verbose: config.verbose,
});
store.onCommit = () => publisher.wake();

const server = createServer({ store, config, log });
server.on('error', (e) => {
  store.close();
  fail(`cannot listen on ${config.host}:${config.port}: ${e.message}`, 1);
});
server.listen(config.port, config.host, () => {
  const { port } = server.address();
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  process.stdout.write(`demo: listening on http://${host}:${port}\n`);
  publisher.start();
});

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  const closed = new Promise((resolve) => server.close(resolve));
  server.closeIdleConnections();
  // Requests in flight get a moment to finish; then every connection goes.
  const force = setTimeout(() => server.closeAllConnections(), 1000);
  await publisher.stop();
  await closed;
  clearTimeout(force);
  store.close();
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
