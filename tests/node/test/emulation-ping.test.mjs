// Pings over the emulated transports: the node pings on the stream and the SDK answers
// with a pong posted to /emulation. With a 1 s ping and a 0.8 s pong timeout, a session
// that lives for 4 s has answered every ping in time, or it would have been closed
// with 3012 (no pong).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { startHerald, newClient, closeClients, nextEvent, sleep, uniq } from '../lib/herald.mjs';

let node;

before(async () => {
  node = await startHerald({ config: { client: { ping_interval: '1s', pong_timeout: '800ms' } } });
});

after(async () => {
  await closeClients();
  await node?.stop();
});

for (const kind of ['http_stream', 'sse']) {
  test(`${kind}: pings are answered through /emulation and the session stays`, { timeout: 15000 }, async () => {
    const pongs = [];
    const client = newClient(node, {
      user: uniq('u'),
      url: [{ transport: kind, endpoint: `${node.url}/connection/${kind}` }],
      emulationEndpoint: `${node.url}/emulation`,
      fetch: async (url, init = {}) => {
        const res = await fetch(url, init);
        if (String(url).endsWith('/emulation') && JSON.parse(init.body).data === '{}') pongs.push(res.status);
        return res;
      },
      readableStream: globalThis.ReadableStream,
      eventsource: EventSource,
    });
    const disconnects = [];
    client.on('disconnected', (ctx) => disconnects.push(ctx));
    const connected = nextEvent(client, 'connected', { explain: client.explain });
    client.connect();
    await connected;
    await sleep(4000);
    assert.deepEqual(disconnects, [], `no disconnect\n${client.explain()}`);
    assert.equal(client.state, 'connected');
    assert.ok(pongs.length >= 3, `at least 3 pongs in 4 s, got ${pongs.length}\n${client.explain()}`);
    assert.ok(pongs.every((s) => s === 204), `every pong delivered: ${pongs}`);
    client.disconnect();
  });
}
