//! Optional glue to where apps already keep state: TanStack Query caches and Redux stores.

import { applyEntityEvent, asEntityEvent, entityChannel, type Audience, type EntityEvent, type Herald, type Versioned } from '@herald/web';

/** The part of TanStack Query's QueryClient these adapters use (no dependency on it). */
export interface QueryClientLike {
  setQueryData(queryKey: readonly unknown[], updater: (old: unknown) => unknown): unknown;
  invalidateQueries(filters: { queryKey: readonly unknown[] }): unknown;
}

/**
 * Keeps TanStack Query caches of one entity type live: the list under `listKey` is
 * patched in place, each entity under `entityKey(id)` is replaced (or removed when
 * deleted); a `resync` invalidates both, so they are fetched again. Returns a function
 * that stops it.
 */
export function syncQueryClient<T extends Versioned>(
  herald: Herald,
  queryClient: QueryClientLike,
  options: {
    type: string;
    audience?: Audience;
    listKey: readonly unknown[];
    entityKey?: (id: string) => readonly unknown[];
    /** What a resync invalidates of the entity caches (the first element of `entityKey`'s keys). */
    entityKeyPrefix?: readonly unknown[];
  },
): () => void {
  const channel = entityChannel({ type: options.type }, options.audience);
  if (!channel) return () => {};
  return herald.subscribe(channel, (p) => {
    const event = asEntityEvent<T>(p.data);
    if (!event) return;
    // A list not loaded yet (or being loaded) cannot be patched: have it fetched once more.
    let stale = false;
    queryClient.setQueryData(options.listKey, (old) => {
      if (Array.isArray(old)) return applyEntityEvent(old as T[], event);
      stale = true;
      return old;
    });
    if (stale) queryClient.invalidateQueries({ queryKey: options.listKey });
    if (options.entityKey) {
      queryClient.setQueryData(options.entityKey(event.entity_id), (old) => {
        if (event.action === 'deleted') return null;
        const current = old as T | null | undefined;
        if (current && current.version >= event.version) return current;
        return event.payload ? { ...event.payload, version: event.version } : old;
      });
    }
  }, {
    onResync: () => {
      queryClient.invalidateQueries({ queryKey: options.listKey });
      if (options.entityKey) queryClient.invalidateQueries({ queryKey: options.entityKeyPrefix ?? [options.entityKey('')[0]] });
    },
  });
}

/** The action the Redux adapter dispatches for each entity event. */
export interface EntityEventAction<T = unknown> {
  type: 'herald/entityEvent';
  payload: EntityEvent<T>;
}

/** The action the Redux adapter dispatches when a scope must be loaded again. */
export interface EntityResyncAction {
  type: 'herald/entityResync';
  payload: { channel: string };
}

/**
 * A Redux-style middleware that dispatches `herald/entityEvent` for every event of the
 * given scopes and `herald/entityResync` when one must be reloaded. Subscribes when the
 * store is created; the returned `stop` ends the subscriptions.
 */
export function entityEventsMiddleware(
  herald: Herald,
  scopes: { type?: string; id?: string; audience?: Audience }[],
): { middleware: (api: { dispatch: (action: EntityEventAction | EntityResyncAction) => unknown }) => (next: (a: unknown) => unknown) => (a: unknown) => unknown; stop: () => void } {
  const stops: (() => void)[] = [];
  const middleware = (api: { dispatch: (action: EntityEventAction | EntityResyncAction) => unknown }) => {
    for (const scope of scopes) {
      const channel = entityChannel(scope, scope.audience);
      if (!channel) continue;
      stops.push(herald.subscribe(channel, (p) => {
        const event = asEntityEvent(p.data);
        if (event) api.dispatch({ type: 'herald/entityEvent', payload: event });
      }, { onResync: () => void api.dispatch({ type: 'herald/entityResync', payload: { channel } }) }));
    }
    return (next: (a: unknown) => unknown) => (action: unknown) => next(action);
  };
  return { middleware, stop: () => stops.splice(0).forEach((s) => s()) };
}
