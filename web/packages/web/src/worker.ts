//! The SharedWorker that holds the browser's one connection for every tab of the origin.

import type { Hub } from './hub.js';
import { envelope, openEnvelope, parseTabMessage, type HubSettings } from './messages.js';
import { randomId } from './outbox.js';
import { makeHub, watchTab, workerLock } from './share.js';

interface ConnectEvent {
  ports: readonly MessagePort[];
}

const scope = globalThis as unknown as { onconnect: ((e: ConnectEvent) => void) | null };
const hubId = randomId();
const abort = new AbortController();
let hub: Promise<Hub> | null = null;

/**
 * The hub, made from the first tab's settings (tabs of one scope share them). The worker
 * first takes a lock that it holds for its whole life: tabs queue for it, and being
 * granted it tells them the worker is gone.
 */
function hubFor(settings: HubSettings): Promise<Hub> {
  hub ??= new Promise<void>((held) => {
    const locks = (globalThis as { navigator?: Navigator }).navigator?.locks;
    if (!locks) return held();
    locks.request(workerLock(settings.scope, hubId), () => {
      held();
      return new Promise<void>(() => {});
    }).catch(() => held());
  }).then(() => makeHub(hubId, settings));
  return hub;
}

scope.onconnect = (e: ConnectEvent) => {
  const port = e.ports[0];
  if (!port) return;
  // Messages of one tab are handled in order, also while the hub is still being made.
  let chain: Promise<unknown> = Promise.resolve();
  port.onmessage = (ev: MessageEvent) => {
    const env = openEnvelope(ev.data);
    if (!env) return;
    const tab = env.from;
    if (env.msg.type === 'discover') {
      const settings = (env.msg as unknown as { settings?: HubSettings }).settings;
      if (!settings || typeof settings.url !== 'string' || typeof settings.scope !== 'string') return;
      chain = chain.then(() =>
        hubFor(settings).then((h) => {
          h.addPeer(tab, (m) => port.postMessage(envelope(hubId, tab, m)));
          watchTab(settings.scope, tab, abort.signal, () => h.removePeer(tab));
        }),
      );
      return;
    }
    const m = parseTabMessage(env.msg as { type: string } & Record<string, unknown>);
    if (!m || !hub) return;
    const current = hub;
    chain = chain.then(() => current.then((h) => h.receive(tab, m)));
  };
  port.start();
};
