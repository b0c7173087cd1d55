import { describe, expect, it } from 'vitest';
import {
  DEFAULT_BOUNDS,
  MemoryOutbox,
  countOf,
  itemOf,
  makeRecord,
  planEnqueue,
  planNext,
  randomId,
  type OutboxBounds,
  type OutboxRecord,
} from '../src/outbox.js';
import type { HeraldError } from '../src/types.js';

const NOW = 1_700_000_000_000;
const bounds = (b: Partial<OutboxBounds> = {}): OutboxBounds => ({ ...DEFAULT_BOUNDS, ...b });

let n = 0;
function rec(over: Partial<OutboxRecord> = {}): OutboxRecord {
  n++;
  return {
    id: `id-${n}`,
    channel: 'ch',
    data: { n },
    key: `key-${n}`,
    createdAt: NOW,
    expiresAt: NOW + 60_000,
    attempts: 0,
    state: 'pending',
    bytes: 10,
    seq: n,
    ...over,
  };
}

function isError(r: OutboxRecord | HeraldError): r is HeraldError {
  return 'kind' in r;
}

function made(channel: string, data: unknown, opts: Parameters<typeof makeRecord>[2] = {}, b = bounds(), now = NOW): OutboxRecord {
  const r = makeRecord(channel, data, opts, b, now);
  if (isError(r)) throw new Error(`unexpected error ${r.message}`);
  return r;
}

describe('planEnqueue', () => {
  it('accepts an item within bounds', () => {
    expect(planEnqueue([rec(), rec()], rec(), bounds({ maxItems: 3, maxBytes: 30 }))).toEqual({ replace: [], error: null });
  });

  it('refuses an item beyond maxItems (pending and failed both count)', () => {
    const records = [rec(), rec({ state: 'failed' })];
    const plan = planEnqueue(records, rec({ channel: 'x' }), bounds({ maxItems: 2 }));
    expect(plan.replace).toEqual([]);
    expect(plan.error).toMatchObject({ kind: 'outbox-full', channel: 'x', temporary: false });
    expect(plan.error!.message).toContain('2 items');
  });

  it('refuses an item that would exceed maxBytes, accepts one that fits exactly', () => {
    const records = [rec({ bytes: 60 }), rec({ bytes: 30 })];
    expect(planEnqueue(records, rec({ bytes: 10 }), bounds({ maxBytes: 100 })).error).toBeNull();
    const plan = planEnqueue(records, rec({ bytes: 11 }), bounds({ maxBytes: 100 }));
    expect(plan.error).toMatchObject({ kind: 'outbox-full', temporary: false });
    expect(plan.error!.message).toContain('90 of 100');
  });

  it('refuses a single item larger than maxBytes, even into an empty outbox', () => {
    const plan = planEnqueue([], rec({ bytes: 101 }), bounds({ maxBytes: 100 }));
    expect(plan.error).toMatchObject({ kind: 'outbox-full' });
    expect(plan.error!.message).toContain('101 bytes');
  });

  it('refuses an oversized item even when it could coalesce (nothing is replaced)', () => {
    const old = rec({ coalesceKey: 'k' });
    const plan = planEnqueue([old], rec({ coalesceKey: 'k', bytes: 500 }), bounds({ maxBytes: 100 }));
    expect(plan.error).not.toBeNull();
    expect(plan.replace).toEqual([]);
  });

  it('coalescing replaces unsent pending items with the same key only', () => {
    const a = rec({ coalesceKey: 'cursor' });
    const b = rec({ coalesceKey: 'cursor', attempts: 1 }); // sent once: the server may have it
    const c = rec({ coalesceKey: 'cursor', state: 'failed' });
    const d = rec({ coalesceKey: 'other' });
    const e = rec();
    const f = rec({ coalesceKey: 'cursor' });
    const plan = planEnqueue([a, b, c, d, e, f], rec({ coalesceKey: 'cursor' }), bounds());
    expect(plan.error).toBeNull();
    expect(plan.replace).toEqual([a, f]);
  });

  it('an item without a coalesce key replaces nothing, even items without one', () => {
    const plan = planEnqueue([rec(), rec()], rec(), bounds());
    expect(plan.replace).toEqual([]);
  });

  it('replaced items free their room for the new one (count and bytes)', () => {
    const a = rec({ coalesceKey: 'k', bytes: 90 });
    const full = bounds({ maxItems: 1, maxBytes: 100 });
    const plan = planEnqueue([a], rec({ coalesceKey: 'k', bytes: 100 }), full);
    expect(plan.error).toBeNull();
    expect(plan.replace).toEqual([a]);
    // Without the coalesce key the same item is refused.
    expect(planEnqueue([a], rec({ bytes: 100 }), full).error).not.toBeNull();
  });
});

describe('planNext', () => {
  it('picks the pending item with the lowest seq, whatever the array order', () => {
    const r3 = rec({ seq: 3 });
    const r1 = rec({ seq: 1 });
    const r2 = rec({ seq: 2 });
    expect(planNext([r3, r1, r2], NOW)).toEqual({ next: r1, expired: [] });
  });

  it('skips failed items', () => {
    const f = rec({ seq: 1, state: 'failed' });
    const p = rec({ seq: 2 });
    expect(planNext([f, p], NOW).next).toBe(p);
  });

  it('expired items ahead of the next one are returned as expired', () => {
    const e1 = rec({ seq: 1, expiresAt: NOW - 1 });
    const e2 = rec({ seq: 2, expiresAt: NOW }); // exactly at expiry counts as expired
    const ok = rec({ seq: 3, expiresAt: NOW + 1 });
    const later = rec({ seq: 4, expiresAt: NOW - 5 }); // behind `next`: looked at on a later call
    const plan = planNext([later, ok, e2, e1], NOW);
    expect(plan.next).toBe(ok);
    expect(plan.expired).toEqual([e1, e2]);
  });

  it('nothing pending: no next', () => {
    expect(planNext([], NOW)).toEqual({ next: null, expired: [] });
    const e = rec({ expiresAt: NOW - 1 });
    expect(planNext([e, rec({ state: 'failed' })], NOW)).toEqual({ next: null, expired: [e] });
  });

  it('does not mutate its input', () => {
    const e = rec({ seq: 1, expiresAt: NOW - 1 });
    const records = [rec({ seq: 2 }), e];
    planNext(records, NOW);
    expect(records[1]).toBe(e);
    expect(e.state).toBe('pending');
  });
});

describe('countOf / itemOf / randomId', () => {
  it('counts by state', () => {
    expect(countOf([])).toEqual({ pending: 0, failed: 0 });
    expect(countOf([rec(), rec({ state: 'failed' }), rec()])).toEqual({ pending: 2, failed: 1 });
  });

  it('itemOf drops seq and bytes only', () => {
    const r = rec({ coalesceKey: 'c' });
    const item = itemOf(r);
    expect(item).not.toHaveProperty('seq');
    expect(item).not.toHaveProperty('bytes');
    expect(item).toMatchObject({ id: r.id, key: r.key, coalesceKey: 'c', channel: 'ch', state: 'pending' });
  });

  it('randomId is unique', () => {
    const ids = new Set(Array.from({ length: 100 }, randomId));
    expect(ids.size).toBe(100);
  });
});

describe('makeRecord', () => {
  it('measures the JSON data in UTF-8 bytes', () => {
    expect(made('ch', 'abc').bytes).toBe(5); // "abc"
    expect(made('ch', { a: 1 }).bytes).toBe(7); // {"a":1}
    expect(made('ch', 'é').bytes).toBe(4); // "é" is 2 bytes
    expect(made('ch', '😀').bytes).toBe(6);
    expect(made('ch', null).bytes).toBe(4);
  });

  it('fills in a fresh pending record', () => {
    const r = made('room', { x: 1 }, {}, bounds({ maxAgeMs: 1000 }), NOW);
    expect(r).toMatchObject({
      channel: 'room',
      data: { x: 1 },
      createdAt: NOW,
      expiresAt: NOW + 1000,
      attempts: 0,
      state: 'pending',
    });
    expect(r.id).toBeTruthy();
    expect(r).not.toHaveProperty('coalesceKey');
    expect(r).not.toHaveProperty('seq');
  });

  it('the key defaults to one derived from the id, unique per record', () => {
    const a = made('ch', 1);
    const b = made('ch', 1);
    expect(a.key).toBe(`ob-${a.id}`);
    expect(a.key).not.toBe(b.key);
  });

  it('keeps a given key, refuses an empty or overlong one (256 bytes of UTF-8 at most)', () => {
    expect(made('ch', 1, { key: 'my-key' }).key).toBe('my-key');
    expect(made('ch', 1).key).toMatch(/^ob-/);
    expect(made('ch', 1, { key: 'k'.repeat(256) }).key).toBe('k'.repeat(256));
    expect(made('ch', 1, { key: 'é'.repeat(128) }).key).toBe('é'.repeat(128));
    for (const key of ['', 'k'.repeat(257), 'é'.repeat(129)]) {
      const r = makeRecord('ch', 1, { key }, bounds(), NOW);
      expect(isError(r), `key of ${key.length} chars`).toBe(true);
    }
  });

  it('keeps the coalesce key', () => {
    expect(made('ch', 1, { coalesceKey: 'c' }).coalesceKey).toBe('c');
    expect(made('ch', 1, { coalesceKey: '' }).coalesceKey).toBe('');
  });

  it('clamps the ttl to maxAgeMs, and ignores nonsense', () => {
    const b = bounds({ maxAgeMs: 10_000 });
    expect(made('ch', 1, { ttlMs: 500 }, b).expiresAt).toBe(NOW + 500);
    expect(made('ch', 1, { ttlMs: 50_000 }, b).expiresAt).toBe(NOW + 10_000);
    expect(made('ch', 1, { ttlMs: 0 }, b).expiresAt).toBe(NOW + 10_000);
    expect(made('ch', 1, { ttlMs: -5 }, b).expiresAt).toBe(NOW + 10_000);
    expect(made('ch', 1, { ttlMs: Number.NaN }, b).expiresAt).toBe(NOW + 10_000);
  });

  it.each([
    ['undefined', undefined],
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
    ['a bigint', 10n],
    ['a cycle', (() => { const o: Record<string, unknown> = {}; o.self = o; return o; })()],
  ])('data that is not JSON (%s) is an error, never a record', (_name, data) => {
    const r = makeRecord('ch', data, {}, bounds(), NOW);
    expect(isError(r)).toBe(true);
    expect(r).toMatchObject({ kind: 'publish', channel: 'ch', temporary: false });
  });
});

describe('MemoryOutbox', () => {
  it('enqueues in order and hands out the oldest first', async () => {
    const o = new MemoryOutbox();
    const a = made('ch', 'a');
    const b = made('ch', 'b');
    const ra = await o.enqueue(a, bounds());
    expect(ra).toEqual({ ok: true, item: itemOf(a) });
    await o.enqueue(b, bounds());
    const all = await o.all();
    expect(all.map((r) => r.data)).toEqual(['a', 'b']);
    expect(all[0]!.seq).toBeLessThan(all[1]!.seq!);
    expect((await o.next(NOW)).next?.id).toBe(a.id);
  });

  it('refuses beyond its bounds and keeps what it had', async () => {
    const o = new MemoryOutbox();
    const b = bounds({ maxItems: 2 });
    await o.enqueue(made('ch', 1), b);
    await o.enqueue(made('ch', 2), b);
    const r = await o.enqueue(made('ch', 3), b);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.kind).toBe('outbox-full');
    expect((await o.all()).map((x) => x.data)).toEqual([1, 2]);
  });

  it('coalesces: the newer item replaces the unsent older one and goes to the back', async () => {
    const o = new MemoryOutbox();
    await o.enqueue(made('ch', 'pos1', { coalesceKey: 'cursor' }), bounds());
    await o.enqueue(made('ch', 'chat'), bounds());
    await o.enqueue(made('ch', 'pos2', { coalesceKey: 'cursor' }), bounds());
    expect((await o.all()).map((x) => x.data)).toEqual(['chat', 'pos2']);
  });

  it('does not coalesce an item already attempted', async () => {
    const o = new MemoryOutbox();
    const first = made('ch', 'pos1', { coalesceKey: 'cursor' });
    await o.enqueue(first, bounds());
    await o.update(first.id, (r) => ({ ...r, attempts: 1 }));
    await o.enqueue(made('ch', 'pos2', { coalesceKey: 'cursor' }), bounds());
    expect((await o.all()).map((x) => x.data)).toEqual(['pos1', 'pos2']);
  });

  it('next moves expired items to failed with an error', async () => {
    const o = new MemoryOutbox();
    const old = made('ch', 'old', { ttlMs: 10 }, bounds(), NOW);
    const fresh = made('ch', 'fresh', {}, bounds(), NOW);
    await o.enqueue(old, bounds());
    await o.enqueue(fresh, bounds());
    const { next, expired } = await o.next(NOW + 10);
    expect(next?.id).toBe(fresh.id);
    expect(expired.map((r) => r.id)).toEqual([old.id]);
    const stored = (await o.all()).find((r) => r.id === old.id)!;
    expect(stored.state).toBe('failed');
    expect(stored.error).toEqual({ code: 0, message: 'expired before it could be sent' });
    expect(countOf(await o.all())).toEqual({ pending: 1, failed: 1 });
    // Not reported twice.
    expect((await o.next(NOW + 10)).expired).toEqual([]);
  });

  it('next counts the attempt in the store and returns a copy', async () => {
    const o = new MemoryOutbox();
    await o.enqueue(made('ch', 1), bounds());
    const { next } = await o.next(NOW);
    expect(next!.attempts).toBe(1);
    expect((await o.all())[0]!.attempts).toBe(1);
    next!.attempts = 99;
    expect((await o.all())[0]!.attempts).toBe(1);
    // Expiring only (the hub offline) neither sends nor counts.
    expect((await o.next(NOW, false)).next).toBeNull();
    expect((await o.all())[0]!.attempts).toBe(1);
  });

  it('an item that expires after attempts says it may have been applied', async () => {
    const o = new MemoryOutbox();
    await o.enqueue(made('ch', 1, { ttlMs: 1000 }), bounds());
    await o.next(NOW);
    const { expired } = await o.next(NOW + 5000, false);
    expect(expired).toHaveLength(1);
    expect(expired[0]!.error!.message).toMatch(/may have been applied/);
    expect((await o.all())[0]!.state).toBe('failed');
  });

  it('update changes or deletes one record, and reports unknown ids', async () => {
    const o = new MemoryOutbox();
    const a = made('ch', 'a');
    const b = made('ch', 'b');
    await o.enqueue(a, bounds());
    await o.enqueue(b, bounds());
    expect(await o.update(a.id, (r) => ({ ...r, state: 'failed' }))).toBe(true);
    expect((await o.all()).find((r) => r.id === a.id)!.state).toBe('failed');
    expect(await o.update(a.id, () => null)).toBe(true);
    expect((await o.all()).map((r) => r.id)).toEqual([b.id]);
    expect(await o.update('nope', () => null)).toBe(false);
  });

  it('a retried failed item keeps its place by seq', async () => {
    const o = new MemoryOutbox();
    const a = made('ch', 'a');
    const b = made('ch', 'b');
    await o.enqueue(a, bounds());
    await o.enqueue(b, bounds());
    await o.update(a.id, (r) => ({ ...r, state: 'failed' }));
    expect((await o.next(NOW)).next?.id).toBe(b.id);
    await o.update(a.id, (r) => ({ ...r, state: 'pending' }));
    expect((await o.next(NOW)).next?.id).toBe(a.id);
  });

  it('all returns copies', async () => {
    const o = new MemoryOutbox();
    await o.enqueue(made('ch', 1), bounds());
    (await o.all())[0]!.state = 'failed';
    expect((await o.all())[0]!.state).toBe('pending');
  });
});
