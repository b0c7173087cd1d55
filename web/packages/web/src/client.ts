//! `createHerald`: the tab's side of Herald — subscriptions, exactly-once delivery, status, outbox.

import { reconnectPolicy } from './backoff.js';
import { classify } from './cursor.js';
import { RefCount } from './refcount.js';
import type { Drainer } from './drain.js';
import { Emitter, Store, safely } from './emitter.js';
import { openDb } from './idb.js';
import type { HubMessage, HubSettings, HubStatus, TabMessage } from './messages.js';
import { DEFAULT_BOUNDS, IdbOutbox, MemoryOutbox, countOf, itemOf, makeRecord, randomId, type OutboxBounds, type OutboxStore } from './outbox.js';
import { IdbPositions, MemoryPositions, PositionWriter, WebStoragePositions, storageWorks, type PositionStore } from './positions.js';
import { leaderLink, localLink, workerLink, type Link, type LinkHandlers } from './share.js';
import { planTransports } from './transports.js';
import type {
  EnqueueResult,
  Herald,
  HeraldError,
  HeraldEvents,
  HeraldOptions,
  OutboxStatus,
  Position,
  Publication,
  ShareMode,
  Status,
  SubscribedEvent,
  SubscribeOptions,
} from './types.js';

interface Handler {
  fn: (p: Publication<never>) => void;
  opts: SubscribeOptions;
}

interface TabChannel {
  name: string;
  /** The last publication delivered in this tab. */
  pos: Position | null;
  /** The hub knows about this channel. */
  attached: boolean;
  /** The stored position has been looked up. */
  ready: boolean;
  /** The last `subscribed` event: a handler added later is told the channel is live. */
  live: SubscribedEvent | null;
}

const PUBLISH_TIMEOUT_MS = 15_000;

/** Picks how to share: the requested way where the browser can, else the next best. */
export function pickMode(share: HeraldOptions['share'] = 'auto'): ShareMode {
  const g = globalThis as { SharedWorker?: unknown; BroadcastChannel?: unknown; navigator?: Navigator };
  const canWorker = typeof g.SharedWorker === 'function';
  const canLeader = typeof g.BroadcastChannel === 'function' && !!g.navigator?.locks;
  if (share === 'off') return 'off';
  if ((share === 'auto' || share === 'worker') && canWorker) return 'worker';
  if (canLeader) return 'leader';
  return 'off';
}

/** The default worker script: `worker.js` beside this module, where bundlers that follow `new URL(…, import.meta.url)` put it. */
function defaultWorkerUrl(): URL | null {
  try {
    return new URL('./worker.js', import.meta.url);
  } catch {
    return null;
  }
}

/**
 * Creates a Herald client for this tab. It connects at once unless `connect: false`, and
 * shares one connection with the other tabs of this browser profile and origin.
 */
export function createHerald(options: HeraldOptions): Herald {
  let tab = randomId();
  const policy = reconnectPolicy(options.reconnect);
  const plan = planTransports(options.url, options.transports, options.emulationEndpoint);
  const settings: HubSettings = {
    url: options.url,
    transports: plan.list,
    emulationEndpoint: plan.emulationEndpoint,
    connectTimeoutMs: options.connectTimeoutMs ?? 8000,
    reconnect: policy,
    name: options.name ?? 'herald-web',
    scope: options.scope ?? options.url,
    persistPositions: options.persistPositions ?? true,
  };
  // Undefined leaves the hub's defaults (a tab of an older build sends none either).
  if (options.silentTransportTimeoutMs !== undefined) settings.silentTimeoutMs = options.silentTransportTimeoutMs;
  if (options.silentTransportRetryMs !== undefined) settings.silentRetryMs = options.silentTransportRetryMs;
  const bounds: OutboxBounds = { ...DEFAULT_BOUNDS, ...pickBounds(options.outbox) };
  const events = new Emitter<HeraldEvents>((e, ev) => {
    if (ev !== 'error') events.emit('error', { kind: 'handler', message: `a ${String(ev)} listener threw: ${String(e)}`, temporary: false });
  });
  const channels = new Map<string, TabChannel>();
  // The components of this tab that hold each channel; the hub counts tabs the same way.
  const refs = new RefCount<string, Handler>();
  let hubStatus: HubStatus = { state: 'connecting', reason: null, attempt: 0, nextRetryAt: null, transport: null, latencyMs: null, tabs: 1, lastConnectedAt: null, skippedTransports: [] };
  const status = new Store<Status>({ ...hubStatus, state: options.connect === false ? 'disconnected' : 'connecting', isLeader: false, mode: 'off' });
  const outboxStatus = new Store<OutboxStatus>({ pending: 0, failed: 0 });
  let wantConnect = options.connect !== false;
  let hubReady = false;
  let closed = false;
  const queue: TabMessage[] = [];
  let req = 0;
  // Requests to the hub waiting for their reply (publish, presence), kept with their
  // message so that a new hub can be asked again.
  const pending = new Map<number, { msg: TabMessage; fail: (message: string, temporary: boolean) => void; done: (r: unknown) => void }>();
  let hubId: string | null = null;
  const cleanups: (() => void)[] = [];

  const error = (e: HeraldError) => events.emit('error', e);

  // What this tab delivered, kept in sessionStorage: a reload resumes exactly there, even
  // while other tabs kept the shared position moving.
  const mine: PositionStore | null = settings.persistPositions && storageWorks(() => sessionStorage)
    ? new WebStoragePositions(() => sessionStorage, `herald:${settings.scope}:tab:`, false)
    : null;
  const mineWriter = mine ? new PositionWriter(mine, () => {}) : null;
  // Channels this page has subscribed before: a later subscribe does not replay from where
  // an earlier one (of a component since unmounted) stopped.
  const seen = new Set<string>();

  // Storage: positions and the outbox, in IndexedDB where it exists.
  const db = openDb(settings.scope);
  let positions: PositionStore = new MemoryPositions();
  let outboxStore: OutboxStore = new MemoryOutbox();
  let localDrain: Drainer | null = null;
  const storage = db.then(async (d) => {
    if (d) {
      positions = new IdbPositions(d);
      outboxStore = new IdbOutbox(d);
    } else {
      const local = storageWorks(() => localStorage);
      if (local) positions = new WebStoragePositions(() => localStorage, `herald:${settings.scope}:pos:`, true);
      error({
        kind: 'storage',
        message: `IndexedDB is unavailable: positions are kept in ${local ? 'localStorage' : 'memory'}, the outbox in memory for this tab only`,
        temporary: false,
      });
      // Without shared storage this tab sends its own outbox through the hub (code loaded
      // only then: with IndexedDB, the hub does the sending).
      const { Drainer } = await import('./drain.js');
      localDrain = new Drainer(outboxStore, (item) => publish(item.channel, item.data, { idempotencyKey: item.key }), () => status.getSnapshot().state === 'connected', refreshOutbox, error);
      if (closed) localDrain.close();
    }
    void refreshOutbox();
  });

  function online(): boolean {
    return typeof navigator === 'undefined' || navigator.onLine !== false;
  }

  function visible(): boolean {
    return typeof document === 'undefined' || document.visibilityState !== 'hidden';
  }

  function refreshStatus(): void {
    // The browser's own word on being offline wins: a shared worker's socket may linger.
    const state = !online() && hubStatus.state !== 'failed' && hubStatus.state !== 'disconnected' ? 'offline' : hubStatus.state;
    status.set({ ...hubStatus, state, isLeader: link?.isLeader() ?? false, mode: link?.mode ?? 'off' });
  }

  async function refreshOutbox(): Promise<void> {
    try {
      outboxStatus.set(countOf(await outboxStore.all()));
    } catch (e) {
      error({ kind: 'storage', message: `reading the outbox: ${String(e)}`, temporary: true });
    }
  }

  function send(m: TabMessage): void {
    if (closed) return;
    if (!hubReady || !link) return void queue.push(m);
    safely(() => link?.send(m));
  }

  function attach(ch: TabChannel): void {
    if (!hubReady || !ch.ready || closed) return;
    ch.attached = true;
    link?.send({ type: 'attach', channel: ch.name, since: ch.pos });
  }

  function handlerError(channel: string, what: string): (e: unknown) => void {
    return (e) => error({ kind: 'handler', message: `an ${what} of ${channel} threw: ${String(e)}`, channel, temporary: false });
  }

  function deliver(ch: TabChannel, pub: Publication): void {
    switch (classify(ch.pos, pub.epoch, pub.offset)) {
      case 'duplicate':
        return;
      case 'gap':
      case 'epoch':
        // The hub skipped ahead of this tab: attaching again makes it fill from our position.
        return attach(ch);
      case 'deliver':
        if (pub.offset !== undefined && pub.epoch !== undefined) {
          ch.pos = { epoch: pub.epoch, offset: pub.offset };
          mineWriter?.write(ch.name, ch.pos);
        }
        for (const h of [...refs.get(ch.name)]) {
          const copy = { ...pub };
          safely(() => h.fn(copy as Publication<never>), handlerError(ch.name, 'publication handler'));
        }
    }
  }

  function onMessage(m: HubMessage): void {
    if (closed) return;
    switch (m.type) {
      case 'welcome': {
        // A new hub (first contact, or a handover): introduce this tab and say where it stands.
        const handover = hubId !== null && hubId !== m.hub;
        hubId = m.hub;
        hubReady = true;
        link?.send({
          type: 'hello',
          settings,
          hasToken: typeof options.getToken === 'function',
          hasSubToken: typeof options.getSubscriptionToken === 'function',
          online: online(),
          visible: visible(),
          wantConnect,
          // What the previous hub found silent, so that a new one does not try it again at once.
          skipped: hubStatus.skippedTransports ?? [],
        });
        for (const ch of channels.values()) attach(ch);
        for (const q of queue.splice(0)) link?.send(q);
        if (handover) {
          // Requests the old hub may or may not have served: a presence read or a publish
          // with a key is safe to send again (the node applies a key once); a publish
          // without one has an unknown outcome.
          for (const p of [...pending.values()]) {
            if (p.msg.type === 'presence' || (p.msg.type === 'publish' && p.msg.key !== null)) link?.send(p.msg);
            else p.fail('the tab holding the connection went away; the publish may or may not have been applied', true);
          }
        }
        refreshStatus();
        return;
      }
      case 'status':
        hubStatus = m.status;
        // The shared intent, so that a hub that takes over later neither reconnects after
        // a disconnect() or a refusal, nor stays away when the others are connected.
        if (m.status.state === 'failed' || m.status.state === 'disconnected') wantConnect = false;
        else wantConnect = true;
        refreshStatus();
        if (m.status.state === 'connected') localDrain?.kick();
        return;
      case 'pub': {
        const ch = channels.get(m.pub.channel);
        if (ch?.attached) deliver(ch, m.pub);
        return;
      }
      case 'subscribed': {
        const ch = channels.get(m.event.channel);
        if (!ch) return;
        if (!ch.pos && m.event.position) ch.pos = m.event.position;
        ch.live = m.event;
        for (const h of [...refs.get(ch.name)]) safely(() => h.opts.onSubscribed?.(m.event), handlerError(ch.name, 'onSubscribed'));
        events.emit('subscribed', m.event);
        return;
      }
      case 'resync': {
        const ch = channels.get(m.event.channel);
        if (!ch) return;
        ch.pos = m.event.to;
        if (ch.pos) mineWriter?.write(ch.name, ch.pos);
        for (const h of [...refs.get(ch.name)]) safely(() => h.opts.onResync?.(m.event), handlerError(ch.name, 'onResync'));
        events.emit('resync', m.event);
        return;
      }
      case 'error':
        return error(m.error);
      case 'fallback':
        events.emit('fallback', m.event);
        return;
      case 'published':
        pending.get(m.req)?.done(m.ok ? { ok: true, position: m.position } : { ok: false, error: m.error ?? { kind: 'publish', message: 'refused', temporary: false } });
        return;
      case 'token':
        void answerToken(m.req, m.channel);
        return;
      case 'outbox':
        void refreshOutbox();
        return;
      case 'presence':
        pending.get(m.req)?.done(m.clients ? { ok: true, clients: m.clients } : { ok: false, error: m.error ?? { kind: 'subscribe', message: 'presence failed', temporary: true } });
        return;
      case 'joinLeave': {
        const ch = channels.get(m.event.channel);
        if (!ch) return;
        for (const h of [...refs.get(ch.name)]) safely(() => h.opts.onJoinLeave?.(m.event), handlerError(ch.name, 'onJoinLeave'));
        return;
      }
    }
  }

  async function tokenFromApp(channel: string | null): Promise<string | null> {
    const make = channel === null ? options.getToken : options.getSubscriptionToken && (() => options.getSubscriptionToken!(channel));
    if (!make) return channel === null ? '' : null;
    const t = await make();
    return typeof t === 'string' ? t : null;
  }

  async function answerToken(id: number, channel: string | null): Promise<void> {
    try {
      link?.send({ type: 'token', req: id, token: await tokenFromApp(channel), error: null });
    } catch (e) {
      link?.send({ type: 'token', req: id, token: null, error: String(e) });
    }
  }

  const handlers: LinkHandlers = {
    message: onMessage,
    leader: () => refreshStatus(),
    fallback: (from, to, why) => error({ kind: 'share', message: `sharing by ${from} failed (${why}); using ${to}`, temporary: false }),
    token: tokenFromApp,
    subTokens: typeof options.getSubscriptionToken === 'function',
  };

  function open(mode: ShareMode): Link {
    if (mode === 'worker') {
      const url = options.workerUrl ?? defaultWorkerUrl();
      if (url) {
        const replace = (next: ShareMode) => {
          if (closed) return;
          link?.close();
          hubReady = false;
          for (const ch of channels.values()) ch.attached = false;
          link = open(next);
          refreshStatus();
        };
        return workerLink(
          tab,
          settings,
          url,
          handlers,
          (why) => {
            handlers.fallback('worker', pickMode('leader'), why);
            replace(pickMode('leader'));
          },
          // The worker died under us: start it again (every tab does; they meet in the new one).
          () => replace('worker'),
        );
      }
      mode = pickMode('leader');
    }
    if (mode === 'leader') return leaderLink(tab, settings, handlers);
    return localLink(tab, settings, handlers);
  }

  let link: Link | null = open(pickMode(options.share));
  refreshStatus();

  // Page life: network, visibility, leaving.
  if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
    let hiddenAt: number | null = null;
    const listen = (target: EventTarget, type: string, fn: (e: Event) => void) => {
      target.addEventListener(type, fn);
      cleanups.push(() => target.removeEventListener(type, fn));
    };
    listen(window, 'online', () => {
      send({ type: 'network', online: true });
      refreshStatus();
    });
    listen(window, 'offline', () => {
      send({ type: 'network', online: false });
      refreshStatus();
    });
    listen(document, 'visibilitychange', () => {
      if (document.visibilityState === 'hidden') hiddenAt = Date.now();
      else if (hiddenAt !== null) {
        send({ type: 'visible', hiddenMs: Date.now() - hiddenAt });
        hiddenAt = null;
      }
    });
    listen(window, 'pagehide', () => {
      // A clean goodbye, so the node does not wait for a missed ping; a leader hands over.
      mineWriter?.flush();
      if (!link) return;
      link.hide();
      link.close();
      link = null;
      hubReady = false;
      for (const ch of channels.values()) ch.attached = false;
    });
    listen(window, 'pageshow', (e) => {
      // Back from the back/forward cache: join again, from where each channel stands.
      if ((e as PageTransitionEvent).persisted && !link && !closed) {
        tab = randomId();
        link = open(pickMode(options.share));
        refreshStatus();
      }
    });
    if (options.outbox?.warnOnUnload) {
      listen(window, 'beforeunload', (e) => {
        if (outboxStatus.getSnapshot().pending > 0) {
          e.preventDefault();
          (e as BeforeUnloadEvent).returnValue = '';
        }
      });
    }
  }

  function publish(channel: string, data: unknown, opts: { idempotencyKey?: string } = {}): ReturnType<Herald['publish']> {
    const fail = (message: string) => Promise.resolve({ ok: false as const, error: { kind: 'publish' as const, message, channel, temporary: false } });
    if (closed) return fail('client closed');
    try {
      // What cannot cross to another tab or worker is refused now, not after a timeout.
      structuredClone(data);
      JSON.stringify(data);
    } catch (e) {
      return fail(`data cannot be sent: ${String(e)}`);
    }
    return request((id) => ({ type: 'publish', req: id, channel, data, key: opts.idempotencyKey ?? null }), channel, 'publish');
  }

  /**
   * Sends a request to the hub and resolves with its reply, or with an error of `kind`
   * after {@link PUBLISH_TIMEOUT_MS} or when the client closes; never rejects.
   */
  function request<R>(make: (req: number) => TabMessage, channel: string, kind: HeraldError['kind']): Promise<R | { ok: false; error: HeraldError }> {
    const id = ++req;
    const msg = make(id);
    return new Promise((resolve) => {
      const done = (r: unknown) => {
        clearTimeout(timer);
        pending.delete(id);
        resolve(r as R);
      };
      const fail = (message: string, temporary: boolean) => done({ ok: false, error: { kind, code: 0, message, channel, temporary } });
      const timer = setTimeout(() => fail('no reply in time', true), PUBLISH_TIMEOUT_MS);
      pending.set(id, { msg, fail, done });
      send(msg);
    });
  }

  async function enqueue(channel: string, data: unknown, opts: Parameters<Herald['outbox']['enqueue']>[2] = {}): Promise<EnqueueResult> {
    await storage;
    const rec = makeRecord(channel, data, opts ?? {}, bounds, Date.now());
    if ('kind' in rec) {
      error(rec);
      return { ok: false, error: rec };
    }
    let result: EnqueueResult;
    try {
      result = await outboxStore.enqueue(rec, bounds);
    } catch (e) {
      result = { ok: false, error: { kind: 'storage', message: `storing an outbox item: ${String(e)}`, channel, temporary: true } };
    }
    if (!result.ok) error(result.error);
    else {
      send({ type: 'outbox' });
      localDrain?.kick();
    }
    void refreshOutbox();
    return result;
  }

  async function change(id: string, fn: Parameters<OutboxStore['update']>[1]): Promise<boolean> {
    await storage;
    try {
      const ok = await outboxStore.update(id, fn);
      send({ type: 'outbox' });
      localDrain?.kick();
      void refreshOutbox();
      return ok;
    } catch (e) {
      error({ kind: 'storage', message: `changing an outbox item: ${String(e)}`, temporary: true });
      return false;
    }
  }

  async function list(state: 'pending' | 'failed') {
    await storage;
    try {
      return (await outboxStore.all()).filter((r) => r.state === state).sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0)).map(itemOf);
    } catch (e) {
      error({ kind: 'storage', message: `reading the outbox: ${String(e)}`, temporary: true });
      return [];
    }
  }

  return {
    subscribe(channel, onPublication, opts = {}) {
      if (closed || typeof channel !== 'string' || channel.length === 0 || typeof onPublication !== 'function') {
        error({ kind: 'subscribe', message: closed ? 'client closed' : 'subscribe needs a channel name and a function', channel: String(channel), temporary: false });
        return () => {};
      }
      const h: Handler = { fn: onPublication as Handler['fn'], opts };
      if (refs.add(channel, h)) {
        const fresh: TabChannel = { name: channel, pos: null, attached: false, ready: false, live: null };
        channels.set(channel, fresh);
        // This tab's own position (from before a reload) first, else the origin's.
        const first = !seen.has(channel);
        seen.add(channel);
        const lookup = settings.persistPositions && opts.resume !== false
          ? storage
              .then(async () => (first ? await mine?.get(channel) : null) ?? (await positions.get(channel)))
              .catch(() => null)
          : Promise.resolve(null);
        void lookup.then((stored) => {
          if (channels.get(channel) !== fresh) return;
          fresh.pos ??= stored;
          fresh.ready = true;
          attach(fresh);
        });
      }
      else {
        // The channel is live already: this handler hears so too (after this call returns).
        const ch = channels.get(channel);
        const live = ch?.live;
        if (live) {
          queueMicrotask(() => {
            if (refs.get(channel).has(h)) safely(() => opts.onSubscribed?.({ ...live, wasRecovering: false, recovered: false }), handlerError(channel, 'onSubscribed'));
          });
        }
      }
      let done = false;
      return () => {
        if (done) return;
        done = true;
        if (!refs.remove(channel, h)) return;
        const ch = channels.get(channel);
        channels.delete(channel);
        if (ch?.attached) send({ type: 'detach', channel });
      };
    },
    publish,
    presence(channel) {
      if (closed) return Promise.resolve({ ok: false, error: { kind: 'subscribe', message: 'client closed', channel, temporary: false } });
      return request((id) => ({ type: 'presence', req: id, channel }), channel, 'subscribe');
    },
    on: (event, listener) => events.on(event, listener),
    status: { subscribe: status.subscribe, getSnapshot: status.getSnapshot },
    outbox: {
      enqueue,
      status: { subscribe: outboxStatus.subscribe, getSnapshot: outboxStatus.getSnapshot },
      failed: () => list('failed'),
      pending: () => list('pending'),
      retry: (id) => change(id, (r) => (r.state === 'failed' ? { ...r, state: 'pending', attempts: 0, expiresAt: Date.now() + bounds.maxAgeMs } : r)),
      discard: (id) => change(id, () => null),
    },
    connect() {
      wantConnect = true;
      send({ type: 'connect' });
    },
    disconnect() {
      wantConnect = false;
      send({ type: 'disconnect' });
    },
    close() {
      if (closed) return;
      for (const ch of channels.values()) if (ch.attached) link?.send({ type: 'detach', channel: ch.name });
      channels.clear();
      refs.clear();
      link?.send({ type: 'bye' });
      closed = true;
      link?.close();
      link = null;
      localDrain?.close();
      mineWriter?.flush();
      for (const c of cleanups.splice(0)) c();
      for (const p of [...pending.values()]) p.fail('client closed', false);
      events.clear();
      status.clear();
      outboxStatus.clear();
      void db.then((d) => d?.close());
    },
  };
}

function pickBounds(o: HeraldOptions['outbox']): Partial<OutboxBounds> {
  const out: Partial<OutboxBounds> = {};
  if (!o) return out;
  for (const k of ['maxItems', 'maxBytes', 'maxAgeMs'] as const) {
    const v = o[k];
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) out[k] = v;
  }
  return out;
}
