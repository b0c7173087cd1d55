//! The connection holder: one `centrifuge` client for every tab, with per-tab exactly-once delivery.

import { Centrifuge, UnauthorizedError, type Subscription } from 'centrifuge';
import { Backoff } from './backoff.js';
import { Recent, asPosition, classify } from './cursor.js';
import { Drainer, type PublishOutcome } from './drain.js';
import { safely } from './emitter.js';
import type { HubMessage, HubSettings, HubStatus, TabMessage } from './messages.js';
import type { OutboxStore } from './outbox.js';
import { PositionWriter, type PositionStore } from './positions.js';
import { TransportPicker } from './picker.js';
import type { HeraldError, HeraldErrorKind, Position, PresenceClient, Publication, ResyncReason } from './types.js';
import { watchOpen } from './watch.js';

/** Publications asked of history per read while filling a tab's gap. */
const HISTORY_PAGE = 500;
/** A channel nobody holds stays subscribed this long, so a quick re-subscribe (a re-render) costs nothing. */
const LINGER_MS = 1000;
/** How often the round trip to the node is measured while connected. */
const PING_EVERY_MS = 15_000;
/** How often a history read that failed for a passing reason is tried again. */
const HISTORY_TRIES = 3;
/** How long a tab has to answer a token request before another tab is asked. */
const TOKEN_WAIT_MS = 10_000;
/** A transport that opened gives its connect reply within this time, or it is silent. */
const SILENT_TIMEOUT_MS = 4000;
/** How long a silent transport is passed over before it is tried again. */
const SILENT_RETRY_MS = 10 * 60_000;

/** Makes a connection token (`channel` null) or a subscription token; null means refused. */
export type TokenSource = (channel: string | null) => Promise<string | null>;

/** What the hub needs from where it runs. */
export interface HubDeps {
  id: string;
  settings: HubSettings;
  positions: PositionStore | null;
  outbox: OutboxStore | null;
  /** Runs the outbox drain exclusively across hubs of the origin. */
  exclusive?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** A WebSocket constructor, where there is no global one (Node). */
  websocket?: unknown;
  /** Called once the hub has closed (to close its storage). */
  onClose?: () => void;
}

interface Peer {
  id: string;
  send: (m: HubMessage) => void;
  channels: Set<string>;
  /** This peer can make connection tokens (its app gave `getToken`). */
  hasToken: boolean;
  /** This peer can make subscription tokens (its app gave `getSubscriptionToken`). */
  hasSubToken: boolean;
  /** Token requests that may be answered with a local function instead of a message. */
  localToken: TokenSource | null;
}

interface Cursor {
  /** The last publication this peer was given. */
  pos: Position | null;
  /** A gap is being filled; publications wait in `buffer`. */
  filling: boolean;
  buffer: Publication[];
  /** A peer with no position yet: it starts at the top once recovered publications are through. */
  fresh: boolean;
  /** This peer was told the channel is subscribed, on this connection. */
  announced: boolean;
}

interface Channel {
  name: string;
  sub: Subscription | null;
  subscribed: boolean;
  /** The stream position as far as this hub has received it. */
  stream: Position | null;
  recent: Recent;
  peers: Map<string, Cursor>;
  linger: ReturnType<typeof setTimeout> | null;
  /** Subscribed again on this connection to have the server recover a tab's gap. */
  resubscribed: boolean;
}

interface SdkError {
  code?: number;
  message?: string;
  temporary?: boolean;
}

/**
 * Holds the one connection of a browser (in a SharedWorker, the leader tab, or a lone
 * tab) and serves every tab attached to it. It owns reconnects (a fresh SDK client per
 * connection, so nothing of a dead connection leaks into the next), channel positions,
 * and the outbox drain. Every tab gets each publication once and in order, filled from
 * recent publications or history when it is behind, or an explicit `resync`.
 */
export class Hub {
  readonly #peers = new Map<string, Peer>();
  readonly #channels = new Map<string, Channel>();
  #client: Centrifuge | null = null;
  #gen = 0;
  #want = false;
  #online = true;
  #everConnected = false;
  #closed = false;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #pingTimer: ReturnType<typeof setInterval> | null = null;
  #watchdog: ReturnType<typeof setTimeout> | null = null;
  #lastAttemptAt = 0;
  #sweep: ReturnType<typeof setInterval> | null = null;
  /** Which of the configured transports each attempt uses. */
  readonly #picker: TransportPicker;
  /** Fires when the current attempt's transport opened and stayed silent. */
  #silentTimer: ReturnType<typeof setTimeout> | null = null;
  readonly #backoff: Backoff;
  readonly #writer: PositionWriter | null;
  readonly #drainer: Drainer | null;
  #status: HubStatus = {
    state: 'disconnected',
    reason: null,
    attempt: 0,
    nextRetryAt: null,
    transport: null,
    latencyMs: null,
    tabs: 0,
    lastConnectedAt: null,
    skippedTransports: [],
  };
  #tokenReq = 0;
  readonly #tokenWaiters = new Map<number, (token: string | null, error: string | null) => void>();

  readonly #deps: HubDeps;

  constructor(deps: HubDeps) {
    this.#deps = deps;

    this.#backoff = new Backoff(deps.settings.reconnect);
    this.#picker = new TransportPicker(deps.settings.transports, positive(deps.settings.silentRetryMs, SILENT_RETRY_MS));
    this.#writer = deps.positions && deps.settings.persistPositions
      ? new PositionWriter(deps.positions, (e) => this.#broadcastError({ kind: 'storage', message: `saving a position: ${String(e)}`, temporary: true }))
      : null;
    this.#drainer = deps.outbox
      ? new Drainer(
          deps.outbox,
          (item) => this.#publishOnce(item.channel, item.data, item.key),
          () => this.#status.state === 'connected',
          () => this.#broadcast({ type: 'outbox' }),
          (error) => this.#broadcastError(error),
          deps.exclusive,
        )
      : null;
    // Outbox items age while nothing else happens (offline, no new items).
    if (this.#drainer) this.#sweep = setInterval(() => this.#drainer?.kick(), 60_000);
  }

  // ---- peers -------------------------------------------------------------------------

  /** Attaches a tab; `localToken` lets the hub's own tab answer token requests directly. */
  addPeer(id: string, send: (m: HubMessage) => void, localToken: TokenSource | null = null, hasSubToken = false): void {
    if (this.#closed) return;
    const old = this.#peers.get(id);
    if (old) this.removePeer(id);
    this.#peers.set(id, { id, send, channels: new Set(), hasToken: localToken !== null, hasSubToken, localToken });
    this.#sendTo(id, { type: 'welcome', hub: this.#deps.id });
    this.#setStatus({ tabs: this.#peers.size });
  }

  /** Detaches a tab that left (closed, crashed, navigated). */
  removePeer(id: string): void {
    const peer = this.#peers.get(id);
    if (!peer) return;
    for (const channel of [...peer.channels]) this.#detach(peer, channel);
    this.#peers.delete(id);
    this.#setStatus({ tabs: this.#peers.size });
  }

  /** Handles a validated message from tab `id`. */
  receive(id: string, msg: TabMessage): void {
    if (this.#closed) return;
    const peer = this.#peers.get(id);
    if (!peer) return;
    switch (msg.type) {
      case 'hello':
        peer.hasToken = peer.hasToken || msg.hasToken;
        peer.hasSubToken = peer.hasSubToken || msg.hasSubToken === true;
        this.#online = msg.online;
        // A new hub after a handover: what the old one found silent stays passed over.
        if (Array.isArray(msg.skipped) && msg.skipped.length) {
          this.#picker.adopt(msg.skipped, Date.now());
          this.#status = { ...this.#status, skippedTransports: this.#picker.skips(Date.now()) };
        }
        this.#sendTo(id, { type: 'status', status: this.#status });
        if (msg.wantConnect && !this.#want && this.#status.state !== 'failed') this.connect();
        else if (!msg.online) this.#goOffline();
        this.#drainer?.kick();
        return;
      case 'attach':
        return this.#attach(peer, msg.channel, msg.since);
      case 'detach':
        return this.#detach(peer, msg.channel);
      case 'publish':
        void this.#publishOnce(msg.channel, msg.data, msg.key).then((r) =>
          this.#sendTo(id, r.ok
            ? { type: 'published', req: msg.req, ok: true, position: r.position, error: null }
            : { type: 'published', req: msg.req, ok: false, position: null, error: r.error }),
        );
        return;
      case 'presence':
        void this.#presence(msg.channel).then((r) => this.#sendTo(id, { type: 'presence', req: msg.req, ...r }));
        return;
      case 'outbox':
        this.#drainer?.kick();
        this.#broadcast({ type: 'outbox' });
        return;
      case 'network':
        this.#online = msg.online;
        if (!msg.online) this.#goOffline();
        else if (this.#want && (this.#status.state === 'offline' || this.#retryTimer)) this.#attemptSoon();
        return;
      case 'visible':
        if (msg.hiddenMs >= this.#deps.settings.reconnect.wakeAfterMs && this.#retryTimer) this.#attemptSoon();
        return;
      case 'connect':
        return this.connect();
      case 'disconnect':
        return this.disconnect();
      case 'token':
        this.#tokenWaiters.get(msg.req)?.(msg.token, msg.error);
        return;
      case 'bye':
        return this.removePeer(id);
    }
  }

  /** Ends everything: the connection, timers, peers. */
  close(): void {
    if (this.#closed) return;
    this.#writer?.flush();
    this.#teardown();
    this.#closed = true;
    this.#clearRetry();
    this.#drainer?.close();
    if (this.#sweep) clearInterval(this.#sweep);
    for (const ch of this.#channels.values()) if (ch.linger) clearTimeout(ch.linger);
    this.#channels.clear();
    this.#peers.clear();
    for (const w of this.#tokenWaiters.values()) w(null, 'hub closed');
    safely(() => this.#deps.onClose?.());
  }

  /** Writes pending positions now (the page is going away). */
  flush(): void {
    this.#writer?.flush();
  }

  // ---- connection --------------------------------------------------------------------

  /** Connects unless connected or connecting already (then it changes nothing). */
  connect(): void {
    const busy = this.#client !== null;
    this.#want = true;
    if (busy) return;
    this.#backoff.reset();
    this.#attemptSoon();
  }

  /**
   * Attempts now instead of waiting out the backoff (the browser is back online, a tab
   * woke up, the app asked), but never sooner than the floor after the last attempt.
   */
  #attemptSoon(): void {
    this.#clearRetry();
    const wait = this.#lastAttemptAt + this.#deps.settings.reconnect.minDelayMs - Date.now();
    if (wait <= 0) return this.#attempt();
    this.#retryTimer = setTimeout(() => this.#attempt(), wait);
  }

  disconnect(): void {
    this.#want = false;
    this.#clearRetry();
    this.#teardown();
    this.#setStatus({ state: 'disconnected', reason: null, nextRetryAt: null, transport: null, attempt: 0 });
  }

  #goOffline(): void {
    this.#clearRetry();
    this.#teardown();
    if (this.#want) this.#setStatus({ state: 'offline', nextRetryAt: null, transport: null });
  }

  #attempt(): void {
    this.#clearRetry();
    if (this.#closed || !this.#want) return;
    if (!this.#online) return this.#goOffline();
    this.#teardown();
    const gen = ++this.#gen;
    this.#lastAttemptAt = Date.now();
    const s = this.#deps.settings;
    const pick = this.#picker.next(this.#lastAttemptAt);
    const quiet = new EventTarget();
    const options: Record<string, unknown> = {
      name: s.name,
      timeout: s.connectTimeoutMs,
      // Reconnects are the hub's: each attempt gets a fresh client, so the SDK's own never fire.
      minReconnectDelay: 3_600_000,
      maxReconnectDelay: 3_600_000,
      networkEventTarget: quiet,
      pageEventTarget: quiet,
    };
    if ([...this.#peers.values()].some((p) => p.hasToken)) options.getToken = () => this.#token(null);
    if (s.emulationEndpoint) options.emulationEndpoint = s.emulationEndpoint;
    // When the transport opened: a connect reply that does not follow in time means a
    // silent transport (e.g. a proxy that upgrades and then passes nothing on).
    let openedAt: number | null = null;
    if (this.#picker.canFallBack && pick.endpoint) {
      const silentMs = positive(s.silentTimeoutMs, SILENT_TIMEOUT_MS);
      Object.assign(options, watchOpen(pick.endpoint.endpoint, () => {
        if (!mine() || openedAt !== null || this.#status.state === 'connected') return;
        const at = Date.now();
        openedAt = at;
        this.#silentTimer = setTimeout(() => {
          this.#silentTimer = null;
          if (mine() && this.#status.state !== 'connected') this.#silent(at);
        }, silentMs);
      }, this.#deps.websocket));
    } else if (this.#deps.websocket) options.websocket = this.#deps.websocket;
    let client: Centrifuge;
    try {
      // One transport per attempt; a transport that fails to open hands the next attempt to the next one.
      client = new Centrifuge((pick.endpoint ? [pick.endpoint] : s.url) as string, options);
    } catch (e) {
      this.#want = false;
      this.#setStatus({ state: 'failed', reason: { code: 0, message: `bad connection settings: ${String(e)}` } });
      return;
    }
    this.#client = client;
    const mine = () => gen === this.#gen && this.#client === client;
    let started = false;
    client.on('connecting', (ctx) => safely(() => {
      if (!mine()) return;
      // The first `connecting` is our own connect(); any later one is the SDK giving up on this connection.
      if (!started) return void (started = true);
      this.#lost(ctx.code, ctx.reason);
    }));
    client.on('connected', (ctx) => safely(() => mine() && this.#onConnected(ctx.transport)));
    client.on('disconnected', (ctx) => safely(() => mine() && this.#onTerminal(ctx.code, ctx.reason)));
    client.on('error', (ctx) => safely(() => {
      if (!mine()) return;
      const err = ctx.error as SdkError;
      const connecting = this.#status.state !== 'connected';
      // An expired token while connecting is routine: the next attempt asks for a new one.
      if (!(ctx.type === 'connect' && err?.code === 109)) {
        this.#broadcastError(this.#errorOf(err, ctx.type === 'transport' ? 'transport' : 'connect', true));
      }
      // A failure before the connection is up changes no SDK state (and the SDK's own
      // retry is disabled): a transport that failed (a node that is down, a refused
      // upgrade), a temporary connect error, a getToken that threw. Each is a failed attempt.
      if (connecting && (ctx.type === 'transport' || ctx.type.startsWith('connect'))) {
        // The connect command timed out on a transport that opened: it is silent.
        if (ctx.type === 'connect' && err?.code === 1 && openedAt !== null) return this.#silent(openedAt);
        if (ctx.type === 'transport') this.#nextTransport();
        this.#lost(err?.code ?? 0, err?.message ?? ctx.type);
      }
    }));
    // However the attempt stalls (a proxy that accepts the upgrade and then stays silent),
    // it counts as failed once the connect timeout and a grace period have passed.
    this.#watchdog = setTimeout(() => {
      if (!mine() || this.#status.state === 'connected') return;
      // Upgraded but silent (a proxy that swallows WebSocket frames): try the next transport.
      if (openedAt !== null) return this.#silent(openedAt);
      this.#nextTransport();
      this.#lost(0, 'no connect reply in time');
    }, s.connectTimeoutMs + 2000);
    this.#setStatus({ state: this.#everConnected ? 'reconnecting' : 'connecting', nextRetryAt: null, transport: null });
    client.connect();
  }

  #nextTransport(): void {
    this.#picker.failed();
  }

  /**
   * The attempt's transport opened at `openedAt` and gave no connect reply: pass it over
   * for a while, say so, and try the next transport at once when it is a new one.
   */
  #silent(openedAt: number): void {
    const now = Date.now();
    const from = this.#picker.current();
    const retryAt = this.#picker.silent(now);
    const next = this.#picker.peek(now);
    const waitedMs = now - openedAt;
    const reason = `the ${from?.transport ?? 'websocket'} transport opened but gave no connect reply in ${waitedMs} ms`;
    if (retryAt === null || !from || !next.endpoint) return this.#lost(0, reason);
    this.#broadcast({ type: 'fallback', event: { from: from.transport, to: next.endpoint.transport, reason: 'silent', waitedMs, retryAt } });
    this.#lost(0, reason, next.fresh);
  }

  #skips(): HubStatus['skippedTransports'] {
    return this.#picker.skips(Date.now());
  }

  #onConnected(transport: string): void {
    const now = Date.now();
    this.#everConnected = true;
    this.#backoff.connected(now);
    this.#picker.connected();
    if (this.#watchdog) clearTimeout(this.#watchdog);
    if (this.#silentTimer) clearTimeout(this.#silentTimer);
    this.#watchdog = null;
    this.#silentTimer = null;
    this.#setStatus({ state: 'connected', reason: null, attempt: 0, nextRetryAt: null, transport, lastConnectedAt: now, skippedTransports: this.#skips() });
    // Channels are subscribed once connected, not with the connect command: by then the
    // tabs of a handover have said where they stand, and each channel starts from the earliest.
    for (const ch of this.#channels.values()) if (!ch.sub) this.#subscribeSdk(ch);
    this.#measure();
    this.#pingTimer = setInterval(() => this.#measure(), PING_EVERY_MS);
    this.#drainer?.kick(true);
  }

  /**
   * This connection is gone or never came up: try again after the backoff, or (`soon`,
   * moving to a transport not yet tried) after the floor only; the attempt counts either way.
   */
  #lost(code: number, reason: string, soon = false): void {
    this.#teardown();
    const backoff = this.#backoff.failed(Date.now());
    const delay = soon ? this.#deps.settings.reconnect.minDelayMs : backoff;
    if (code === 3013) this.#broadcastError({ kind: 'rate-limit', code, message: reason, temporary: true });
    this.#setStatus({
      // Until the first connection is up, the client is still connecting.
      state: this.#everConnected ? 'reconnecting' : 'connecting',
      reason: { code, message: reason },
      attempt: this.#backoff.attempt,
      nextRetryAt: Date.now() + delay,
      transport: null,
      skippedTransports: this.#skips(),
    });
    this.#retryTimer = setTimeout(() => this.#attempt(), delay);
  }

  /** The SDK stopped for good; a malformed frame (2) or an oversized one (3) is retried all the same. */
  #onTerminal(code: number, reason: string): void {
    if (code === 2 || code === 3) {
      this.#broadcastError({ kind: 'protocol', code, message: reason, temporary: true });
      return this.#lost(code, reason);
    }
    this.#teardown();
    this.#want = false;
    const auth = code === 1 || code === 101 || code === 3500 || code === 109;
    this.#broadcastError({ kind: auth ? 'auth' : 'connect', code, message: reason, temporary: false });
    this.#setStatus({ state: 'failed', reason: { code, message: reason }, nextRetryAt: null, transport: null });
  }

  #teardown(): void {
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    if (this.#watchdog) clearTimeout(this.#watchdog);
    if (this.#silentTimer) clearTimeout(this.#silentTimer);
    this.#pingTimer = null;
    this.#watchdog = null;
    this.#silentTimer = null;
    const client = this.#client;
    this.#client = null;
    this.#gen++;
    for (const ch of this.#channels.values()) {
      ch.sub = null;
      ch.subscribed = false;
      ch.resubscribed = false;
      for (const cur of ch.peers.values()) {
        cur.filling = false;
        cur.buffer = [];
        cur.announced = false;
      }
    }
    if (client) {
      try {
        client.removeAllListeners();
        client.disconnect();
      } catch {
        // A client that fails to close is dropped all the same.
      }
    }
  }

  #clearRetry(): void {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  /** Measures a round trip with an RPC the node answers at once. */
  #measure(): void {
    const client = this.#client;
    if (!client) return;
    const t0 = performance.now();
    const done = (e?: SdkError) => {
      // Any reply from the node is a round trip; an SDK timeout (code < 100) is not.
      if (this.#client !== client || (e && (e.code ?? 0) < 100)) return;
      this.#setStatus({ latencyMs: Math.round((performance.now() - t0) * 10) / 10 });
    };
    client.rpc('herald.ping', {}).then(() => done(), done);
  }

  /**
   * A connection token (`channel` null) or a subscription token for the SDK, from a tab
   * that can make one; `null` from the app means refused for good.
   */
  async #token(channel: string | null): Promise<string> {
    const peers = [...this.#peers.values()].filter((p) => (channel === null ? p.hasToken : p.hasSubToken));
    for (const peer of peers) {
      let token: string | null;
      let error: string | null = null;
      if (peer.localToken) {
        try {
          token = await peer.localToken(channel);
        } catch (e) {
          token = null;
          error = String(e);
        }
      } else {
        const req = ++this.#tokenReq;
        [token, error] = await new Promise<[string | null, string | null]>((resolve) => {
          const timer = setTimeout(() => resolve([null, 'no answer']), TOKEN_WAIT_MS);
          this.#tokenWaiters.set(req, (t, e) => {
            clearTimeout(timer);
            resolve([t, e]);
          });
          this.#sendTo(peer.id, { type: 'token', req, channel });
        });
        this.#tokenWaiters.delete(req);
        if (error === 'no answer') continue;
      }
      if (token !== null) return token;
      const what = channel === null ? 'getToken' : `getSubscriptionToken(${channel})`;
      if (error === null) throw new UnauthorizedError(`${what} refused`);
      throw new Error(`${what} failed: ${error}`);
    }
    if (channel !== null) throw new UnauthorizedError(`no tab can make a subscription token for ${channel}`);
    throw new Error('no tab could provide a token');
  }

  // ---- channels ----------------------------------------------------------------------

  #attach(peer: Peer, name: string, since: Position | null): void {
    let ch = this.#channels.get(name);
    if (!ch) {
      ch = { name, sub: null, subscribed: false, stream: null, recent: new Recent(), peers: new Map(), linger: null, resubscribed: false };
      this.#channels.set(name, ch);
    }
    if (ch.linger) clearTimeout(ch.linger);
    ch.linger = null;
    // Attaching again (a tab that saw a gap) starts this tab over from its own position.
    const cur: Cursor = { pos: since, filling: false, buffer: [], fresh: false, announced: false };
    ch.peers.set(peer.id, cur);
    peer.channels.add(name);
    if (ch.subscribed) this.#reconcile(ch, peer.id, cur);
    else if (!ch.sub && this.#client && this.#status.state === 'connected') this.#subscribeSdk(ch);
  }

  #detach(peer: Peer, name: string): void {
    peer.channels.delete(name);
    const ch = this.#channels.get(name);
    if (!ch || !ch.peers.delete(peer.id) || ch.peers.size > 0) return;
    ch.linger = setTimeout(() => {
      if (ch.peers.size > 0 || this.#channels.get(name) !== ch) return;
      this.#channels.delete(name);
      this.#dropSub(ch);
    }, LINGER_MS);
  }

  /** The position to subscribe from: the hub's own, else the earliest any tab holds. */
  #startFrom(ch: Channel): Position | null {
    return ch.stream ?? this.#earliest(ch);
  }

  /** The earliest position a tab of `ch` holds in `epoch` (without one: the first position's epoch). */
  #earliest(ch: Channel, epoch?: string): Position | null {
    let best: Position | null = null;
    for (const cur of ch.peers.values()) {
      if (!cur.pos || cur.pos.epoch !== (epoch ?? best?.epoch ?? cur.pos.epoch)) continue;
      if (!best || cur.pos.offset < best.offset) best = cur.pos;
    }
    return best;
  }

  /** Drops the SDK subscription of `ch`, quietly: nothing it still emits is ours. */
  #dropSub(ch: Channel): void {
    const sub = ch.sub;
    ch.sub = null;
    ch.subscribed = false;
    if (!sub || !this.#client) return;
    try {
      sub.removeAllListeners();
      this.#client.removeSubscription(sub);
    } catch {
      // The connection is going, or a new subscription replaces it all the same.
    }
  }

  #subscribeSdk(ch: Channel): void {
    const client = this.#client;
    if (!client) return;
    const since = this.#startFrom(ch);
    let sub: Subscription;
    try {
      const old = client.getSubscription(ch.name);
      if (old) client.removeSubscription(old);
      // Join and leave are asked for always: only namespaces with `join_leave` send them.
      const opts: Record<string, unknown> = since ? { since: { ...since }, joinLeave: true } : { joinLeave: true };
      // A private channel needs a subscription token, made by a tab's app.
      if (ch.name.startsWith('$')) opts.getToken = () => this.#token(ch.name);
      sub = client.newSubscription(ch.name, opts);
    } catch (e) {
      return this.#channelError(ch, { kind: 'subscribe', message: String(e), temporary: false });
    }
    ch.sub = sub;
    ch.subscribed = false;
    const mine = () => ch.sub === sub && this.#client === client;
    sub.on('subscribed', (ctx) => safely(() => mine() && this.#onSubscribed(ch, ctx.streamPosition, ctx.recovered === true, since)));
    sub.on('publication', (ctx) => safely(() => mine() && this.#onPublication(ch, ctx)));
    sub.on('unsubscribed', (ctx) => safely(() => {
      if (!mine()) return;
      ch.sub = null;
      ch.subscribed = false;
      this.#channelError(ch, this.#errorOf({ code: ctx.code, message: ctx.reason }, 'subscribe', false));
    }));
    const joinLeave = (kind: 'join' | 'leave') => (ctx: { info: PresenceClient }) =>
      safely(() => {
        if (!mine()) return;
        for (const id of ch.peers.keys()) this.#sendTo(id, { type: 'joinLeave', event: { channel: ch.name, kind, info: ctx.info } });
      });
    sub.on('join', joinLeave('join'));
    sub.on('leave', joinLeave('leave'));
    sub.on('error', (ctx) => safely(() => mine() && this.#channelError(ch, this.#errorOf(ctx.error as SdkError, 'subscribe', true))));
    sub.subscribe();
  }

  #onSubscribed(ch: Channel, streamPosition: unknown, recovered: boolean, since: Position | null): void {
    ch.subscribed = true;
    const sp = asPosition(streamPosition);
    if (!sp || sp.epoch === '') {
      // No history for this channel: nothing to order or recover by.
      ch.stream = null;
      for (const [id, cur] of ch.peers) {
        cur.pos = null;
        this.#sendTo(id, { type: 'subscribed', event: { channel: ch.name, wasRecovering: false, recovered: false, position: null } });
      }
      return;
    }
    if (ch.stream && ch.stream.epoch !== sp.epoch) ch.recent.clear();
    // A recovered reply names the stream's top, and the recovered publications follow
    // this event in the same task. Until they are through, the stream stands where the
    // SDK recovered from: its own last position (which `ch.stream` follows), or `since`
    // for a new SDK subscription. Each recovered publication then moves it.
    const from = ch.stream ?? since;
    ch.stream = recovered && from && from.epoch === sp.epoch && from.offset < sp.offset ? { ...from } : { ...sp };
    for (const [id, cur] of ch.peers) this.#reconcile(ch, id, cur);
  }

  /** Brings one tab to the stream's position: nothing to do, fill its gap, or resync it. */
  #reconcile(ch: Channel, id: string, cur: Cursor): void {
    const stream = ch.stream;
    const announce = (wasRecovering: boolean, recovered: boolean) => {
      // Once per connection: subscribing again to recover another tab's gap is no news.
      if (cur.announced) return;
      cur.announced = true;
      this.#sendTo(id, { type: 'subscribed', event: { channel: ch.name, wasRecovering, recovered, position: cur.pos ? { ...cur.pos } : null } });
    };
    if (!stream) return announce(false, false);
    if (!cur.pos) {
      // Publications recovered for other peers follow this subscribed event at once (in
      // the same task): a peer without a position starts after them, at the top.
      cur.fresh = true;
      queueMicrotask(() => {
        if (ch.peers.get(id) !== cur || !cur.fresh) return;
        cur.fresh = false;
        cur.pos = ch.stream ? { ...ch.stream } : null;
        if (cur.pos) this.#writer?.write(ch.name, cur.pos);
        announce(false, false);
      });
      return;
    }
    if (cur.pos.epoch !== stream.epoch) {
      announce(true, false);
      return this.#resync(ch, id, cur, 'epoch-changed');
    }
    if (cur.pos.offset >= stream.offset) return announce(true, true);
    void this.#fill(ch, id, cur, stream.offset, announce);
  }

  #onPublication(ch: Channel, ctx: { data: unknown; offset?: number; info?: Publication['info']; tags?: Record<string, string> }): void {
    const pub: Publication = { channel: ch.name, data: ctx.data };
    if (ctx.offset !== undefined && ch.stream) {
      pub.offset = ctx.offset;
      pub.epoch = ch.stream.epoch;
      ch.recent.push(pub);
      if (ctx.offset > ch.stream.offset) ch.stream = { epoch: ch.stream.epoch, offset: ctx.offset };
    }
    if (ctx.info) pub.info = ctx.info;
    if (ctx.tags) pub.tags = ctx.tags;
    for (const [id, cur] of ch.peers) this.#offer(ch, id, cur, pub);
  }

  #offer(ch: Channel, id: string, cur: Cursor, pub: Publication): void {
    if (cur.fresh) return;
    if (cur.filling) return void cur.buffer.push(pub);
    switch (classify(cur.pos, pub.epoch, pub.offset)) {
      case 'deliver':
        if (pub.offset !== undefined && pub.epoch !== undefined) {
          cur.pos = { epoch: pub.epoch, offset: pub.offset };
          // The stored position is where delivery to a tab got to (the store keeps the
          // latest), never where the subscription got to: publications that arrive while a
          // channel lingers with no tab are the next tab's to receive.
          this.#writer?.write(ch.name, cur.pos);
        }
        return this.#sendTo(id, { type: 'pub', pub });
      case 'duplicate':
        return;
      case 'gap':
        cur.buffer.push(pub);
        return void this.#fill(ch, id, cur, (pub.offset ?? 1) - 1, null);
      case 'epoch':
        // A publication of an older epoch than the stream's is stale; one of the current
        // epoch means this tab still stands in an old one.
        if (pub.epoch !== ch.stream?.epoch) return;
        this.#resync(ch, id, cur, 'epoch-changed');
        return this.#offer(ch, id, cur, pub);
    }
  }

  /**
   * Delivers the publications after the tab's position up to `upTo`: from the recent
   * ones when they are all here, else from history; a resync when neither can.
   */
  async #fill(
    ch: Channel,
    id: string,
    cur: Cursor,
    upTo: number,
    announce: ((wasRecovering: boolean, recovered: boolean) => void) | null,
  ): Promise<void> {
    const from = cur.pos;
    if (!from) return;
    cur.filling = true;
    const finish = (pubs: Publication[] | null, reason: ResyncReason) => {
      cur.filling = false;
      announce?.(true, pubs !== null);
      if (pubs === null) this.#resync(ch, id, cur, reason);
      else for (const p of pubs) this.#offer(ch, id, cur, p);
      const waiting = cur.buffer;
      cur.buffer = [];
      for (const p of waiting) this.#offer(ch, id, cur, p);
    };
    const recent = ch.recent.range(from, upTo);
    if (recent) return finish(recent, 'history-trimmed');

    const client = this.#client;
    const gen = this.#gen;
    const stale = () => this.#gen !== gen || this.#client !== client || ch.peers.get(id) !== cur;
    const got: Publication[] = [];
    let at = from.offset;
    let tries = 0;
    while (client && at < upTo) {
      let res: { publications: { data: unknown; offset?: number; info?: Publication['info']; tags?: Record<string, string> }[]; epoch: string; offset: number };
      try {
        res = await client.history(ch.name, { since: { epoch: from.epoch, offset: at }, limit: HISTORY_PAGE });
      } catch (e) {
        if (stale()) return; // the next connection reconciles this tab again
        const err = this.#errorOf(e as SdkError, 'subscribe', false);
        const code = err.code ?? 0;
        // 112: the position's epoch is gone.
        if (code === 112) return finish(null, 'epoch-changed');
        // A passing failure (100, 111, a timeout) is tried again after a pause.
        if ((code < 100 || code === 100 || code === 111) && ++tries <= HISTORY_TRIES) {
          await new Promise((r) => setTimeout(r, 250 * 2 ** tries));
          if (stale()) return;
          continue;
        }
        // Not allowed to read history: recovery on subscribe needs only the right to
        // subscribe, so subscribe again from the earliest position any tab holds (once).
        if ((code === 103 || code === 108) && !ch.resubscribed) {
          cur.filling = false;
          cur.buffer = [];
          return this.#recoverFrom(ch);
        }
        this.#sendTo(id, { type: 'error', error: { ...err, channel: ch.name } });
        return finish(null, 'history-unavailable');
      }
      if (stale()) return;
      if (res.epoch !== from.epoch) return finish(null, 'epoch-changed');
      const first = res.publications[0];
      if (!first || first.offset !== at + 1) return finish(null, 'history-trimmed');
      for (const p of res.publications) {
        if (p.offset === undefined || p.offset !== at + 1) break;
        at = p.offset;
        const pub: Publication = { channel: ch.name, data: p.data, offset: p.offset, epoch: from.epoch };
        if (p.info) pub.info = p.info;
        if (p.tags) pub.tags = p.tags;
        got.push(pub);
      }
      if (res.publications.length < HISTORY_PAGE && at < upTo) return finish(null, 'history-trimmed');
    }
    if (!client) return;
    finish(got, 'history-trimmed');
  }

  /**
   * Subscribes `ch` again from the earliest position any of its tabs holds, so that the
   * server recovers what they miss; tabs further on drop what they already have.
   */
  #recoverFrom(ch: Channel): void {
    const client = this.#client;
    if (!client) return;
    ch.resubscribed = true;
    const since = ch.stream ? this.#earliest(ch, ch.stream.epoch) : null;
    this.#dropSub(ch);
    if (since) ch.stream = { ...since };
    this.#subscribeSdk(ch);
  }

  /** Tells tab `id` that continuity broke on `ch`, and moves it to the stream's position. */
  #resync(ch: Channel, id: string, cur: Cursor, reason: ResyncReason): void {
    const to = ch.stream ? { ...ch.stream } : null;
    this.#sendTo(id, { type: 'resync', event: { channel: ch.name, reason, from: cur.pos ? { ...cur.pos } : null, to } });
    cur.pos = to;
    // The tab stands at the stream's position now: a new tab need not resync again.
    if (to) this.#writer?.write(ch.name, to);
  }

  /** Who is in `channel`: one presence call on the shared connection. */
  async #presence(channel: string): Promise<{ clients: PresenceClient[] | null; error: HeraldError | null }> {
    const client = this.#client;
    if (!client || this.#status.state !== 'connected') {
      return { clients: null, error: { kind: 'subscribe', code: 0, message: 'not connected', channel, temporary: true } };
    }
    try {
      const res = await client.presence(channel);
      return { clients: Object.values(res.clients ?? {}) as PresenceClient[], error: null };
    } catch (e) {
      return { clients: null, error: { ...this.#errorOf(e as SdkError, 'subscribe', false), channel } };
    }
  }

  // ---- publishing --------------------------------------------------------------------

  /** Publishes once; with a key the node applies it at most once, however often it is sent. */
  async #publishOnce(channel: string, data: unknown, key: string | null): Promise<PublishOutcome> {
    const client = this.#client;
    if (!client || this.#status.state !== 'connected') {
      return { ok: false, error: { kind: 'publish', code: 0, message: 'not connected', channel, temporary: true } };
    }
    try {
      if (key === null) {
        await client.publish(channel, data);
        return { ok: true, position: null };
      }
      // The SDK's publish has no idempotency key; the command is the same with one more field.
      const raw = client as unknown as {
        _methodCall?: () => Promise<void>;
        _callPromise?: (cmd: unknown, cb: (reply: Record<string, unknown>) => unknown) => Promise<unknown>;
      };
      if (typeof raw._methodCall !== 'function' || typeof raw._callPromise !== 'function') {
        return { ok: false, error: { kind: 'publish', message: 'this centrifuge build cannot send idempotency keys', channel, temporary: false } };
      }
      await raw._methodCall.call(client);
      const result = await raw._callPromise.call(client, { publish: { channel, data, idempotency_key: key } }, (r) => r.publish);
      return { ok: true, position: asPosition(result) };
    } catch (e) {
      return { ok: false, error: { ...this.#errorOf(e as SdkError, 'publish', false), channel } };
    }
  }

  // ---- status and messages -----------------------------------------------------------

  #errorOf(e: SdkError | undefined, kind: HeraldErrorKind, temporary: boolean): HeraldError {
    const code = typeof e?.code === 'number' ? e.code : 0;
    const message = typeof e?.message === 'string' && e.message ? e.message : String(e);
    if (code === 103 || code === 3507) kind = 'permission';
    else if (code === 111 || code === 3013) kind = 'rate-limit';
    else if (code === 101 || code === 109 || code === 3500) kind = 'auth';
    return { kind, code, message, temporary: e?.temporary ?? (temporary || code === 100 || code === 111 || code < 100) };
  }

  #channelError(ch: Channel, error: HeraldError): void {
    for (const id of ch.peers.keys()) this.#sendTo(id, { type: 'error', error: { ...error, channel: ch.name } });
  }

  #broadcastError(error: HeraldError): void {
    this.#broadcast({ type: 'error', error });
  }

  #setStatus(change: Partial<HubStatus>): void {
    const next = { ...this.#status, ...change };
    if (JSON.stringify(next) === JSON.stringify(this.#status)) return;
    this.#status = next;
    this.#broadcast({ type: 'status', status: next });
  }

  #broadcast(m: HubMessage): void {
    for (const id of this.#peers.keys()) this.#sendTo(id, m);
  }

  #sendTo(id: string, m: HubMessage): void {
    const peer = this.#peers.get(id);
    if (peer) safely(() => peer.send(m));
  }
}

/** `v` when it is a positive finite number, else `fallback`. */
function positive(v: number | undefined, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fallback;
}
