//! The Herald client in React's context, and the hooks that read the shared connection.

import { createContext, useContext, useEffect, useRef, useSyncExternalStore, type ReactNode } from 'react';
import type { Herald, JoinLeaveEvent, OutboxStatus, Publication, ResyncEvent, Status, SubscribedEvent } from '@herald/web';

const HeraldContext = createContext<Herald | null>(null);

/** Makes `client` available to the hooks below it. The app creates the client, once. */
export function HeraldProvider({ client, children }: { client: Herald; children?: ReactNode }) {
  return <HeraldContext.Provider value={client}>{children}</HeraldContext.Provider>;
}

/** The client of the nearest `HeraldProvider`. */
export function useHerald(): Herald {
  const herald = useContext(HeraldContext);
  if (!herald) throw new Error('useHerald: no <HeraldProvider client={…}> above this component');
  return herald;
}

/** The connection status, re-rendering on every change; the same in every tab. */
export function useConnectionStatus(): Status {
  const herald = useHerald();
  return useSyncExternalStore(herald.status.subscribe, herald.status.getSnapshot, herald.status.getSnapshot);
}

/** Options of {@link useSubscription}. */
export interface UseSubscriptionOptions {
  /** Subscribe only while true (true). */
  enabled?: boolean;
  onResync?: (event: ResyncEvent) => void;
  onSubscribed?: (event: SubscribedEvent) => void;
  onJoinLeave?: (event: JoinLeaveEvent) => void;
}

/**
 * Calls `onPublication` with each publication of `channel` while the component is
 * mounted. The latest callback is always the one called, so passing a new function on
 * every render does not subscribe again. Subscriptions are counted across components and
 * tabs: StrictMode's double mount and many components on one channel make one server
 * subscription, and nothing ever throws "already subscribed".
 */
export function useSubscription<T = unknown>(
  channel: string | null | undefined,
  onPublication: (publication: Publication<T>) => void,
  options: UseSubscriptionOptions = {},
): void {
  const herald = useHerald();
  const latest = useRef({ onPublication, options });
  latest.current = { onPublication, options };
  const enabled = options.enabled ?? true;
  useEffect(() => {
    if (!enabled || !channel) return;
    return herald.subscribe<T>(channel, (p) => latest.current.onPublication(p as Publication<T>), {
      onResync: (e) => latest.current.options.onResync?.(e),
      onSubscribed: (e) => latest.current.options.onSubscribed?.(e),
      onJoinLeave: (e) => latest.current.options.onJoinLeave?.(e),
    });
  }, [herald, channel, enabled]);
}

/** The outbox's counts (re-rendering when they change) and the outbox itself. */
export function useOutbox(): OutboxStatus & { outbox: Herald['outbox'] } {
  const herald = useHerald();
  const counts = useSyncExternalStore(herald.outbox.status.subscribe, herald.outbox.status.getSnapshot, herald.outbox.status.getSnapshot);
  return { ...counts, outbox: herald.outbox };
}
