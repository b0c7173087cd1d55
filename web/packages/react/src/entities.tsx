//! Entity events in React: subscribe to a scope, keep a list or one entity live, warn about conflicting edits.

import { useCallback, useEffect, useRef, useState } from 'react';
import {
  applyEntityEvent,
  asEntityEvent,
  entityChannel,
  type Audience,
  type EntityEvent,
  type Publication,
  type ResyncEvent,
  type SubscribedEvent,
  type Versioned,
} from '@herald/web';
import { useHerald, useSubscription } from './context.js';

/** A scope of entity events: one entity, one type, or all. */
export interface EntityEventsScope {
  type?: string;
  id?: string;
  /** `restricted` for users the backend gives restricted tokens (see @herald/web's `Audience`). */
  audience?: Audience;
}

/**
 * Calls `onEvent` with each entity event of the scope: one entity (`type` and `id`), a
 * type (`type`), or everything (neither). Publications that are not entity events are
 * reported as `error` events of the client, never thrown.
 */
export function useEntityEvents<P = unknown>(
  scope: EntityEventsScope,
  onEvent: (event: EntityEvent<P>) => void,
  options: { enabled?: boolean; onResync?: (event: ResyncEvent) => void; onSubscribed?: (event: SubscribedEvent) => void } = {},
): void {
  const channel = entityChannel(scope, scope.audience);
  useSubscription(channel, (p: Publication) => {
    const event = asEntityEvent<P>(p.data);
    if (event) onEvent(event);
  }, options);
}

/**
 * How long a list or entity waits for its subscription to be live before loading anyway
 * (offline, the node down): it loads again once the subscription is live.
 */
const LOAD_WAIT_MS = 1500;

/**
 * Loads once the scope's subscription is live, so that no change can fall between the
 * load and the stream of events (a change after the subscription went live arrives as an
 * event; one before it is in the load). Loads after {@link LOAD_WAIT_MS} if the
 * subscription is slow, and again when it is live.
 */
function useLoadWhenLive(reload: () => void, enabled: boolean, key: unknown[]): { onSubscribed: () => void } {
  const live = useRef(false);
  useEffect(() => {
    if (!enabled) return;
    live.current = false;
    const t = setTimeout(() => {
      if (!live.current) reload();
    }, LOAD_WAIT_MS);
    return () => clearTimeout(t);
  }, [reload, enabled, ...key]);
  const onSubscribed = useCallback(() => {
    if (live.current) return;
    live.current = true;
    reload();
  }, [reload]);
  return { onSubscribed };
}

/** What {@link useLiveList} keeps. */
export interface LiveList<T> {
  items: readonly T[];
  loading: boolean;
  error: unknown;
  /** Loads again from the app's API (also done by itself after a `resync`). */
  reload: () => void;
  /** Ids changed by events in the last `highlightMs`, to mark new and updated rows. */
  highlighted: ReadonlySet<string>;
}

/**
 * A list loaded from the app's API and kept live by the type's entity events: created
 * entities appear, updated ones change in place, deleted ones go. Events that arrive
 * while the list loads are applied after it, by version, so nothing is lost and nothing
 * flashes back. When history cannot fill a gap, the list loads again.
 */
export function useLiveList<T extends Versioned>(options: {
  type: string;
  audience?: Audience;
  load: () => Promise<T[]>;
  compare?: (a: T, b: T) => number;
  highlightMs?: number;
  enabled?: boolean;
}): LiveList<T> {
  const { type, audience, highlightMs = 3000, enabled = true } = options;
  const latest = useRef(options);
  latest.current = options;
  const [items, setItems] = useState<readonly T[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [highlighted, setHighlighted] = useState<ReadonlySet<string>>(new Set());
  const pending = useRef<EntityEvent<T>[] | null>([]);
  const generation = useRef(0);
  const timers = useRef(new Set<ReturnType<typeof setTimeout>>());

  const mark = useCallback((id: string) => {
    setHighlighted((h) => new Set(h).add(id));
    const t = setTimeout(() => {
      timers.current.delete(t);
      setHighlighted((h) => {
        const next = new Set(h);
        next.delete(id);
        return next;
      });
    }, highlightMs);
    timers.current.add(t);
  }, [highlightMs]);

  const reload = useCallback(() => {
    const gen = ++generation.current;
    pending.current = [];
    setLoading(true);
    latest.current.load().then(
      (loaded) => {
        if (gen !== generation.current) return;
        let list: readonly T[] = latest.current.compare ? [...loaded].sort(latest.current.compare) : loaded;
        for (const e of pending.current ?? []) list = applyEntityEvent(list, e, latest.current.compare);
        pending.current = null;
        setItems(list);
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (gen !== generation.current) return;
        pending.current = null;
        setError(e);
        setLoading(false);
      },
    );
  }, []);

  const { onSubscribed } = useLoadWhenLive(reload, enabled, [type, audience]);

  useEffect(() => () => {
    for (const t of timers.current) clearTimeout(t);
  }, []);

  useEntityEvents<T>({ type, audience }, (event) => {
    if (event.entity_type !== type) return;
    if (pending.current) return void pending.current.push(event);
    setItems((list) => {
      const next = applyEntityEvent(list, event, latest.current.compare);
      return next;
    });
    if (event.action !== 'deleted') mark(event.entity_id);
  }, { enabled, onResync: () => reload(), onSubscribed });

  return { items, loading, error, reload, highlighted };
}

/** What {@link useLiveEntity} keeps. */
export interface LiveEntity<T> {
  entity: T | null;
  loading: boolean;
  error: unknown;
  reload: () => void;
  /** The entity was deleted (by an event, or the load found nothing). */
  deleted: boolean;
  /** The last event applied. */
  lastEvent: EntityEvent<T> | null;
}

/**
 * One entity loaded from the app's API and kept live by its events. `onDeleted` is
 * called when it is deleted (to show a notice and redirect); `onEvent` with every newer
 * event (to show "updated by …").
 */
export function useLiveEntity<T extends Versioned>(options: {
  type: string;
  id: string;
  audience?: Audience;
  load: () => Promise<T | null>;
  onDeleted?: (event: EntityEvent<T>) => void;
  onEvent?: (event: EntityEvent<T>) => void;
  /** Apply updates to `entity` at once (true); false keeps the loaded state until `reload()` (for a detail page that offers "Refresh"). */
  live?: boolean;
}): LiveEntity<T> {
  const { type, id, audience } = options;
  const latest = useRef(options);
  latest.current = options;
  const [entity, setEntity] = useState<T | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [deleted, setDeleted] = useState(false);
  const [lastEvent, setLastEvent] = useState<EntityEvent<T> | null>(null);
  const version = useRef(-1);
  const deletedAt = useRef<number | null>(null);
  const generation = useRef(0);

  const reload = useCallback(() => {
    const gen = ++generation.current;
    setLoading(true);
    latest.current.load().then(
      (e) => {
        if (gen !== generation.current) return;
        setError(null);
        setLoading(false);
        // An event newer than what the load read wins; so does a delete seen meanwhile.
        if (deletedAt.current !== null && (e === null || e.version <= deletedAt.current)) return setDeleted(true);
        if (e !== null && e.version < version.current) return;
        version.current = Math.max(version.current, e?.version ?? -1);
        setEntity(e);
        setDeleted(e === null);
      },
      (e: unknown) => {
        if (gen !== generation.current) return;
        setError(e);
        setLoading(false);
      },
    );
  }, []);

  useEffect(() => {
    version.current = -1;
    deletedAt.current = null;
  }, [type, id]);
  const { onSubscribed } = useLoadWhenLive(reload, true, [type, id]);

  useEntityEvents<T>({ type, id, audience }, (event) => {
    if (event.entity_id !== id || event.version <= version.current) return;
    version.current = event.version;
    setLastEvent(event);
    latest.current.onEvent?.(event);
    if (event.action === 'deleted') {
      deletedAt.current = event.version;
      setDeleted(true);
      latest.current.onDeleted?.(event);
      return;
    }
    if ((latest.current.live ?? true) && event.payload) setEntity({ ...event.payload, version: event.version } as T);
  }, { onResync: () => reload(), onSubscribed });

  return { entity, loading, error, reload, deleted, lastEvent };
}

/** A save by someone else of the entity being edited. */
export interface EditConflict<T = unknown> {
  event: EntityEvent<T>;
  /** Forget this conflict (the user chose to keep editing). */
  dismiss: () => void;
}

/**
 * Warns when someone other than `me` saves (or deletes) the entity being edited, at a
 * version after the one the form was loaded with. Null while there is no conflict.
 */
export function useEditConflict<T = unknown>(
  entity: { type: string; id: string; version: number; audience?: Audience } | null,
  me: string,
): EditConflict<T> | null {
  const [event, setEvent] = useState<EntityEvent<T> | null>(null);
  const base = entity?.version ?? 0;
  useEffect(() => setEvent(null), [entity?.type, entity?.id, base]);
  useEntityEvents<T>(
    { type: entity?.type, id: entity?.id, audience: entity?.audience },
    (e) => {
      if (!entity || e.entity_id !== entity.id || e.version <= base || e.actor === me) return;
      setEvent((old) => (old && old.version >= e.version ? old : e));
    },
    { enabled: entity !== null },
  );
  const dismiss = useCallback(() => setEvent(null), []);
  return event ? { event, dismiss } : null;
}
