// The WebSocket close handshake and size limit as the real SDK meets them: a client
// that disconnects gets the server's Close frame back at once (a clean close, not a
// dropped connection), and a client that sends a message over the size limit is closed
// with 1009, which the SDK treats as final, so it does not reconnect into the same
// close again and again.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, closeClients, nextEvent, within, sleep } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({ config: { client: { max_frame_bytes: 4096 } } });
});
afterEach(closeClients);
after(() => node?.stop());

/** Resolves with the `ws` close event's code once `socket` has closed. */
function socketClosed(socket) {
  return new Promise((resolve) => socket.once('close', (code) => resolve(code)));
}

test('disconnect() ends with the server answering the Close frame', { timeout: 10000 }, async () => {
  const client = newClient(node, { user: 'leaver' });
  const connected = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  await connected;
  const socket = client.sockets.at(-1);
  const closed = socketClosed(socket);
  client.disconnect();
  // `ws` reports 1006 when the TCP connection ends without the server's Close frame,
  // and only after its 30 s close timeout when the server never closes it.
  const code = await within(closed, 2000);
  assert.ok(code !== null, `the socket did not close within 2 s\n${client.explain()}`);
  assert.notEqual(code, 1006, `no Close frame from the server\n${client.explain()}`);
  assert.equal(client.state, 'disconnected');

  // The node still serves a new connection of the same user.
  const again = newClient(node, { user: 'leaver' });
  const reconnected = nextEvent(again, 'connected', { explain: again.explain });
  again.connect();
  await reconnected;
});

test('a message over max_frame_bytes closes with 1009 and the SDK does not reconnect', { timeout: 15000 }, async () => {
  const client = newClient(node, { user: 'big' });
  const connected = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  await connected;
  const disconnected = nextEvent(client, 'disconnected', { explain: client.explain });
  client.send({ big: 'x'.repeat(8 * 1024) }).catch(() => {});
  const ctx = await disconnected;
  // The SDK's own code for a 1009 close: messageSizeLimit (3), final.
  assert.equal(ctx.code, 3, client.explain());
  assert.match(client.transcript.toString(), /closed 1009 message too big/, client.explain());
  // Well past the reconnect delays (100 ms .. 1 s in these tests): still one socket.
  await sleep(2500);
  assert.equal(client.state, 'disconnected', client.explain());
  assert.equal(client.sockets.length, 1, `the SDK reconnected after 1009\n${client.explain()}`);
});
