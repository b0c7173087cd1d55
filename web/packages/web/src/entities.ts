//! Entity events: Herald's convention for "an entity was created, updated or deleted", and how to merge them into app state.

/** What happened to the entity. */
export type EntityAction = 'created' | 'updated' | 'deleted';

/** An entity event, the data of a publication in an `entities:` channel. */
export interface EntityEvent<P = unknown> {
  entity_type: string;
  entity_id: string;
  action: EntityAction;
  /** The user who made the change. */
  actor: string;
  /** The entity's version after the change; later changes have higher versions. */
  version: number;
  /** When the change was made, in ms since the Unix epoch. */
  timestamp: number;
  /** The entity's state after the change (absent or null for `deleted`). */
  payload?: P | null;
}

/**
 * Who may read a channel: `public` channels are open to every user the namespace
 * admits; `restricted` ones (`$`-prefixed) need a subscription token, which the app's
 * backend gives only to users who may see restricted entities. Such users subscribe to
 * the restricted audience alone: it carries every event.
 */
export type Audience = 'public' | 'restricted';

/** Which entities: all of them, one type, or one entity. */
export interface EntityScope {
  type?: string;
  id?: string;
}

const TYPE = /^[a-z0-9_-]{1,64}$/;
const ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * The channel of a scope: `entities:all`, `entities:<type>` or `entities:<type>.<id>`,
 * prefixed with `$` for the restricted audience. Null for a malformed type or id.
 */
export function entityChannel(scope: EntityScope, audience: Audience = 'public'): string | null {
  let name: string;
  if (scope.type === undefined) name = 'all';
  // `all` is the all-types scope's name, so no type may be called that.
  else if (!TYPE.test(scope.type) || scope.type === 'all') return null;
  else if (scope.id === undefined) name = scope.type;
  else if (!ID.test(scope.id)) return null;
  else name = `${scope.type}.${scope.id}`;
  return `${audience === 'restricted' ? '$' : ''}entities:${name}`;
}

/** The data of a publication as an entity event, or null when it is not a well-formed one. */
export function asEntityEvent<P = unknown>(data: unknown): EntityEvent<P> | null {
  if (typeof data !== 'object' || data === null) return null;
  const e = data as Record<string, unknown>;
  if (typeof e.entity_type !== 'string' || !TYPE.test(e.entity_type) || e.entity_type === 'all') return null;
  if (typeof e.entity_id !== 'string' || !ID.test(e.entity_id)) return null;
  if (e.action !== 'created' && e.action !== 'updated' && e.action !== 'deleted') return null;
  if (typeof e.version !== 'number' || !Number.isSafeInteger(e.version) || e.version < 0) return null;
  if (typeof e.timestamp !== 'number' || !Number.isFinite(e.timestamp)) return null;
  if (e.actor !== undefined && typeof e.actor !== 'string') return null;
  return { ...(e as unknown as EntityEvent<P>), actor: (e.actor as string | undefined) ?? '' };
}

/** An entity as apps keep it: an id and a version at least. */
export interface Versioned {
  id: string | number;
  version: number;
}

/**
 * Merges an event into a list: a newer `created`/`updated` replaces the entity (or adds
 * it, at the front, or where `compare` sorts it), a `deleted` removes it; an event not
 * newer than what the list holds changes nothing (the same list is returned, so React
 * renders nothing again).
 */
export function applyEntityEvent<T extends Versioned>(
  list: readonly T[],
  event: EntityEvent<T>,
  compare?: (a: T, b: T) => number,
): readonly T[] {
  const i = list.findIndex((x) => String(x.id) === event.entity_id);
  const current = i >= 0 ? list[i] : undefined;
  if (current && current.version >= event.version) return list;
  if (event.action === 'deleted') {
    if (!current) return list;
    return [...list.slice(0, i), ...list.slice(i + 1)];
  }
  const next = event.payload;
  if (!next || typeof next !== 'object') return list;
  const entity = { ...next, version: event.version } as T;
  let out: T[];
  if (current) out = [...list.slice(0, i), entity, ...list.slice(i + 1)];
  else out = [entity, ...list];
  return compare && !current ? out.sort(compare) : out;
}
