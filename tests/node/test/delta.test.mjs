// Fossil delta compression with the real npm SDK: the SDK's own decoder rebuilds every
// patch Herald makes, and an SDK subscriber with `delta: 'fossil'` sees exactly what a
// plain subscriber sees over a long stream of a state object changing a little each
// time, across disconnects recovered from history. Prints the bytes each one received.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Centrifuge } from 'centrifuge';
import { startHerald, newClient, newSub, rawClient, closeClients, nextEvent, waitUntil, uniq } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({
    config: {
      namespaces: {
        kpi: {
          history_size: 2000,
          history_ttl: '5m',
          allow_subscribe_for_client: true,
          allowed_delta_types: ['fossil'],
        },
      },
    },
  });
});
afterEach(closeClients);
after(() => node?.stop());

/** A ~2 KB KPI object; each round changes 2 of its 40 metrics (5 %). */
function kpi(round) {
  const out = {};
  for (let i = 0; i < 40; i++) {
    const changes = i % 20 === round % 20;
    out[`metric_${String(i).padStart(3, '0')}`] = {
      value: changes ? 1000 + i * 37 + round * 7919 : 1000 + i * 37,
      unit: 'ms',
      trend: changes ? 'up' : 'flat',
    };
  }
  return out;
}

/** Text with multi-byte characters, mostly the same between rounds. */
function wordy(round) {
  const words = ['naïve', 'Ελληνικά', '€ 12,50', '日本語', 'emoji 😀', 'plain', '"quoted"', 'tab\there'];
  const items = [];
  for (let i = 0; i < 40; i++) items.push(`${words[(i + (i % 7 === round % 7 ? round : 0)) % words.length]} #${i}`);
  return { round, items, note: words[round % words.length].repeat(round % 5) };
}

test("the SDK's own decoder rebuilds Herald's patches byte for byte", { timeout: 20000 }, async () => {
  const channel = `kpi:${uniq('dec')}`;
  const raw = rawClient(node);
  await raw.connect(node.token({ sub: uniq('u') }));
  const reply = await raw.command('subscribe', { channel, delta: 'fossil' });
  assert.equal(reply.subscribe?.delta, true, raw.explain());

  const sent = [];
  for (let round = 1; round <= 120; round++) {
    const data = round <= 60 ? kpi(round) : wordy(round);
    sent.push(JSON.stringify(data));
    await node.publish(channel, data);
  }
  const pubs = [];
  await waitUntil(() => {
    pubs.length = 0;
    for (const m of raw.messages) if (m.push?.channel === channel && m.push.pub) pubs.push(m.push.pub);
    return pubs.length === sent.length;
  }, { what: `${sent.length} publications`, explain: raw.explain });

  // The SDK's JSON codec, exactly as it runs for a delta subscription.
  const codec = new Centrifuge(node.wsUrl)._codec;
  let prev;
  let patches = 0;
  for (const [k, pub] of pubs.entries()) {
    assert.equal(typeof pub.data, 'string', 'delta data is a JSON string');
    const { newData, newPrevValue, isDelta } = codec.applyDeltaIfNeeded(pub, prev);
    assert.equal(new TextDecoder().decode(newPrevValue), sent[k], `publication ${k + 1}`);
    assert.deepEqual(newData, JSON.parse(sent[k]));
    if (isDelta) patches++;
    prev = newPrevValue;
  }
  assert.equal(pubs[0].delta, undefined, 'the first publication is full');
  assert.ok(patches > pubs.length / 2, `${patches} patches of ${pubs.length}`);
});

/** Bytes of every text frame a client received (pings and replies included). */
function bytesReceived(client) {
  return client.transcript.entries
    .filter((e) => e.kind === '<')
    .reduce((n, e) => n + Buffer.byteLength(e.text), 0);
}

test('a delta subscriber and a plain one see the same 1000 publications across recoveries', { timeout: 120000 }, async () => {
  const channel = `kpi:${uniq('state')}`;
  const total = 1000;
  const deltaClient = newClient(node, { user: uniq('delta'), minReconnectDelay: 50, maxReconnectDelay: 200 });
  const plainClient = newClient(node, { user: uniq('plain') });
  const deltaSub = newSub(deltaClient, channel, { delta: 'fossil' });
  const plainSub = newSub(plainClient, channel);
  const ready = [nextEvent(deltaSub, 'subscribed'), nextEvent(plainSub, 'subscribed')];
  deltaClient.connect();
  plainClient.connect();
  deltaSub.subscribe();
  plainSub.subscribe();
  await Promise.all(ready);

  const published = [];
  const resubscribes = [];
  deltaSub.on('subscribed', (ctx) => resubscribes.push(ctx));
  for (let round = 1; round <= total; round++) {
    if (round === 300) {
      // Away by choice: the SDK resubscribes with recovery when it connects again.
      deltaClient.disconnect();
    }
    if (round === 350) deltaClient.connect();
    if (round === 700) {
      // The network drops: no close frame, the SDK reconnects by itself.
      deltaClient.sockets.at(-1).terminate();
    }
    const data = kpi(round);
    published.push(data);
    await node.publish(channel, data);
  }
  const explain = () => `${deltaClient.explain()}`;
  await waitUntil(() => deltaSub.pubs.length >= total && plainSub.pubs.length >= total, {
    timeout: 20000,
    what: `${total} publications each`,
    explain,
  });
  assert.deepEqual(
    resubscribes.map((c) => [c.wasRecovering, c.recovered]),
    [[true, true], [true, true]],
    `two resubscribes, both recovered\n${explain()}`,
  );
  assert.deepEqual(deltaSub.pubs.map((p) => p.offset), plainSub.pubs.map((p) => p.offset));
  assert.deepEqual(deltaSub.pubs.map((p) => p.data), plainSub.pubs.map((p) => p.data));
  assert.deepEqual(plainSub.pubs.map((p) => p.data), published);

  // What went over the wire: every publication, live or recovered in a subscribe reply.
  const wire = deltaClient.transcript.entries
    .filter((e) => e.kind === '<')
    .flatMap((e, frame) =>
      e.text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l))
        .flatMap((m) =>
          m.push?.pub
            ? [{ ...m.push.pub, recovered: false, frame }]
            : (m.subscribe?.publications ?? []).map((p) => ({ ...p, recovered: true, frame })),
        ),
    );
  // A frame can reach the socket after the SDK has let go of it (it was already in
  // flight when the client disconnected or the socket was killed); the SDK ignores it,
  // resubscribes from the offset it processed, and the server sends its publications
  // again in the recovery reply. A frame carries every push queued at its write, so
  // that is one frame per disruption, each repeat a live publication of it repeated by
  // a recovery, and never anything else sent twice.
  const seen = new Map();
  const liveFrame = new Map();
  for (const p of wire) {
    seen.set(p.offset, [...(seen.get(p.offset) ?? []), p.recovered]);
    if (!p.recovered && !liveFrame.has(p.offset)) liveFrame.set(p.offset, p.frame);
  }
  assert.deepEqual([...seen.keys()].sort((a, b) => a - b), plainSub.pubs.map((p) => p.offset), 'every offset went out');
  const repeats = [...seen.entries()].filter(([, how]) => how.length > 1);
  const repeatedFrames = new Set(repeats.map(([offset]) => liveFrame.get(offset)));
  assert.ok(repeatedFrames.size <= 2, `repeats from at most one frame per disruption: ${JSON.stringify(repeats)}`);
  for (const [offset, how] of repeats) {
    assert.deepEqual(how, [false, true], `offset ${offset} went out live and then once more in a recovery`);
  }
  const patches = wire.filter((p) => p.delta).length;
  assert.ok(patches > total * 0.9, `${patches} of ${total} publications came as patches`);
  const withDelta = bytesReceived(deltaClient);
  const without = bytesReceived(plainClient);
  const size = JSON.stringify(published[0]).length;
  const patchBytes = wire.filter((p) => p.delta).reduce((n, p) => n + Buffer.byteLength(p.data), 0);
  console.log(
    `delta compression: ${total} publications of a ${size} byte object changing 5 %: ` +
      `${without} bytes without delta (${Math.round(without / total)} per publication), ` +
      `${withDelta} bytes with fossil delta (${Math.round(withDelta / total)} per publication, ` +
      `${patches} of them patches of ${Math.round(patchBytes / patches)} bytes on average, 2 recoveries), ${(without / withDelta).toFixed(1)}x less`,
  );
});
