//! The offline outbox: a bounded, durable, FIFO queue of publications with idempotency keys.

import { OUTBOX, done, transact } from './idb.js';
import type { EnqueueResult, HeraldError, OutboxItem, OutboxOptions, OutboxStatus } from './types.js';

/** Outbox bounds with defaults filled in. */
export type OutboxBounds = Required<Omit<OutboxOptions, 'warnOnUnload'>>;

export const DEFAULT_BOUNDS: OutboxBounds = { maxItems: 1000, maxBytes: 5 * 1024 * 1024, maxAgeMs: 24 * 3600 * 1000 };

/** An item as stored: the app's view plus its size and storage sequence. */
export interface OutboxRecord extends OutboxItem {
  /** The send order (IndexedDB's auto-increment key). */
  seq?: number;
  /** The size of the JSON data, counted against `maxBytes`. */
  bytes: number;
}

/** What enqueuing an item into `records` requires: replace coalesced items, or refuse. */
export function planEnqueue(
  records: readonly OutboxRecord[],
  item: OutboxRecord,
  bounds: OutboxBounds,
): { replace: OutboxRecord[]; error: HeraldError | null } {
  const replace = item.coalesceKey === undefined
    ? []
    : records.filter((r) => r.state === 'pending' && r.coalesceKey === item.coalesceKey && r.attempts === 0);
  const kept = records.filter((r) => !replace.includes(r));
  const full = (message: string): HeraldError => ({ kind: 'outbox-full', message, channel: item.channel, temporary: false });
  if (item.bytes > bounds.maxBytes) return { replace: [], error: full(`item of ${item.bytes} bytes exceeds the outbox's ${bounds.maxBytes}`) };
  if (kept.length + 1 > bounds.maxItems) return { replace: [], error: full(`outbox holds its maximum of ${bounds.maxItems} items`) };
  const bytes = kept.reduce((n, r) => n + r.bytes, 0);
  if (bytes + item.bytes > bounds.maxBytes) return { replace: [], error: full(`outbox holds ${bytes} of ${bounds.maxBytes} bytes`) };
  return { replace, error: null };
}

/**
 * The next pending item in send order, and the pending items older than their expiry
 * (which move to `failed`, never silently away).
 */
export function planNext(records: readonly OutboxRecord[], now: number): { next: OutboxRecord | null; expired: OutboxRecord[] } {
  const expired: OutboxRecord[] = [];
  const pending = records.filter((r) => r.state === 'pending').sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
  for (const r of pending) {
    if (r.expiresAt <= now) expired.push(r);
    else return { next: r, expired };
  }
  return { next: null, expired };
}

/** Moves `r` to `failed` for its age, saying whether it may have been applied already. */
function expire(r: OutboxRecord): OutboxRecord {
  r.state = 'failed';
  r.error = {
    code: 0,
    message: r.attempts === 0
      ? 'expired before it could be sent'
      : `expired after ${r.attempts} attempts without a reply; it may have been applied`,
  };
  return r;
}

/** Counts by state. */
export function countOf(records: readonly OutboxRecord[]): OutboxStatus {
  let pending = 0;
  let failed = 0;
  for (const r of records) r.state === 'pending' ? pending++ : failed++;
  return { pending, failed };
}

/** A new record for `data` (or an error when it cannot be stored as JSON). */
export function makeRecord(
  channel: string,
  data: unknown,
  opts: { key?: string; coalesceKey?: string; ttlMs?: number },
  bounds: OutboxBounds,
  now: number,
): OutboxRecord | HeraldError {
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (e) {
    json = undefined;
  }
  if (json === undefined) return { kind: 'publish', message: 'data is not serializable as JSON', channel, temporary: false };
  if (opts.key !== undefined && (typeof opts.key !== 'string' || opts.key === '' || utf8Length(opts.key) > MAX_KEY_BYTES)) {
    return { kind: 'publish', message: `an idempotency key must be 1 to ${MAX_KEY_BYTES} bytes of UTF-8`, channel, temporary: false };
  }
  const id = randomId();
  const ttl = typeof opts.ttlMs === 'number' && opts.ttlMs > 0 ? Math.min(opts.ttlMs, bounds.maxAgeMs) : bounds.maxAgeMs;
  const rec: OutboxRecord = {
    id,
    channel,
    data,
    key: opts.key ?? `ob-${id}`,
    createdAt: now,
    expiresAt: now + ttl,
    attempts: 0,
    state: 'pending',
    bytes: utf8Length(json),
  };
  if (opts.coalesceKey !== undefined) rec.coalesceKey = opts.coalesceKey;
  return rec;
}

/** The node's limit on an idempotency key, in bytes of UTF-8. */
export const MAX_KEY_BYTES = 256;

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** A random id (UUID where available). */
export function randomId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

/** The app's view of a record. */
export function itemOf(r: OutboxRecord): OutboxItem {
  const { seq: _seq, bytes: _bytes, ...item } = r;
  return item;
}

/** Where outbox items are kept. Every method resolves; storage errors reject. */
export interface OutboxStore {
  enqueue(item: OutboxRecord, bounds: OutboxBounds): Promise<EnqueueResult>;
  /**
   * The next item to send, counted as attempted in the same transaction; expired items
   * are moved to `failed` and returned too. `send: false` only expires.
   */
  next(now: number, send?: boolean): Promise<{ next: OutboxRecord | null; expired: OutboxRecord[] }>;
  update(id: string, change: (r: OutboxRecord) => OutboxRecord | null): Promise<boolean>;
  all(): Promise<OutboxRecord[]>;
}

/** The outbox in IndexedDB, shared by every tab and worker of the origin. */
export class IdbOutbox implements OutboxStore {
  readonly #db: IDBDatabase;

  constructor(db: IDBDatabase) {
    this.#db = db;
  }

  enqueue(item: OutboxRecord, bounds: OutboxBounds): Promise<EnqueueResult> {
    return transact(this.#db, OUTBOX, 'readwrite', async (s) => {
      const records = (await done(s.getAll())) as OutboxRecord[];
      const plan = planEnqueue(records, item, bounds);
      if (plan.error) return { ok: false as const, error: plan.error };
      for (const r of plan.replace) await done(s.delete(r.seq as number));
      await done(s.add(item));
      return { ok: true as const, item: itemOf(item) };
    });
  }

  next(now: number, send = true): Promise<{ next: OutboxRecord | null; expired: OutboxRecord[] }> {
    return transact(this.#db, OUTBOX, 'readwrite', async (s) => {
      const plan = planNext((await done(s.getAll())) as OutboxRecord[], now);
      for (const r of plan.expired) await done(s.put(expire(r)));
      if (plan.next && send) {
        plan.next.attempts++;
        await done(s.put(plan.next));
      }
      return send ? plan : { next: null, expired: plan.expired };
    });
  }

  update(id: string, change: (r: OutboxRecord) => OutboxRecord | null): Promise<boolean> {
    return transact(this.#db, OUTBOX, 'readwrite', async (s) => {
      const records = (await done(s.getAll())) as OutboxRecord[];
      const r = records.find((x) => x.id === id);
      if (!r) return false;
      const next = change({ ...r });
      if (next === null) await done(s.delete(r.seq as number));
      else await done(s.put(next));
      return true;
    });
  }

  async all(): Promise<OutboxRecord[]> {
    return (await transact(this.#db, OUTBOX, 'readonly', (s) => done(s.getAll()))) as OutboxRecord[];
  }
}

/** The outbox in memory: the fallback where IndexedDB is unavailable (not durable, one tab). */
export class MemoryOutbox implements OutboxStore {
  #records: OutboxRecord[] = [];
  #seq = 0;

  async enqueue(item: OutboxRecord, bounds: OutboxBounds): Promise<EnqueueResult> {
    const plan = planEnqueue(this.#records, item, bounds);
    if (plan.error) return { ok: false, error: plan.error };
    this.#records = this.#records.filter((r) => !plan.replace.includes(r));
    this.#records.push({ ...item, seq: ++this.#seq });
    return { ok: true, item: itemOf(item) };
  }

  async next(now: number, send = true): Promise<{ next: OutboxRecord | null; expired: OutboxRecord[] }> {
    const plan = planNext(this.#records, now);
    for (const r of plan.expired) expire(r);
    if (plan.next && send) plan.next.attempts++;
    return { next: plan.next && send ? { ...plan.next } : null, expired: plan.expired.map((r) => ({ ...r })) };
  }

  async update(id: string, change: (r: OutboxRecord) => OutboxRecord | null): Promise<boolean> {
    const i = this.#records.findIndex((r) => r.id === id);
    const r = this.#records[i];
    if (!r) return false;
    const next = change({ ...r });
    if (next === null) this.#records.splice(i, 1);
    else this.#records[i] = next;
    return true;
  }

  async all(): Promise<OutboxRecord[]> {
    return this.#records.map((r) => ({ ...r }));
  }
}
