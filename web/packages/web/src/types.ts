//! The public types of `@herald/web`.

/** A channel's stream position: publications are numbered 1, 2, 3… within an epoch. */
export interface Position {
  /** The stream's epoch; it changes whenever the channel's history was lost. */
  epoch: string;
  /** The offset of the last publication delivered (0 = none yet). */
  offset: number;
}

/** A publication as handed to application code: once, in offset order, per channel. */
export interface Publication<T = unknown> {
  channel: string;
  data: T;
  /** Present when the channel keeps history; absent publications are never de-duplicated. */
  offset?: number;
  epoch?: string;
  /** The publishing client, when a client published. */
  info?: { user: string; client: string; connInfo?: unknown; chanInfo?: unknown };
  tags?: Record<string, string>;
}

/** Why a channel's continuity broke and the application must reload its state. */
export type ResyncReason =
  /** The stream was reset (history lost, e.g. a node without Redis restarted). */
  | 'epoch-changed'
  /** The missed publications are no longer in history. */
  | 'history-trimmed'
  /** History could not be read (not allowed or not kept for this channel). */
  | 'history-unavailable';

/** `resync`: publications were missed and cannot be delivered; reload from your backend. */
export interface ResyncEvent {
  channel: string;
  reason: ResyncReason;
  /** The position delivered last, before the break. */
  from: Position | null;
  /** The stream's position now; live publications continue after it. */
  to: Position | null;
}

/** `subscribed`: a channel is live for this tab. */
export interface SubscribedEvent {
  channel: string;
  /** A known position was resumed (from memory or storage). */
  wasRecovering: boolean;
  /** Every missed publication was (or is being) delivered. */
  recovered: boolean;
  position: Position | null;
}

/** A client in a channel's presence. */
export interface PresenceClient {
  client: string;
  user: string;
  connInfo?: unknown;
  chanInfo?: unknown;
}

/** `join` / `leave` in a channel whose namespace announces them. */
export interface JoinLeaveEvent {
  channel: string;
  kind: 'join' | 'leave';
  info: PresenceClient;
}

/** The kinds of errors reported as events. Nothing is ever thrown into application code. */
export type HeraldErrorKind =
  | 'auth'
  | 'connect'
  | 'transport'
  | 'rate-limit'
  | 'permission'
  | 'subscribe'
  | 'publish'
  | 'outbox-full'
  | 'outbox-failed'
  | 'storage'
  | 'handler'
  | 'share'
  | 'protocol';

/** A typed error event. */
export interface HeraldError {
  kind: HeraldErrorKind;
  /** The server's reply or disconnect code, when there is one. */
  code?: number;
  message: string;
  channel?: string;
  /** Whether Herald keeps retrying by itself. */
  temporary: boolean;
}

/** The connection's state, the same in every tab. */
export type ConnectionState =
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'offline'
  | 'disconnected'
  | 'failed';

/** How tabs share the connection. */
export type ShareMode = 'worker' | 'leader' | 'off';

/** A snapshot of the connection status. Snapshots are immutable; a change makes a new one. */
export interface Status {
  state: ConnectionState;
  /** Why the connection is not (or no longer) connected. */
  reason: { code: number; message: string } | null;
  /** Consecutive failed attempts since the last stable connection. */
  attempt: number;
  /** When the next attempt is due (ms since the epoch), while reconnecting. */
  nextRetryAt: number | null;
  /** The transport in use, e.g. `websocket`, `http_stream` or `sse`. */
  transport: string | null;
  /** Transports that opened and then stayed silent, passed over for now (see `fallback`). */
  skippedTransports: TransportSkip[];
  /** The last measured round trip to the node, in ms. */
  latencyMs: number | null;
  /** This tab holds the connection. */
  isLeader: boolean;
  /** How the connection is shared. */
  mode: ShareMode;
  /** Tabs sharing the connection (including this one). */
  tabs: number;
  lastConnectedAt: number | null;
}

/** Something that can be observed, shaped for React's `useSyncExternalStore`. */
export interface Observable<T> {
  /** Calls `listener` after every change; returns a function that stops that. */
  subscribe(listener: () => void): () => void;
  getSnapshot(): T;
}

/** The transports a Herald node serves to browsers. */
export type TransportName = 'websocket' | 'http_stream' | 'sse';

/** One transport the SDK may use, in order of preference. */
export interface TransportEndpoint {
  transport: TransportName;
  endpoint: string;
}

/** A transport that opened and then stayed silent, passed over until `retryAt`. */
export interface TransportSkip {
  transport: TransportName;
  endpoint: string;
  /** When it is tried again (ms since the epoch), at the first attempt after that. */
  retryAt: number;
}

/** `fallback`: a transport opened but stayed silent, and the connection moves to another. */
export interface FallbackEvent {
  /** The silent transport. */
  from: TransportName;
  /** The transport the next attempt uses. */
  to: TransportName;
  /** Why: the transport opened and gave no connect reply in time. */
  reason: 'silent';
  /** How long it waited for the connect reply after the transport opened, in ms. */
  waitedMs: number;
  /** When the silent transport is tried again (ms since the epoch). */
  retryAt: number;
}

/** Reconnect policy: exponential backoff with full jitter. */
export interface ReconnectOptions {
  /** The first delay's ceiling (1 s). */
  baseDelayMs?: number;
  /** The cap (30 s). */
  maxDelayMs?: number;
  /** A hard floor between attempts, whatever the failure (250 ms). */
  minDelayMs?: number;
  /** Connected this long resets the backoff (10 s). */
  stableAfterMs?: number;
  /** A tab hidden at least this long reconnects at once on becoming visible (60 s). */
  wakeAfterMs?: number;
}

/** Outbox bounds. */
export interface OutboxOptions {
  /** Most items kept, pending and failed (1000). */
  maxItems?: number;
  /** Most bytes of JSON data kept (5 MiB). */
  maxBytes?: number;
  /** An unsent item older than this moves to `failed` (24 h). */
  maxAgeMs?: number;
  /** Warn before the tab closes while items are unsent (off). */
  warnOnUnload?: boolean;
}

/** Options of {@link createHerald}. */
export interface HeraldOptions {
  /** The node's WebSocket endpoint, `ws(s)://host/connection/websocket`. */
  url: string;
  /** Returns a connection token from the app's backend; called when needed. Resolve null to refuse for good. */
  getToken?: () => Promise<string | null>;
  /**
   * Returns a subscription token for a private (`$`) channel from the app's backend;
   * resolve null when this user may not subscribe to it.
   */
  getSubscriptionToken?: (channel: string) => Promise<string | null>;
  /** How tabs share one connection (`auto`). */
  share?: 'auto' | ShareMode;
  /** Connect at once (true). */
  connect?: boolean;
  /** Where the SharedWorker script is served; defaults to the package's `worker.js`. */
  workerUrl?: string | URL;
  /** Separates independent clients of one origin (derived from `url`). */
  scope?: string;
  /** Persist channel positions so a reload resumes (true). */
  persistPositions?: boolean;
  /** How long a connect may take before the attempt counts as failed (8 s). */
  connectTimeoutMs?: number;
  /**
   * The transports to try, in order (`'websocket'`). `'websocket'`: WebSocket on `url`
   * only. `'auto'`: WebSocket on `url`, then HTTP-streaming and SSE on the same node
   * (`/connection/http_stream`, `/connection/sse`, commands to `/emulation`). A list: those.
   */
  transports?: 'websocket' | 'auto' | TransportEndpoint[];
  /** Where HTTP-streaming and SSE post commands; derived from their endpoint (`…/emulation`). */
  emulationEndpoint?: string;
  /**
   * A transport that opened but gives no connect reply within this time is silent: the
   * connection moves to the next transport (4 s; only with more than one transport).
   */
  silentTransportTimeoutMs?: number;
  /** A silent transport is passed over this long, then tried again (10 min). */
  silentTransportRetryMs?: number;
  reconnect?: ReconnectOptions;
  outbox?: OutboxOptions;
  /** Client name sent to the server. */
  name?: string;
}

/** Options of {@link Herald.subscribe}. */
export interface SubscribeOptions {
  /** Called with `resync` events for this channel. */
  onResync?: (event: ResyncEvent) => void;
  /** Called when the channel is live for this tab. */
  onSubscribed?: (event: SubscribedEvent) => void;
  /** Resume from the stored position on first subscribe (true). */
  resume?: boolean;
  /** Called when a client joins or leaves (namespaces with `join_leave`). */
  onJoinLeave?: (event: JoinLeaveEvent) => void;
}

/** An outbox item as the app sees it. */
export interface OutboxItem {
  id: string;
  channel: string;
  data: unknown;
  /** The idempotency key the server deduplicates by. */
  key: string;
  coalesceKey?: string;
  createdAt: number;
  expiresAt: number;
  attempts: number;
  state: 'pending' | 'failed';
  error?: { code: number; message: string };
}

/** Options of `outbox.enqueue`. */
export interface EnqueueOptions {
  /** The idempotency key; a random one is made otherwise. */
  key?: string;
  /** A newer item with the same coalesce key replaces an unsent older one. */
  coalesceKey?: string;
  /** This item's maximum age. */
  ttlMs?: number;
}

/** What `outbox.enqueue` resolves to (it never rejects). */
export type EnqueueResult =
  | { ok: true; item: OutboxItem }
  | { ok: false; error: HeraldError };

/** Counts of the outbox, the same in every tab. */
export interface OutboxStatus {
  pending: number;
  failed: number;
}

/** The offline outbox. */
export interface Outbox {
  enqueue(channel: string, data: unknown, options?: EnqueueOptions): Promise<EnqueueResult>;
  status: Observable<OutboxStatus>;
  /** Items the server refused for good. */
  failed(): Promise<OutboxItem[]>;
  /** Items waiting to be sent, in order. */
  pending(): Promise<OutboxItem[]>;
  /** Moves a failed item back to the queue. */
  retry(id: string): Promise<boolean>;
  /** Deletes an item. */
  discard(id: string): Promise<boolean>;
}

/** The events of a Herald client. */
export interface HeraldEvents {
  resync: ResyncEvent;
  subscribed: SubscribedEvent;
  error: HeraldError;
  fallback: FallbackEvent;
}

/** A Herald client, made by {@link createHerald}. */
export interface Herald {
  /** Delivers the channel's publications to `onPublication` until the returned function is called. */
  subscribe<T = unknown>(
    channel: string,
    onPublication: (publication: Publication<T>) => void,
    options?: SubscribeOptions,
  ): () => void;
  /** Publishes once through the connection; resolves with the position or an error (never rejects). */
  publish(
    channel: string,
    data: unknown,
    options?: { idempotencyKey?: string },
  ): Promise<{ ok: true; position: Position | null } | { ok: false; error: HeraldError }>;
  /** Who is subscribed to `channel` now (namespaces with presence); resolves, never rejects. */
  presence(channel: string): Promise<{ ok: true; clients: PresenceClient[] } | { ok: false; error: HeraldError }>;
  on<K extends keyof HeraldEvents>(event: K, listener: (event: HeraldEvents[K]) => void): () => void;
  status: Observable<Status>;
  outbox: Outbox;
  /** Connects (again), also after `failed`. */
  connect(): void;
  /** Disconnects this browser's shared connection until `connect()`. */
  disconnect(): void;
  /** Releases everything this tab holds: listeners, timers, its share of the connection. */
  close(): void;
}
