import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Drainer, isTemporary, type PublishOutcome } from '../src/drain.js';
import { DEFAULT_BOUNDS, MemoryOutbox, makeRecord, type OutboxRecord } from '../src/outbox.js';
import type { HeraldError } from '../src/types.js';

const ok: PublishOutcome = { ok: true, position: null };
const fail = (code: number, temporary = false): PublishOutcome => ({
  ok: false,
  error: { kind: 'publish', code, message: `error ${code}`, temporary },
});

/** Lets every pending promise continuation run (fake timers do not block microtasks). */
const settle = () => vi.advanceTimersByTimeAsync(0);

interface Harness {
  store: MemoryOutbox;
  sent: string[];
  errors: HeraldError[];
  changes: number;
  canSend: boolean;
  drainer: Drainer;
  add(data: string, ttlMs?: number): Promise<OutboxRecord>;
}

function harness(publish: (item: OutboxRecord) => Promise<PublishOutcome> | PublishOutcome): Harness {
  const store = new MemoryOutbox();
  const h: Harness = {
    store,
    sent: [],
    errors: [],
    changes: 0,
    canSend: true,
    drainer: undefined as unknown as Drainer,
    async add(data, ttlMs) {
      const r = makeRecord('ch', data, ttlMs === undefined ? {} : { ttlMs }, DEFAULT_BOUNDS, Date.now());
      if ('kind' in r) throw new Error(r.message);
      const res = await store.enqueue(r, DEFAULT_BOUNDS);
      if (!res.ok) throw new Error(res.error.message);
      return r;
    },
  };
  h.drainer = new Drainer(
    store,
    async (item) => {
      h.sent.push(item.data as string);
      return publish(item);
    },
    () => h.canSend,
    () => void h.changes++,
    (e) => void h.errors.push(e),
  );
  return h;
}

const dataOf = async (h: Harness) => (await h.store.all()).map((r) => r.data);

describe('isTemporary', () => {
  const e = (code: number | undefined, temporary = false): HeraldError => ({
    kind: 'publish',
    message: 'x',
    temporary,
    ...(code === undefined ? {} : { code }),
  });
  it.each([
    [undefined, false, true], // no code: a local failure (not connected)
    [0, false, true], // not connected
    [1, false, true], // SDK timeout and other client-side codes
    [99, false, true],
    [100, false, true], // internal server error
    [101, false, false], // unauthorized
    [102, false, false], // unknown channel
    [103, false, false], // permission denied
    [107, false, false], // bad request
    [108, false, false], // not available
    [109, false, true], // token expired
    [111, false, true], // too many requests
    [112, false, false],
    [103, true, true], // the server's own temporary flag wins
    [3013, false, false],
  ])('code %s (temporary flag %s) → %s', (code, flag, want) => {
    expect(isTemporary(e(code, flag))).toBe(want);
  });
});

describe('Drainer', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_700_000_000_000);
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  it('sends in FIFO order and removes what was sent', async () => {
    const h = harness(() => ok);
    await h.add('a');
    await h.add('b');
    await h.add('c');
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a', 'b', 'c']);
    expect(await h.store.all()).toEqual([]);
    expect(h.changes).toBeGreaterThanOrEqual(3);
    expect(h.errors).toEqual([]);
  });

  it('passes the record (with its idempotency key) to publish', async () => {
    const seen: OutboxRecord[] = [];
    const h = harness((item) => {
      seen.push(item);
      return ok;
    });
    const r = await h.add('a');
    h.drainer.kick();
    await settle();
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ id: r.id, key: r.key, channel: 'ch', data: 'a' });
  });

  it('a permanent error (103) moves the item to failed and goes on with the next', async () => {
    const h = harness((item) => (item.data === 'b' ? fail(103) : ok));
    await h.add('a');
    await h.add('b');
    await h.add('c');
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a', 'b', 'c']);
    const left = await h.store.all();
    expect(left).toHaveLength(1);
    expect(left[0]).toMatchObject({ data: 'b', state: 'failed', attempts: 1, error: { code: 103, message: 'error 103' } });
    expect(h.errors).toHaveLength(1);
    expect(h.errors[0]).toMatchObject({ kind: 'outbox-failed', code: 103, channel: 'ch', temporary: false });
    // A failed item is never sent again by itself.
    h.drainer.kick();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.sent).toEqual(['a', 'b', 'c']);
  });

  it.each([
    ['rate limited (111)', fail(111)],
    ['not connected (0)', fail(0, true)],
    ['a timeout (code 1)', fail(1)],
    ['internal (100)', fail(100)],
  ])('a temporary error, %s, stops the drain and retries the same item later', async (_name, error) => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5); // first backoff delay: 0.5 × 1000 ms
    let calls = 0;
    const h = harness(() => (++calls === 1 ? error : ok));
    await h.add('a');
    await h.add('b');
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a']); // b waits behind a: order is kept
    const pending = await h.store.all();
    expect(pending.map((r) => [r.data, r.state, r.attempts])).toEqual([
      ['a', 'pending', 1],
      ['b', 'pending', 0],
    ]);
    expect(h.errors).toEqual([]);
    await vi.advanceTimersByTimeAsync(499);
    expect(h.sent).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(h.sent).toEqual(['a', 'a', 'b']);
    expect(await h.store.all()).toEqual([]);
  });

  it('retries back off: the delays grow while the error persists', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.999);
    const times: number[] = [];
    const h = harness(() => {
      times.push(Date.now());
      return fail(111);
    });
    await h.add('a');
    h.drainer.kick();
    await settle();
    await vi.advanceTimersByTimeAsync(20_000);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.slice(0, 4)).toEqual([999, 1998, 3996, 7992]);
    h.drainer.close();
  });

  it('a kick while the retry timer is pending does not send early', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    let calls = 0;
    const h = harness(() => (++calls === 1 ? fail(111) : ok));
    await h.add('a');
    h.drainer.kick();
    await settle();
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(500);
    expect(h.sent).toEqual(['a', 'a']);
  });

  it('is single-flight: kicks while a publish is in flight never send concurrently or twice', async () => {
    const resolvers: ((o: PublishOutcome) => void)[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const h = harness(() => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      return new Promise<PublishOutcome>((resolve) =>
        resolvers.push((o) => {
          inFlight--;
          resolve(o);
        }),
      );
    });
    await h.add('a');
    await h.add('b');
    h.drainer.kick();
    await settle();
    h.drainer.kick();
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a']);
    expect(resolvers).toHaveLength(1);
    await h.add('c');
    h.drainer.kick();
    resolvers.shift()!(ok);
    await settle();
    expect(h.sent).toEqual(['a', 'b']);
    resolvers.shift()!(ok);
    await settle();
    resolvers.shift()!(ok);
    await settle();
    expect(h.sent).toEqual(['a', 'b', 'c']);
    expect(maxInFlight).toBe(1);
    expect(await h.store.all()).toEqual([]);
  });

  it('a kick that lands just as a drain finds nothing makes it look again', async () => {
    const h = harness(() => ok);
    await h.add('a');
    // The moment the drain sees an empty queue, an item is added and kicked: the drain is
    // still running, so that kick can only be honoured by looking again afterwards.
    const next = h.store.next.bind(h.store);
    let raced = false;
    h.store.next = async (now) => {
      const res = await next(now);
      if (!res.next && !raced) {
        raced = true;
        await h.add('b');
        h.drainer.kick();
      }
      return res;
    };
    h.drainer.kick();
    await settle();
    expect(raced).toBe(true);
    expect(h.sent).toEqual(['a', 'b']);
    expect(await h.store.all()).toEqual([]);
  });

  it('a kick after the drain ran dry picks up a new item', async () => {
    const h = harness(() => ok);
    await h.add('a');
    h.drainer.kick();
    await settle();
    await h.add('b');
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a', 'b']);
  });

  it('sends nothing while canSend() is false, and everything once kicked when it holds', async () => {
    const h = harness(() => ok);
    h.canSend = false;
    await h.add('a');
    await h.add('b');
    h.drainer.kick();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.sent).toEqual([]);
    expect(await dataOf(h)).toEqual(['a', 'b']);
    expect((await h.store.all()).every((r) => r.attempts === 0)).toBe(true);
    h.canSend = true;
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a', 'b']);
  });

  it('stops as soon as canSend() turns false', async () => {
    let h!: Harness;
    h = harness(() => {
      h.canSend = false; // the connection dropped during the first publish
      return ok;
    });
    await h.add('a');
    await h.add('b');
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a']);
    expect(await dataOf(h)).toEqual(['b']);
  });

  it('reports expired items as outbox-failed and never sends them', async () => {
    const h = harness(() => ok);
    await h.add('old', 1000);
    await h.add('fresh');
    vi.setSystemTime(Date.now() + 5000);
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['fresh']);
    expect(h.errors).toHaveLength(1);
    expect(h.errors[0]).toMatchObject({ kind: 'outbox-failed', channel: 'ch', temporary: false });
    const left = await h.store.all();
    expect(left.map((r) => [r.data, r.state])).toEqual([['old', 'failed']]);
  });

  it('close cancels a pending retry and ignores later kicks', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const h = harness(() => fail(111));
    await h.add('a');
    h.drainer.kick();
    await settle();
    expect(h.sent).toEqual(['a']);
    h.drainer.close();
    h.drainer.kick();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.sent).toEqual(['a']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a publish function that throws is reported, not thrown', async () => {
    const h = harness(() => {
      throw new Error('bug in publish');
    });
    await h.add('a');
    expect(() => h.drainer.kick()).not.toThrow();
    await settle();
    expect(h.errors).toHaveLength(1);
    expect(h.errors[0]!.message).toContain('bug in publish');
    // The item is kept, never silently lost.
    expect(await dataOf(h)).toEqual(['a']);
  });

  it('runs the drain through `exclusive`', async () => {
    const store = new MemoryOutbox();
    const r = makeRecord('ch', 'x', {}, DEFAULT_BOUNDS, Date.now()) as OutboxRecord;
    await store.enqueue(r, DEFAULT_BOUNDS);
    const order: string[] = [];
    const d = new Drainer(
      store,
      async () => {
        order.push('publish');
        return ok;
      },
      () => true,
      () => {},
      () => {},
      async (fn) => {
        order.push('lock');
        const v = await fn();
        order.push('unlock');
        return v;
      },
    );
    d.kick();
    await settle();
    expect(order).toEqual(['lock', 'publish', 'unlock']);
  });
});
