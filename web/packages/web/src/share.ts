//! How a tab reaches the hub: in the same tab, in a SharedWorker, or in the leader tab elected with Web Locks.

import type { Hub } from './hub.js';
import { openDb } from './idb.js';
import { envelope, openEnvelope, parseHubMessage, parseTabMessage, type HubMessage, type HubSettings, type TabMessage } from './messages.js';
import { IdbOutbox } from './outbox.js';
import { IdbPositions, MemoryPositions, WebStoragePositions, storageWorks } from './positions.js';
import { randomId } from './outbox.js';
import type { ShareMode } from './types.js';

/** What a tab gets from its link to the hub. */
export interface LinkHandlers {
  /** A validated message from the current hub. */
  message(m: HubMessage): void;
  /** The tab now holds the connection (leader mode) or no longer does. */
  leader(isLeader: boolean): void;
  /** The chosen way of sharing failed; the link fell back to another. */
  fallback(from: ShareMode, to: ShareMode, why: string): void;
  /** The hub asks for a token (`channel` null: the connection's); resolves with it, or null when the app refuses. */
  token(channel: string | null): Promise<string | null>;
  /** The app can make subscription tokens. */
  readonly subTokens: boolean;
}

/** The tab's end of the connection to a hub. */
export interface Link {
  readonly mode: ShareMode;
  send(m: TabMessage): void;
  isLeader(): boolean;
  /** The page is going away: write what must survive, say goodbye. */
  hide(): void;
  close(): void;
}

/**
 * What the hub's own tab is handed: a copy of each publication, as other tabs get one
 * through structured cloning, so that a handler that mutates its data cannot change what
 * the hub keeps for filling other tabs.
 */
export function ownCopy(m: HubMessage): HubMessage {
  return m.type === 'pub' ? { type: 'pub', pub: structuredClone(m.pub) } : m;
}

/** The name of the lock a SharedWorker holds for its whole life. */
export const workerLock = (scope: string, hub: string) => `herald:${scope}:worker:${hub}`;

/** Makes a hub for `settings`, with the origin's storage when there is some. */
export async function makeHub(id: string, settings: HubSettings): Promise<Hub> {
  // Loaded on demand: a tab that shares a worker's connection never needs it.
  const [{ Hub }, db] = await Promise.all([import('./hub.js'), openDb(settings.scope)]);
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  return new Hub({
    id,
    settings,
    positions: db
      ? new IdbPositions(db)
      : storageWorks(() => localStorage)
        ? new WebStoragePositions(() => localStorage, `herald:${settings.scope}:pos:`, true)
        : new MemoryPositions(),
    outbox: db ? new IdbOutbox(db) : null,
    onClose: () => db?.close(),
    ...(locks ? { exclusive: <T>(fn: () => Promise<T>) => locks.request(`herald:${settings.scope}:outbox`, fn) as Promise<T> } : {}),
  });
}

/**
 * Calls `gone` when tab `tab` ends (closed, crashed, navigated): every tab holds a lock
 * named after itself for its whole life, and the hub queues for the same lock.
 */
export function watchTab(scope: string, tab: string, signal: AbortSignal, gone: () => void): void {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  if (!locks) return;
  locks.request(`herald:${scope}:tab:${tab}`, { signal }, () => gone()).catch(() => {
    // Aborted: the hub closed first.
  });
}

/** Holds this tab's own life lock; resolves once it is held. */
export function holdTabLock(scope: string, tab: string, signal: AbortSignal): Promise<void> {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  if (!locks) return Promise.resolve();
  return new Promise((held) => {
    locks
      .request(`herald:${scope}:tab:${tab}`, { signal }, () => {
        held();
        return new Promise<void>((release) => signal.addEventListener('abort', () => release()));
      })
      .catch(() => held());
  });
}

/** The hub in this very tab: no sharing. */
export function localLink(tab: string, settings: HubSettings, h: LinkHandlers, leader = false): Link {
  let hub: Hub | null = null;
  const queue: TabMessage[] = [];
  let closed = false;
  void makeHub(randomId(), settings).then((made) => {
    if (closed) return made.close();
    hub = made;
    hub.addPeer(tab, (m) => queueMicrotask(() => !closed && h.message(ownCopy(m))), h.token, h.subTokens);
    for (const m of queue.splice(0)) hub.receive(tab, m);
  });
  return {
    mode: leader ? 'leader' : 'off',
    send: (m) => {
      if (closed) return;
      if (!hub) return void queue.push(m);
      const target = hub;
      queueMicrotask(() => target.receive(tab, m));
    },
    isLeader: () => true,
    hide: () => hub?.flush(),
    close: () => {
      closed = true;
      hub?.close();
    },
  };
}

/**
 * The hub in a SharedWorker at `url`. Falls back to `onFail` when the worker cannot be
 * started or does not answer within `timeoutMs` (a bundler that did not ship the file,
 * a stale cached worker speaking another protocol version).
 */
export function workerLink(
  tab: string,
  settings: HubSettings,
  url: string | URL,
  h: LinkHandlers,
  onFail: (why: string) => void,
  onLost: () => void,
  timeoutMs = 3000,
): Link {
  const abort = new AbortController();
  let hubId: string | null = null;
  let failed = false;
  let closed = false;
  let worker: SharedWorker;
  const fail = (why: string) => {
    if (failed || hubId || closed) return;
    failed = true;
    clearTimeout(timer);
    abort.abort();
    try {
      worker?.port.close();
    } catch {
      // Nothing to close.
    }
    onFail(why);
  };
  const timer = setTimeout(() => fail(`the shared worker did not answer within ${timeoutMs} ms`), timeoutMs);
  const pending: TabMessage[] = [];
  try {
    worker = new SharedWorker(url, { name: `herald:${settings.scope}` });
  } catch (e) {
    queueMicrotask(() => fail(`the shared worker could not start: ${String(e)}`));
    return { mode: 'worker', send: () => {}, isLeader: () => false, hide: () => {}, close: () => abort.abort() };
  }
  const port = worker.port;
  worker.addEventListener('error', () => fail(`the shared worker at ${String(url)} failed to load`));
  port.onmessage = (ev: MessageEvent) => {
    const env = openEnvelope(ev.data);
    if (!env || env.to !== tab) return;
    const m = parseHubMessage(env.msg as { type: string } & Record<string, unknown>);
    if (!m) return;
    if (m.type === 'welcome') {
      clearTimeout(timer);
      if (hubId === m.hub) return;
      hubId = m.hub;
      // The worker holds a lock for its whole life: being granted it means the worker is gone.
      navigator.locks
        ?.request(workerLock(settings.scope, m.hub), { signal: abort.signal }, () => {
          if (!closed) onLost();
        })
        .catch(() => {
          // Aborted: this link closed.
        });
      h.message(m);
      for (const p of pending.splice(0)) post(p);
      return;
    }
    if (env.from !== hubId) return;
    h.message(m);
  };
  port.start();
  const post = (m: unknown) => port.postMessage(envelope(tab, hubId ?? 'hub', m));
  // The worker learns that this tab ended when the tab's life lock is released, so the
  // lock is held before the worker hears of the tab.
  void holdTabLock(settings.scope, tab, abort.signal).then(() => {
    if (!abort.signal.aborted) post({ type: 'discover', settings });
  });
  return {
    mode: 'worker',
    send: (m) => {
      if (failed || abort.signal.aborted) return;
      if (!hubId) return void pending.push(m);
      post(m);
    },
    isLeader: () => false,
    hide: () => {
      if (!failed) post({ type: 'bye' });
    },
    close: () => {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      if (!failed && hubId) post({ type: 'bye' });
      abort.abort();
      try {
        port.close();
      } catch {
        // Already closed.
      }
    },
  };
}

/** How often a follower checks on the leader. */
const CHECK_MS = 2000;
/** A visible follower that has heard nothing from the leader for this long (plus jitter) asks it for a sign of life. */
const SILENT_MS = 10_000;
/** How long the leader has to answer before a visible follower takes over. */
const ANSWER_MS = 2000;

/**
 * One leader tab holds the hub; the others talk to it over a BroadcastChannel. The
 * leader is whoever holds the scope's leader lock; the next in the lock's queue takes
 * over the moment it is released (the leader closed, crashed or navigated away). A
 * leader that is frozen or hung keeps its lock: a visible follower that has not heard
 * from it for a while pings it (a message, which a hidden but healthy tab answers at
 * once, unlike a throttled timer) and steals the lock when no answer comes; the old
 * leader, when it wakes, finds the lock gone and steps down. Followers only listen to
 * the hub that welcomed them last.
 */
export function leaderLink(tab: string, settings: HubSettings, h: LinkHandlers): Link {
  // Every tab may become the leader: have the hub's code at hand before a handover needs it.
  void import('./hub.js').catch(() => {});
  const scope = settings.scope;
  const lockName = `herald:${scope}:leader`;
  const abort = new AbortController();
  const bc = new BroadcastChannel(`herald:${scope}`);
  let hubId: string | null = null;
  let local: Link | null = null;
  let hub: Hub | null = null;
  let closed = false;
  let lastHeard = Date.now();
  let pingedAt: number | null = null;
  const silentAfter = SILENT_MS + Math.floor(Math.random() * 2000);
  const post = (to: string, m: unknown) => bc.postMessage(envelope(tab, to, m));

  bc.onmessage = (ev: MessageEvent) => {
    const env = openEnvelope(ev.data);
    if (!env) return;
    // Messages for the hub this tab runs.
    if (hub && (env.to === hubId || env.to === 'hub')) {
      if (env.msg.type === 'discover') return void bc.postMessage(envelope(hubId as string, env.from, { type: 'welcome', hub: hubId }));
      if (env.msg.type === 'ping') return void bc.postMessage(envelope(hubId as string, env.from, { type: 'pong' }));
      const m = parseTabMessage(env.msg as { type: string } & Record<string, unknown>);
      if (!m) return;
      if (m.type === 'hello') {
        const peer = env.from;
        const id = hubId as string;
        hub.addPeer(peer, (out) => bc.postMessage(envelope(id, peer, out)));
        watchTab(scope, peer, abort.signal, () => hub?.removePeer(peer));
      }
      hub.receive(env.from, m);
      return;
    }
    // Messages for this tab from the current hub.
    if (env.to !== tab && env.to !== '*') return;
    if (env.msg.type === 'pong') {
      if (env.from === hubId) {
        lastHeard = Date.now();
        pingedAt = null;
      }
      return;
    }
    const m = parseHubMessage(env.msg as { type: string } & Record<string, unknown>);
    if (!m) return;
    if (m.type === 'welcome') {
      if (local || m.hub === hubId) return;
      hubId = m.hub;
    } else if (env.from !== hubId || local) return;
    lastHeard = Date.now();
    pingedAt = null;
    h.message(m);
  };

  /** Steps down after the lock was stolen: the hub closes, and this tab queues again. */
  const resign = () => {
    local?.close();
    local = null;
    hub = null;
    hubId = null;
    lastHeard = Date.now();
    h.leader(false);
    // The new leader's welcome may have come while this tab still led: ask for it again.
    post('hub', { type: 'discover' });
    candidate(false);
  };

  /** Queues for the leader lock, or takes it from a silent leader. */
  const candidate = (steal: boolean) => {
    if (closed) return;
    const options: LockOptions = steal ? { steal: true } : { signal: abort.signal };
    // Set when this request's lock is stolen, possibly while the hub is still being made.
    const lease = { lost: false };
    navigator.locks
      .request(lockName, options, async () => {
        if (closed) return;
        hubId = randomId();
        const id = hubId;
        const made = await makeHub(id, settings);
        if (closed || lease.lost || hubId !== id) {
          made.close();
          if (hubId === id) hubId = null;
          return;
        }
        hub = made;
        // The leader's own tab talks to the hub directly.
        made.addPeer(tab, (m) => queueMicrotask(() => !closed && hub === made && h.message(ownCopy(m))), h.token, h.subTokens);
        local = {
          mode: 'leader',
          send: (m) => queueMicrotask(() => made.receive(tab, m)),
          isLeader: () => true,
          hide: () => made.flush(),
          close: () => made.close(),
        };
        h.leader(true);
        // Followers attach to the new hub and tell it where they stand.
        bc.postMessage(envelope(id, '*', { type: 'welcome', hub: id }));
        await new Promise<void>((release) => abort.signal.addEventListener('abort', () => release()));
      })
      .catch(() => {
        // Aborted because this tab is closing, or stolen by a follower while this tab was frozen.
        lease.lost = true;
        if (!closed && local) resign();
      });
  };

  const watchdog = setInterval(() => {
    if (closed || local || !hubId) return;
    if (typeof document !== 'undefined' && document.visibilityState !== 'visible') return;
    const now = Date.now();
    if (now - lastHeard < silentAfter) return;
    if (pingedAt === null) {
      pingedAt = now;
      return void post(hubId, { type: 'ping' });
    }
    if (now - pingedAt < ANSWER_MS) return;
    pingedAt = null;
    lastHeard = now;
    candidate(true);
  }, CHECK_MS);

  void holdTabLock(scope, tab, abort.signal).then(() => {
    if (closed) return;
    post('hub', { type: 'discover' });
    candidate(false);
  });

  return {
    mode: 'leader',
    send: (m) => {
      if (closed) return;
      if (local) return local.send(m);
      if (hubId) post(hubId, m);
    },
    isLeader: () => local !== null,
    hide: () => {
      if (local) local.hide();
      else if (hubId) post(hubId, { type: 'bye' });
    },
    close: () => {
      if (closed) return;
      if (!local && hubId) post(hubId, { type: 'bye' });
      closed = true;
      clearInterval(watchdog);
      local?.close();
      abort.abort();
      bc.close();
    },
  };
}
