// The hub (src/hub.ts) driven directly in Node against real `herald serve` processes,
// through the real npm `centrifuge` SDK over the `ws` WebSocket. Peers are plain
// functions collecting HubMessages, as the tabs of a browser would receive them.
//
// The servers are started with the Node conformance suite's harness
// (<repo>/tests/node/lib/herald.mjs), which spawns <repo>/target/debug/herald (or
// $HERALD_BIN). `ws` is not a dependency of the web workspace, so it is loaded from the
// conformance suite's node_modules.

import { createHash } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { reconnectPolicy } from '../src/backoff.js';
import { Hub } from '../src/hub.js';
import { DEFAULT_BOUNDS, MemoryOutbox, makeRecord, type OutboxRecord } from '../src/outbox.js';
import { MemoryPositions, type PositionStore } from '../src/positions.js';
import type { HubMessage, HubSettings, HubStatus, TabMessage } from '../src/messages.js';
import type { ConnectionState, HeraldError, Position, Publication, ResyncEvent, SubscribedEvent } from '../src/types.js';

// ---- the harness ------------------------------------------------------------------------

/** The repository root (this file is <repo>/web/packages/web/test/…); HERALD_REPO_ROOT overrides it. */
const REPO = process.env.HERALD_REPO_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const TESTS_NODE = path.join(REPO, 'tests', 'node');
const WebSocketImpl: unknown = createRequire(path.join(TESTS_NODE, 'package.json'))('ws');

interface HeraldNode {
  port: number;
  secret: string;
  apiKey: string;
  url: string;
  wsUrl: string;
  exitInfo: unknown;
  token(claims?: Record<string, unknown>): string;
  api(method: string, params?: Record<string, unknown>): Promise<any>;
  publish(channel: string, data: unknown, extra?: Record<string, unknown>): Promise<{ offset: number; epoch: string }>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  logs(lines?: number): string;
  stop(opts?: { signal?: string; timeout?: number }): Promise<unknown>;
}

interface Harness {
  startHerald(opts?: {
    config?: Record<string, unknown>;
    port?: number;
    secret?: string;
    apiKey?: string;
  }): Promise<HeraldNode>;
  uniq(prefix?: string): string;
}

const harnessUrl = pathToFileURL(path.join(TESTS_NODE, 'lib', 'herald.mjs')).href;
const { startHerald, uniq } = (await import(/* @vite-ignore */ harnessUrl)) as Harness;

/** Namespaces added to the harness's BASE_CONFIG for these tests. */
const CONFIG = {
  namespaces: {
    // Like `tiny` (history of 3), but subscribers may read history, so that a gap the
    // server can no longer fill is told apart from history being forbidden.
    tinyh: { history_size: 3, history_ttl: '5m', allow_subscribe_for_client: true, allow_history_for_subscriber: true },
    // History kept (so recovery works), but clients may not read it.
    nohist: { history_size: 100, history_ttl: '5m', allow_subscribe_for_client: true },
  },
};

// ---- helpers ---------------------------------------------------------------------------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(fn: () => T | Promise<T>, what: string, explain: () => string = () => '', timeout = 8000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}\n${explain()}`);
    await sleep(20);
  }
}

/** A tab as the hub sees it: everything the hub sends it, in order. */
class Peer {
  readonly msgs: HubMessage[] = [];
  constructor(readonly id: string) {}

  send = (m: HubMessage): void => {
    // A copy: the hub must not be able to change what was delivered after the fact.
    this.msgs.push(JSON.parse(JSON.stringify(m)) as HubMessage);
  };

  pubs(channel: string): Publication[] {
    return this.msgs.flatMap((m) => (m.type === 'pub' && m.pub.channel === channel ? [m.pub] : []));
  }
  data(channel: string): unknown[] {
    return this.pubs(channel).map((p) => p.data);
  }
  offsets(channel: string): (number | undefined)[] {
    return this.pubs(channel).map((p) => p.offset);
  }
  subscribed(channel: string): SubscribedEvent[] {
    return this.msgs.flatMap((m) => (m.type === 'subscribed' && m.event.channel === channel ? [m.event] : []));
  }
  resyncs(channel: string): ResyncEvent[] {
    return this.msgs.flatMap((m) => (m.type === 'resync' && m.event.channel === channel ? [m.event] : []));
  }
  errors(): HeraldError[] {
    return this.msgs.flatMap((m) => (m.type === 'error' ? [m.error] : []));
  }
  statuses(): HubStatus[] {
    return this.msgs.flatMap((m) => (m.type === 'status' ? [m.status] : []));
  }
  /** The states seen, consecutive repeats collapsed. */
  states(): ConnectionState[] {
    const out: ConnectionState[] = [];
    for (const s of this.statuses()) if (out[out.length - 1] !== s.state) out.push(s.state);
    return out;
  }
  state(): ConnectionState | undefined {
    return this.statuses().at(-1)?.state;
  }
  /** The messages about `channel` (and statuses), as text for assertion messages. */
  explain(): string {
    return `peer ${this.id} received:\n${this.msgs.map((m) => `  ${JSON.stringify(m)}`).join('\n')}`;
  }
}

/** A small TCP proxy in front of a node: counts connections, survives the node's restarts. */
class Proxy {
  connections = 0;
  /** While set, new connections are accepted and dropped at once (a node that is down). */
  refuse = false;
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | null = null;
  port = 0;

  constructor(private readonly target: () => number) {}

  async start(): Promise<void> {
    this.server = net.createServer((client) => {
      this.connections++;
      if (this.refuse) return void client.destroy();
      const upstream = net.connect(this.target(), '127.0.0.1');
      this.sockets.add(client);
      this.sockets.add(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => this.sockets.delete(client));
      upstream.on('close', () => this.sockets.delete(upstream));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  /** Drops every open connection (the network failed), without stopping the node. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

function settingsFor(url: string): HubSettings {
  return {
    url,
    transports: [],
    connectTimeoutMs: 3000,
    reconnect: reconnectPolicy({ baseDelayMs: 100, maxDelayMs: 500, minDelayMs: 50 }),
    name: 'test',
    scope: 'x',
    persistPositions: false,
  };
}

const hubs: Hub[] = [];
const proxies: Proxy[] = [];
const extraNodes: HeraldNode[] = [];

function newHub(url: string, outbox: MemoryOutbox | null = null, change: Partial<HubSettings> = {}, positions: PositionStore | null = null): Hub {
  const hub = new Hub({ id: `hub-${hubs.length}`, settings: { ...settingsFor(url), ...change }, positions, outbox, websocket: WebSocketImpl });
  hubs.push(hub);
  return hub;
}

/** Adds `peer` to `hub` with a token of `token()` and says hello (connect wanted). */
function join(hub: Hub, peer: Peer, token: () => Promise<string | null>, url: string): void {
  hub.addPeer(peer.id, peer.send, token);
  const hello: TabMessage = { type: 'hello', settings: settingsFor(url), hasToken: true, online: true, visible: true, wantConnect: true };
  hub.receive(peer.id, hello);
}

const attach = (hub: Hub, peer: Peer, channel: string, since: Position | null = null) =>
  hub.receive(peer.id, { type: 'attach', channel, since });
const detach = (hub: Hub, peer: Peer, channel: string) => hub.receive(peer.id, { type: 'detach', channel });

const connected = (peer: Peer) => waitFor(() => peer.state() === 'connected', `${peer.id} connected`, () => peer.explain());
const subscribedTo = (peer: Peer, channel: string, n = 1) =>
  waitFor(() => peer.subscribed(channel).length >= n, `${peer.id} subscribed to ${channel}`, () => peer.explain());
const received = (peer: Peer, channel: string, n: number) =>
  waitFor(() => peer.pubs(channel).length >= n, `${n} publications of ${channel} at ${peer.id}`, () => peer.explain());

/** Server-side subscriber count of `channel` (0 when the node has none). */
async function numClients(node: HeraldNode, channel: string): Promise<number> {
  const res = (await node.api('channels', { pattern: channel })) as { channels: Record<string, { num_clients: number }> };
  return res.channels[channel]?.num_clients ?? 0;
}

let node: HeraldNode;
const tokenOf = (n: () => HeraldNode) => async () => n().token({ sub: 'u1' });

beforeAll(async () => {
  node = await startHerald({ config: CONFIG });
});

afterEach(async () => {
  for (const h of hubs.splice(0)) h.close();
  for (const p of proxies.splice(0)) await p.close();
  for (const n of extraNodes.splice(0)) await n.stop({ signal: 'SIGKILL' });
});

afterAll(async () => {
  await node?.stop();
});

// ---- tests -----------------------------------------------------------------------------

describe('Hub against a real herald node', () => {
  it('two peers on one channel share one server subscription and get every publication once, in order', async () => {
    const channel = uniq('share');
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    join(hub, b, tokenOf(() => node), node.wsUrl);
    await connected(a);
    expect(b.state()).toBe('connected');
    expect(a.statuses().at(-1)).toMatchObject({ state: 'connected', transport: 'websocket', tabs: 2, attempt: 0 });

    attach(hub, a, channel);
    attach(hub, b, channel);
    await subscribedTo(a, channel);
    await subscribedTo(b, channel);
    const sa = a.subscribed(channel)[0]!;
    expect(sa).toMatchObject({ wasRecovering: false, recovered: false });
    expect(sa.position).toMatchObject({ offset: 0 });
    expect(sa.position!.epoch).not.toBe('');
    // One connection, one server-side subscription for both tabs.
    expect(await numClients(node, channel)).toBe(1);
    // (Waited for: connections of hubs closed by earlier tests may take a moment to go.)
    await waitFor(async () => (await node.metric('herald_connections')) === 1, 'one connection on the node', () => a.explain(), 3000);

    const sent: { offset: number; epoch: string }[] = [];
    for (let i = 1; i <= 5; i++) sent.push(await node.publish(channel, { i }));
    await received(a, channel, 5);
    await received(b, channel, 5);
    await sleep(200); // nothing more may arrive
    for (const p of [a, b]) {
      expect(p.data(channel), p.explain()).toEqual([1, 2, 3, 4, 5].map((i) => ({ i })));
      expect(p.offsets(channel)).toEqual(sent.map((s) => s.offset));
      expect(p.pubs(channel).every((x) => x.epoch === sent[0]!.epoch && x.channel === channel)).toBe(true);
      expect(p.resyncs(channel)).toEqual([]);
    }

    // One tab leaves: the other keeps receiving, the leaver gets nothing more.
    detach(hub, a, channel);
    await node.publish(channel, { i: 6 });
    await node.publish(channel, { i: 7 });
    await received(b, channel, 7);
    await sleep(200);
    expect(b.data(channel)).toEqual([1, 2, 3, 4, 5, 6, 7].map((i) => ({ i })));
    expect(a.pubs(channel)).toHaveLength(5);
    expect(await numClients(node, channel)).toBe(1);

    // The round trip is measured once connected.
    await waitFor(() => typeof b.statuses().at(-1)?.latencyMs === 'number', 'a latency measurement', () => b.explain());

    // A tab that says goodbye is gone: the count of tabs follows.
    hub.receive(a.id, { type: 'bye' });
    expect(b.statuses().at(-1)!.tabs).toBe(1);

    // The last tab leaves: after the linger the server subscription goes too.
    detach(hub, b, channel);
    await waitFor(async () => (await numClients(node, channel)) === 0, 'the server subscription to end', () => b.explain(), 5000);
    await node.publish(channel, { i: 8 });
    await sleep(200);
    expect(b.pubs(channel)).toHaveLength(7);
  });

  it('a peer attaching later from an older position gets the missed publications once, in order (recent buffer)', async () => {
    // `tiny` keeps 3 publications and forbids history reads: only the hub's own recent
    // publications can fill this peer's gap of 3 (3, 4, 5) — and later, one of 5.
    const channel = `tiny:${uniq('late')}`;
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    join(hub, b, tokenOf(() => node), node.wsUrl);
    attach(hub, a, channel);
    await subscribedTo(a, channel);
    const epoch = a.subscribed(channel)[0]!.position!.epoch;
    for (let i = 1; i <= 5; i++) await node.publish(channel, { i });
    await received(a, channel, 5);

    attach(hub, b, channel, { epoch, offset: 2 });
    await received(b, channel, 3);
    expect(b.subscribed(channel)).toEqual([{ channel, wasRecovering: true, recovered: true, position: { epoch, offset: 2 } }]);
    // The subscribed event comes before the recovered publications.
    const firstPub = b.msgs.findIndex((m) => m.type === 'pub');
    const sub = b.msgs.findIndex((m) => m.type === 'subscribed');
    expect(sub).toBeLessThan(firstPub);

    await node.publish(channel, { i: 6 });
    await received(b, channel, 4);
    await received(a, channel, 6);
    await sleep(200);
    expect(b.offsets(channel), b.explain()).toEqual([3, 4, 5, 6]);
    expect(b.data(channel)).toEqual([3, 4, 5, 6].map((i) => ({ i })));
    expect(a.offsets(channel), a.explain()).toEqual([1, 2, 3, 4, 5, 6]);
    expect(b.resyncs(channel)).toEqual([]);
    expect(b.errors()).toEqual([]);

    // Further behind than the node's history reaches: still filled from the hub's.
    const c = new Peer('c');
    join(hub, c, tokenOf(() => node), node.wsUrl);
    attach(hub, c, channel, { epoch, offset: 1 });
    await received(c, channel, 5);
    await sleep(150);
    expect(c.offsets(channel), c.explain()).toEqual([2, 3, 4, 5, 6]);
    expect(c.subscribed(channel)).toMatchObject([{ wasRecovering: true, recovered: true }]);
    expect([...c.resyncs(channel), ...c.errors()]).toEqual([]);
  });

  it('the stored position stops where the last peer left: publications while the channel lingers are kept for the next peer', async () => {
    // The last tab closes, publications go on, a new tab opens: the new tab starts from
    // the stored position, so that position must be the last one a tab was given, not
    // where the lingering subscription got to with nobody attached.
    const channel = uniq('linger');
    const positions = new MemoryPositions();
    const hub = newHub(node.wsUrl, null, { persistPositions: true }, positions);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    attach(hub, a, channel);
    await subscribedTo(a, channel);
    const epoch = a.subscribed(channel)[0]!.position!.epoch;
    for (let i = 1; i <= 2; i++) await node.publish(channel, { i });
    await received(a, channel, 2);
    await waitFor(async () => (await positions.get(channel))?.offset === 2, 'position 2 stored', () => a.explain(), 3000);

    hub.removePeer(a.id);
    for (let i = 3; i <= 5; i++) await node.publish(channel, { i });
    // Still lingering (1 s), and the writer's batches (100 ms) have had time to land.
    await sleep(200);
    expect(await numClients(node, channel)).toBe(1);
    expect(await positions.get(channel)).toEqual({ epoch, offset: 2 });

    const b = new Peer('b');
    join(hub, b, tokenOf(() => node), node.wsUrl);
    attach(hub, b, channel, await positions.get(channel));
    await received(b, channel, 3);
    await sleep(150);
    expect(b.offsets(channel), b.explain()).toEqual([3, 4, 5]);
    expect(b.subscribed(channel)).toMatchObject([{ wasRecovering: true, recovered: true }]);
    await waitFor(async () => (await positions.get(channel))?.offset === 5, 'position 5 stored', () => b.explain(), 3000);
  });

  it('peers at different positions attaching together: each gets only what it has not seen', async () => {
    const channel = uniq('mixed');
    const sent: { offset: number; epoch: string }[] = [];
    for (let i = 1; i <= 6; i++) sent.push(await node.publish(channel, { i }));
    const epoch = sent[0]!.epoch;
    const hub = newHub(node.wsUrl);
    const peers = [new Peer('at2'), new Peer('at4'), new Peer('at6')];
    for (const p of peers) join(hub, p, tokenOf(() => node), node.wsUrl);
    // All before the subscription is made: the hub subscribes from the earliest (2), the
    // node recovers 3..6, and the peers further on must drop what they have.
    attach(hub, peers[0]!, channel, { epoch, offset: 2 });
    attach(hub, peers[1]!, channel, { epoch, offset: 4 });
    attach(hub, peers[2]!, channel, { epoch, offset: 6 });
    await received(peers[0]!, channel, 4);
    await node.publish(channel, { i: 7 });
    for (const p of peers) await received(p, channel, 1);
    await received(peers[0]!, channel, 5);
    await sleep(200);
    expect(peers[0]!.offsets(channel), peers[0]!.explain()).toEqual([3, 4, 5, 6, 7]);
    expect(peers[1]!.offsets(channel), peers[1]!.explain()).toEqual([5, 6, 7]);
    expect(peers[2]!.offsets(channel), peers[2]!.explain()).toEqual([7]);
    for (const p of peers) {
      expect(p.subscribed(channel)).toMatchObject([{ wasRecovering: true, recovered: true }]);
      expect(p.resyncs(channel)).toEqual([]);
    }
  });

  it('fills from server recovery and history when the hub has not seen the missed publications', async () => {
    const channel = uniq('hist');
    const sent: { offset: number; epoch: string }[] = [];
    for (let i = 1; i <= 5; i++) sent.push(await node.publish(channel, { i }));
    const epoch = sent[0]!.epoch;

    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    join(hub, b, tokenOf(() => node), node.wsUrl);
    await connected(a);

    // The first peer's position is where the hub subscribes from: the server recovers 3..5.
    attach(hub, a, channel, { epoch, offset: 2 });
    await received(a, channel, 3);
    expect(a.subscribed(channel)).toEqual([{ channel, wasRecovering: true, recovered: true, position: { epoch, offset: 2 } }]);

    // A peer further behind than the hub's recent publications reach: read from history.
    attach(hub, b, channel, { epoch, offset: 0 });
    await received(b, channel, 5);
    expect(b.subscribed(channel)).toEqual([{ channel, wasRecovering: true, recovered: true, position: { epoch, offset: 0 } }]);

    await node.publish(channel, { i: 6 });
    await received(a, channel, 4);
    await received(b, channel, 6);
    await sleep(200);
    expect(a.offsets(channel), a.explain()).toEqual([3, 4, 5, 6]);
    expect(b.offsets(channel), b.explain()).toEqual([1, 2, 3, 4, 5, 6]);
    expect(b.data(channel)).toEqual([1, 2, 3, 4, 5, 6].map((i) => ({ i })));
    expect([...a.resyncs(channel), ...b.resyncs(channel)]).toEqual([]);
    expect([...a.errors(), ...b.errors()]).toEqual([]);
  });

  it('a peer from another epoch gets one resync (epoch-changed), then live publications', async () => {
    const channel = uniq('epoch');
    const first = await node.publish(channel, { i: 1 });
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    join(hub, b, tokenOf(() => node), node.wsUrl);

    // The first to attach, with a stale epoch: the hub subscribes from it and the server cannot recover.
    attach(hub, a, channel, { epoch: 'gone-epoch', offset: 7 });
    await waitFor(() => a.resyncs(channel).length === 1, 'a resync for a', () => a.explain());
    expect(a.resyncs(channel)).toEqual([
      { channel, reason: 'epoch-changed', from: { epoch: 'gone-epoch', offset: 7 }, to: { epoch: first.epoch, offset: 1 } },
    ]);
    expect(a.subscribed(channel)).toMatchObject([{ wasRecovering: true, recovered: false }]);

    // A later one, with another stale epoch, while the channel is live.
    attach(hub, b, channel, { epoch: 'older-epoch', offset: 1 });
    await waitFor(() => b.resyncs(channel).length === 1, 'a resync for b', () => b.explain());
    expect(b.resyncs(channel)[0]).toEqual({
      channel,
      reason: 'epoch-changed',
      from: { epoch: 'older-epoch', offset: 1 },
      to: { epoch: first.epoch, offset: 1 },
    });

    await node.publish(channel, { i: 2 });
    await received(a, channel, 1);
    await received(b, channel, 1);
    await sleep(200);
    for (const p of [a, b]) {
      expect(p.resyncs(channel), p.explain()).toHaveLength(1);
      expect(p.pubs(channel)).toEqual([{ channel, data: { i: 2 }, offset: 2, epoch: first.epoch }]);
    }
  });

  it('tiny history: a peer too far behind gets resync history-trimmed (history readable) or history-unavailable (not)', async () => {
    // `tinyh`: history of 3, readable by subscribers.
    const trimmed = `tinyh:${uniq('t')}`;
    // `tiny` (the harness's): history of 3, history reads not allowed for clients.
    const forbidden = `tiny:${uniq('t')}`;
    const tops: Record<string, { offset: number; epoch: string }> = {};
    for (const ch of [trimmed, forbidden]) for (let i = 1; i <= 10; i++) tops[ch] = await node.publish(ch, { i });

    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    attach(hub, a, trimmed, { epoch: tops[trimmed]!.epoch, offset: 2 });
    attach(hub, a, forbidden, { epoch: tops[forbidden]!.epoch, offset: 2 });
    await waitFor(() => a.resyncs(trimmed).length && a.resyncs(forbidden).length, 'both resyncs', () => a.explain());

    expect(a.resyncs(trimmed), a.explain()).toEqual([
      { channel: trimmed, reason: 'history-trimmed', from: { epoch: tops[trimmed]!.epoch, offset: 2 }, to: { epoch: tops[trimmed]!.epoch, offset: 10 } },
    ]);
    expect(a.subscribed(trimmed)).toMatchObject([{ wasRecovering: true, recovered: false }]);
    expect(a.resyncs(forbidden), a.explain()).toEqual([
      { channel: forbidden, reason: 'history-unavailable', from: { epoch: tops[forbidden]!.epoch, offset: 2 }, to: { epoch: tops[forbidden]!.epoch, offset: 10 } },
    ]);
    // Forbidden history is also reported as an error for that channel.
    expect(a.errors().filter((e) => e.channel === forbidden)).toMatchObject([{ kind: 'permission', code: 103 }]);
    expect(a.errors().filter((e) => e.channel === trimmed)).toEqual([]);

    // Nothing of the gap is delivered; live publications continue after the resync.
    expect(a.pubs(trimmed)).toEqual([]);
    await node.publish(trimmed, { i: 11 });
    await received(a, trimmed, 1);
    await sleep(150);
    expect(a.offsets(trimmed)).toEqual([11]);

    // A peer behind by no more than the history holds is recovered in full.
    const b = new Peer('b');
    join(hub, b, tokenOf(() => node), node.wsUrl);
    const fresh = `tinyh:${uniq('t')}`;
    for (let i = 1; i <= 4; i++) tops[fresh] = await node.publish(fresh, { i });
    attach(hub, b, fresh, { epoch: tops[fresh]!.epoch, offset: 1 });
    await received(b, fresh, 3);
    await sleep(150);
    expect(b.offsets(fresh), b.explain()).toEqual([2, 3, 4]);
    expect(b.resyncs(fresh)).toEqual([]);
  });

  it('publishing with an idempotency key twice publishes once', async () => {
    const channel = uniq('idem');
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    attach(hub, a, channel); // publishing is allowed for subscribers
    await subscribedTo(a, channel);

    const publish = async (req: number, data: unknown, key: string | null) => {
      hub.receive(a.id, { type: 'publish', req, channel, data, key });
      return waitFor(
        () => a.msgs.find((m): m is Extract<HubMessage, { type: 'published' }> => m.type === 'published' && m.req === req),
        `the reply to publish ${req}`,
        () => a.explain(),
      );
    };
    const first = await publish(1, { n: 1 }, 'order-42');
    const again = await publish(2, { n: 2 }, 'order-42');
    expect(first, a.explain()).toMatchObject({ ok: true, error: null });
    expect(first.position).toMatchObject({ offset: 1 });
    expect(again.ok).toBe(true);
    expect(again.position).toEqual(first.position);
    const plain = await publish(3, { n: 3 }, null);
    expect(plain).toMatchObject({ ok: true, position: null, error: null });

    const history = (await node.api('history', { channel, limit: 10 })) as { publications: { data: unknown }[] };
    expect(history.publications.map((p) => p.data)).toEqual([{ n: 1 }, { n: 3 }]);
    await received(a, channel, 2);
    await sleep(200);
    expect(a.data(channel)).toEqual([{ n: 1 }, { n: 3 }]);
  });

  // A tab without a position starts at the top, after publications recovered for others.
  it('a tab without a position, attached while another recovers, gets only later publications', async () => {
    const channel = uniq('fresh');
    const sent: { offset: number; epoch: string }[] = [];
    for (let i = 1; i <= 5; i++) sent.push(await node.publish(channel, { i }));
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    join(hub, b, tokenOf(() => node), node.wsUrl);
    attach(hub, a, channel, { epoch: sent[0]!.epoch, offset: 2 });
    attach(hub, b, channel, null);
    await received(a, channel, 3);
    await node.publish(channel, { i: 6 });
    await received(a, channel, 4);
    await received(b, channel, 1);
    await sleep(200);
    expect(a.offsets(channel)).toEqual([3, 4, 5, 6]);
    expect(b.subscribed(channel)[0]!.position, b.explain()).toEqual({ epoch: sent[0]!.epoch, offset: 5 });
    expect(b.offsets(channel), b.explain()).toEqual([6]);
  });

  it('drains an outbox through the connection: in order, once each, with idempotency keys', async () => {
    const channel = uniq('outbox');
    const store = new MemoryOutbox();
    const add = async (data: unknown, key?: string) => {
      const r = makeRecord(channel, data, key === undefined ? {} : { key }, DEFAULT_BOUNDS, Date.now()) as OutboxRecord;
      expect((await store.enqueue(r, DEFAULT_BOUNDS)).ok).toBe(true);
    };
    await add({ n: 1 });
    await add({ n: 2 }, 'same-key');
    await add({ n: 2, retry: true }, 'same-key'); // a retry of the same logical publish
    await add({ n: 3 });

    const hub = newHub(node.wsUrl, store);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    attach(hub, a, channel); // publishing is allowed for subscribers
    await waitFor(async () => (await store.all()).length === 0, 'the outbox to drain', () => a.explain());
    const history = (await node.api('history', { channel, limit: 10 })) as { publications: { data: unknown }[] };
    expect(history.publications.map((p) => p.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(a.msgs.some((m) => m.type === 'outbox')).toBe(true);
    expect(a.errors()).toEqual([]);

    // A publish the node refuses for good is set aside as failed; the rest goes on.
    await add({ n: 4 });
    const forbidden = makeRecord('locked:x', { n: 'nope' }, {}, DEFAULT_BOUNDS, Date.now()) as OutboxRecord;
    await store.enqueue(forbidden, DEFAULT_BOUNDS);
    await add({ n: 5 });
    hub.receive(a.id, { type: 'outbox' });
    await waitFor(async () => (await store.all()).every((r) => r.state === 'failed'), 'the outbox to drain again', () => a.explain());
    const left = await store.all();
    expect(left).toHaveLength(1);
    expect(left[0]).toMatchObject({ id: forbidden.id, state: 'failed', error: { code: 103 } });
    expect(a.errors()).toMatchObject([{ kind: 'outbox-failed', code: 103, channel: 'locked:x' }]);
    const after = (await node.api('history', { channel, limit: 10 })) as { publications: { data: unknown }[] };
    expect(after.publications.map((p) => p.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }]);
  });

  it('a publish while not connected fails at once, as temporary', async () => {
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    hub.addPeer(a.id, a.send, tokenOf(() => node));
    hub.receive(a.id, { type: 'publish', req: 9, channel: 'x', data: 1, key: null });
    const reply = await waitFor(() => a.msgs.find((m) => m.type === 'published'), 'the reply', () => a.explain());
    expect(reply).toMatchObject({ type: 'published', req: 9, ok: false, position: null, error: { kind: 'publish', code: 0, temporary: true } });
  });
});

describe('Hub connection lifecycle against a real herald node', () => {
  it('a restarted node (history lost): reconnecting, then connected, a resync per channel, then live publications', async () => {
    let current = await startHerald({ config: CONFIG });
    extraNodes.push(current);
    const proxy = new Proxy(() => current.port);
    proxies.push(proxy);
    await proxy.start();

    const channel = uniq('restart');
    const hub = newHub(proxy.wsUrl);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => current), proxy.wsUrl);
    attach(hub, a, channel);
    await subscribedTo(a, channel);
    const before = await current.publish(channel, { i: 1 });
    await current.publish(channel, { i: 2 });
    await received(a, channel, 2);
    const connectionsBefore = proxy.connections;

    // Kill the node abruptly: the memory broker's history goes with it.
    const { port, secret, apiKey } = current;
    await current.stop({ signal: 'SIGKILL' });
    extraNodes.splice(extraNodes.indexOf(current), 1);
    await waitFor(() => a.state() === 'reconnecting', 'reconnecting', () => a.explain());
    // Let the hub fail at least one attempt while the node is down (the proxy accepts,
    // then drops the connection): the next attempts must still come.
    await waitFor(() => proxy.connections > connectionsBefore, 'a reconnect attempt while the node is down', () => a.explain(), 3000);
    await sleep(300);

    current = await startHerald({ config: CONFIG, port, secret, apiKey });
    extraNodes.push(current);
    await waitFor(() => a.state() === 'connected', 'connected again', () => `${a.explain()}\nproxy connections: ${proxy.connections}`, 8000);
    expect(a.states(), a.explain()).toEqual(expect.arrayContaining(['connecting', 'connected', 'reconnecting']));
    const states = a.states();
    expect(states.slice(states.lastIndexOf('reconnecting'))).toEqual(['reconnecting', 'connected']);

    await waitFor(() => a.resyncs(channel).length === 1, 'a resync after the restart', () => a.explain());
    const resync = a.resyncs(channel)[0]!;
    expect(resync.reason).toBe('epoch-changed');
    expect(resync.from).toEqual({ epoch: before.epoch, offset: 2 });
    expect(resync.to).toMatchObject({ offset: 0 });
    expect(resync.to!.epoch).not.toBe(before.epoch);

    const after = await current.publish(channel, { i: 3 });
    expect(after.epoch).toBe(resync.to!.epoch);
    await received(a, channel, 3);
    await sleep(200);
    expect(a.pubs(channel).at(-1)).toEqual({ channel, data: { i: 3 }, offset: 1, epoch: after.epoch });
    expect(a.pubs(channel)).toHaveLength(3);
    expect(a.resyncs(channel)).toHaveLength(1);
  });

  it('a dropped connection to a live node: missed publications are recovered once, in order, without a resync', async () => {
    const proxy = new Proxy(() => node.port);
    proxies.push(proxy);
    await proxy.start();
    const channel = uniq('drop');
    const hub = newHub(proxy.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), proxy.wsUrl);
    join(hub, b, tokenOf(() => node), proxy.wsUrl);
    attach(hub, a, channel);
    attach(hub, b, channel);
    await subscribedTo(a, channel);
    await subscribedTo(b, channel);
    for (let i = 1; i <= 3; i++) await node.publish(channel, { i });
    await received(a, channel, 3);
    await received(b, channel, 3);

    // The network goes, and stays away while more is published.
    proxy.refuse = true;
    proxy.cut();
    await waitFor(() => a.state() === 'reconnecting', 'reconnecting', () => a.explain());
    for (let i = 4; i <= 7; i++) await node.publish(channel, { i });
    await sleep(300); // a few failed attempts
    expect(a.state()).toBe('reconnecting');
    proxy.refuse = false;

    await waitFor(() => a.state() === 'connected', 'connected again', () => a.explain());
    await received(a, channel, 7);
    await received(b, channel, 7);
    await node.publish(channel, { i: 8 });
    await received(a, channel, 8);
    await received(b, channel, 8);
    await sleep(200);
    for (const p of [a, b]) {
      expect(p.offsets(channel), p.explain()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(p.data(channel)).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((i) => ({ i })));
      expect(p.resyncs(channel)).toEqual([]);
      // Resubscribed as a successful recovery.
      expect(p.subscribed(channel).at(-1)).toMatchObject({ wasRecovering: true, recovered: true });
    }
    // Each failed attempt counted: the status said how many.
    expect(Math.max(...a.statuses().map((s) => s.attempt))).toBeGreaterThanOrEqual(2);
    expect(a.statuses().at(-1)).toMatchObject({ state: 'connected', attempt: 0, reason: null, nextRetryAt: null });
  });

  it('disconnect stops reconnecting, connect comes back; network offline and online', async () => {
    const proxy = new Proxy(() => node.port);
    proxies.push(proxy);
    await proxy.start();
    const channel = uniq('toggle');
    const hub = newHub(proxy.wsUrl);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), proxy.wsUrl);
    attach(hub, a, channel);
    await subscribedTo(a, channel);
    await node.publish(channel, { i: 1 });
    await received(a, channel, 1);

    hub.receive(a.id, { type: 'disconnect' });
    expect(a.state()).toBe('disconnected');
    const conns = proxy.connections;
    await node.publish(channel, { i: 2 });
    await sleep(700);
    expect(proxy.connections).toBe(conns);
    expect(a.pubs(channel)).toHaveLength(1);

    hub.receive(a.id, { type: 'connect' });
    await waitFor(() => a.state() === 'connected', 'connected after connect', () => a.explain());
    await received(a, channel, 2); // recovered from the hub's position
    expect(a.offsets(channel)).toEqual([1, 2]);

    hub.receive(a.id, { type: 'network', online: false });
    expect(a.state()).toBe('offline');
    await node.publish(channel, { i: 3 });
    await sleep(300);
    expect(a.pubs(channel)).toHaveLength(2);
    hub.receive(a.id, { type: 'network', online: true });
    await waitFor(() => a.state() === 'connected', 'connected after online', () => a.explain());
    await received(a, channel, 3);
    await sleep(150);
    expect(a.offsets(channel), a.explain()).toEqual([1, 2, 3]);
    expect(a.resyncs(channel)).toEqual([]);
  });

  it('an expired token is replaced promptly by a fresh one', async () => {
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    let calls = 0;
    join(hub, a, async () => (++calls === 1 ? node.token({ sub: 'u1', ttl: -60 }) : node.token({ sub: 'u1' })), node.wsUrl);
    const t0 = Date.now();
    await waitFor(() => a.state() === 'connected', 'connected with the second token', () => a.explain(), 2000);
    expect(calls).toBe(2);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('an expired token is replaced eventually (by the watchdog)', async () => {
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    let calls = 0;
    join(hub, a, async () => (++calls === 1 ? node.token({ sub: 'u1', ttl: -60 }) : node.token({ sub: 'u1' })), node.wsUrl);
    await waitFor(() => a.state() === 'connected', 'connected with the second token', () => a.explain(), 9000);
    expect(calls).toBe(2);
    expect(a.errors().some((e) => e.code === 109)).toBe(false);
  });

  it('a tab without a local token function is asked for one by message', async () => {
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    // No localToken: the hub must send `token` requests, which this tab answers.
    hub.addPeer(a.id, (m) => {
      a.send(m);
      if (m.type === 'token') queueMicrotask(() => hub.receive(a.id, { type: 'token', req: m.req, token: node.token({ sub: 'u1' }), error: null }));
    });
    hub.receive(a.id, { type: 'hello', settings: settingsFor(node.wsUrl), hasToken: true, online: true, visible: true, wantConnect: true });
    await connected(a);
    expect(a.msgs.filter((m) => m.type === 'token')).toHaveLength(1);

    // A tab that refuses (token null, no error) fails the connection as unauthorized.
    const hub2 = newHub(node.wsUrl);
    const b = new Peer('b');
    hub2.addPeer(b.id, (m) => {
      b.send(m);
      if (m.type === 'token') queueMicrotask(() => hub2.receive(b.id, { type: 'token', req: m.req, token: null, error: null }));
    });
    hub2.receive(b.id, { type: 'hello', settings: settingsFor(node.wsUrl), hasToken: true, online: true, visible: true, wantConnect: true });
    await waitFor(() => b.state() === 'failed', 'failed', () => b.explain());
    expect(b.errors().some((e) => e.kind === 'auth')).toBe(true);
  });

  it('a failing getToken is retried after the backoff', async () => {
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    let calls = 0;
    join(hub, a, async () => {
      if (++calls === 1) throw new Error('backend unreachable');
      return node.token({ sub: 'u1' });
    }, node.wsUrl);
    await waitFor(() => a.state() === 'connected', 'connected with the second token', () => a.explain(), 2000);
    expect(calls).toBe(2);
  });

  it('a refused token fails the connection for good: status failed, no further attempts', async () => {
    const proxy = new Proxy(() => node.port);
    proxies.push(proxy);
    await proxy.start();
    const hub = newHub(proxy.wsUrl);
    const a = new Peer('a');
    let tokens = 0;
    join(hub, a, async () => {
      tokens++;
      return 'not.a.token';
    }, proxy.wsUrl);
    await waitFor(() => a.state() === 'failed', 'failed', () => a.explain());
    const status = a.statuses().at(-1)!;
    expect(status.reason, a.explain()).toMatchObject({ code: 3500 });
    expect(status.nextRetryAt).toBeNull();
    expect(a.errors().some((e) => e.kind === 'auth' && e.temporary === false), a.explain()).toBe(true);
    await sleep(1500); // many backoff periods of this policy
    expect(proxy.connections).toBe(1);
    expect(tokens).toBe(1);
    expect(a.state()).toBe('failed');
    // A hello from another tab does not restart a failed connection by itself.
    const b = new Peer('b');
    join(hub, b, async () => 'not.a.token', proxy.wsUrl);
    await sleep(300);
    expect(proxy.connections).toBe(1);
  });
});

describe('Hub fallbacks', () => {
  it('a transport that fails to open hands the next attempt to the next configured transport', async () => {
    // Nothing listens on the first endpoint's port.
    const dead = await new Promise<number>((resolve) => {
      const srv = net.createServer();
      srv.listen(0, '127.0.0.1', () => {
        const port = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(port));
      });
    });
    const hub = newHub(node.wsUrl, null, {
      transports: [
        { transport: 'websocket', endpoint: `ws://127.0.0.1:${dead}/connection/websocket` },
        { transport: 'websocket', endpoint: node.wsUrl },
      ],
    });
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    await connected(a);
    expect(a.states().slice(-2)).toEqual(['connecting', 'connected']);
    // The first attempt (the dead endpoint) failed and was counted.
    expect(a.statuses().some((st) => st.state === 'connecting' && st.attempt === 1 && st.reason !== null)).toBe(true);
    const channel = uniq('fallback');
    attach(hub, a, channel);
    await subscribedTo(a, channel);
    await node.publish(channel, { n: 1 });
    await received(a, channel, 1);
  });

  it('a WebSocket that upgrades and stays silent hands over to HTTP-streaming, which is kept on reconnects', async () => {
    // Accepts every upgrade and then never sends a byte: a proxy that swallows frames.
    const upgrades: net.Socket[] = [];
    const silent = http.createServer((_req, res) => res.writeHead(404).end());
    silent.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      upgrades.push(socket);
      const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentPort = (silent.address() as net.AddressInfo).port;
    const proxy = new Proxy(() => node.port);
    proxies.push(proxy);
    await proxy.start();
    try {
      const base = `http://127.0.0.1:${proxy.port}`;
      const hub = newHub(node.wsUrl, null, {
        transports: [
          { transport: 'websocket', endpoint: `ws://127.0.0.1:${silentPort}/connection/websocket` },
          { transport: 'http_stream', endpoint: `${base}/connection/http_stream` },
        ],
        emulationEndpoint: `${base}/emulation`,
        silentTimeoutMs: 700,
      });
      const a = new Peer('a');
      const t0 = Date.now();
      join(hub, a, tokenOf(() => node), node.wsUrl);
      await connected(a);
      const took = Date.now() - t0;
      expect(upgrades.length).toBe(1);
      expect(a.statuses().at(-1)).toMatchObject({ state: 'connected', transport: 'http_stream' });
      expect(a.statuses().at(-1)!.skippedTransports.map((x) => x.transport)).toEqual(['websocket']);
      const fallbacks = a.msgs.flatMap((m) => (m.type === 'fallback' ? [m.event] : []));
      expect(fallbacks).toHaveLength(1);
      expect(fallbacks[0]).toMatchObject({ from: 'websocket', to: 'http_stream', reason: 'silent' });
      expect(fallbacks[0]!.waitedMs).toBeGreaterThanOrEqual(700);
      // The silent wait plus the floor, not the backoff or the 3 s connect timeout.
      expect(took).toBeLessThan(2500);

      const channel = uniq('silentws');
      attach(hub, a, channel);
      await subscribedTo(a, channel);
      await node.publish(channel, { n: 1 });
      await received(a, channel, 1);

      // The stream breaks: the reconnect goes straight to HTTP-streaming, recovering the gap.
      proxy.cut();
      await node.publish(channel, { n: 2 });
      await waitFor(() => a.states().at(-1) === 'connected' && a.states().length >= 4, 'reconnected', () => a.explain());
      await received(a, channel, 2);
      await node.publish(channel, { n: 3 });
      await received(a, channel, 3);
      expect(a.offsets(channel)).toEqual([1, 2, 3]);
      expect(upgrades.length).toBe(1);
      expect(a.statuses().at(-1)).toMatchObject({ state: 'connected', transport: 'http_stream' });
    } finally {
      for (const s of upgrades) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('a tab behind the hub is recovered by subscribing again when history may not be read', async () => {
    const channel = `nohist:${uniq('r')}`;
    for (let i = 1; i <= 5; i++) await node.publish(channel, { i });
    const hub = newHub(node.wsUrl);
    const a = new Peer('a');
    const b = new Peer('b');
    join(hub, a, tokenOf(() => node), node.wsUrl);
    join(hub, b, tokenOf(() => node), node.wsUrl);
    await connected(a);
    attach(hub, a, channel); // fresh: starts at the top (5), the hub has no recent publications
    await subscribedTo(a, channel);
    const epoch = a.subscribed(channel)[0]!.position!.epoch;
    await node.publish(channel, { i: 6 });
    await received(a, channel, 1);
    // b resumes from offset 2: 3..6 are neither recent in the hub nor readable as history.
    attach(hub, b, channel, { epoch, offset: 2 });
    await received(b, channel, 4);
    expect(b.offsets(channel)).toEqual([3, 4, 5, 6]);
    expect(b.resyncs(channel)).toEqual([]);
    expect(b.subscribed(channel).at(-1)).toMatchObject({ wasRecovering: true, recovered: true });
    // a saw nothing twice, and both go on live.
    await node.publish(channel, { i: 7 });
    await received(a, channel, 2);
    await received(b, channel, 5);
    expect(a.offsets(channel)).toEqual([6, 7]);
    expect(b.offsets(channel)).toEqual([3, 4, 5, 6, 7]);
  });

  it('connect() while connected changes nothing', async () => {
    const proxy = new Proxy(() => node.port);
    proxies.push(proxy);
    await proxy.start();
    const hub = newHub(proxy.wsUrl);
    const a = new Peer('a');
    join(hub, a, tokenOf(() => node), proxy.wsUrl);
    await connected(a);
    hub.receive(a.id, { type: 'connect' });
    hub.receive(a.id, { type: 'network', online: true });
    await sleep(300);
    expect(proxy.connections).toBe(1);
    expect(a.state()).toBe('connected');
  });
});
