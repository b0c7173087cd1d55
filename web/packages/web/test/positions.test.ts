import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WebStoragePositions, MemoryPositions, PositionWriter, storageWorks, type PositionStore } from '../src/positions.js';
import type { Position } from '../src/types.js';

describe('MemoryPositions', () => {
  it('returns null for an unknown channel', async () => {
    expect(await new MemoryPositions().get('x')).toBeNull();
  });

  it('moves forward within an epoch and never back', async () => {
    const s = new MemoryPositions();
    await s.put('ch', { epoch: 'e', offset: 5 });
    expect(await s.get('ch')).toEqual({ epoch: 'e', offset: 5 });
    await s.put('ch', { epoch: 'e', offset: 3 });
    expect(await s.get('ch')).toEqual({ epoch: 'e', offset: 5 });
    await s.put('ch', { epoch: 'e', offset: 5 });
    expect(await s.get('ch')).toEqual({ epoch: 'e', offset: 5 });
    await s.put('ch', { epoch: 'e', offset: 9 });
    expect(await s.get('ch')).toEqual({ epoch: 'e', offset: 9 });
  });

  it('accepts a new epoch even at a lower offset', async () => {
    const s = new MemoryPositions();
    await s.put('ch', { epoch: 'old', offset: 50 });
    await s.put('ch', { epoch: 'new', offset: 1 });
    expect(await s.get('ch')).toEqual({ epoch: 'new', offset: 1 });
  });

  it('keeps channels apart and stores a copy', async () => {
    const s = new MemoryPositions();
    const p = { epoch: 'e', offset: 1 };
    await s.put('a', p);
    await s.put('b', { epoch: 'e', offset: 2 });
    p.offset = 100;
    expect(await s.get('a')).toEqual({ epoch: 'e', offset: 1 });
    expect(await s.get('b')).toEqual({ epoch: 'e', offset: 2 });
  });
});

/** A minimal Web Storage for Node, which has none. */
class FakeStorage {
  readonly data = new Map<string, string>();
  failWrites = false;
  getItem(k: string): string | null {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string): void {
    if (this.failWrites) throw new DOMException('quota exceeded', 'QuotaExceededError');
    this.data.set(k, String(v));
  }
  removeItem(k: string): void {
    this.data.delete(k);
  }
}

describe('WebStoragePositions', () => {
  let storage: FakeStorage;
  beforeEach(() => {
    storage = new FakeStorage();
    vi.stubGlobal('localStorage', storage);
  });
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('round-trips positions under a per-scope key', async () => {
    const a = new WebStoragePositions(() => localStorage, 'herald:scope-a:pos:', true);
    const b = new WebStoragePositions(() => localStorage, 'herald:scope-b:pos:', true);
    await a.put('ch', { epoch: 'e', offset: 3 });
    expect(await a.get('ch')).toEqual({ epoch: 'e', offset: 3 });
    expect(await b.get('ch')).toBeNull();
    expect([...storage.data.keys()]).toEqual(['herald:scope-a:pos:ch']);
  });

  it('never moves a position back within an epoch, accepts a new epoch', async () => {
    const s = new WebStoragePositions(() => localStorage, 'herald:x:pos:', true);
    await s.put('ch', { epoch: 'e', offset: 10 });
    await s.put('ch', { epoch: 'e', offset: 4 });
    expect(await s.get('ch')).toEqual({ epoch: 'e', offset: 10 });
    await s.put('ch', { epoch: 'e2', offset: 1 });
    expect(await s.get('ch')).toEqual({ epoch: 'e2', offset: 1 });
  });

  it('junk in storage reads as no position, and is overwritten', async () => {
    const s = new WebStoragePositions(() => localStorage, 'herald:x:pos:', true);
    storage.data.set('herald:x:pos:ch', '{not json');
    expect(await s.get('ch')).toBeNull();
    storage.data.set('herald:x:pos:ch', JSON.stringify({ epoch: 'e', offset: -3 }));
    expect(await s.get('ch')).toBeNull();
    await s.put('ch', { epoch: 'e', offset: 1 });
    expect(await s.get('ch')).toEqual({ epoch: 'e', offset: 1 });
  });

  it('a failing write rejects (so PositionWriter reports it)', async () => {
    const s = new WebStoragePositions(() => localStorage, 'herald:x:pos:', true);
    storage.failWrites = true;
    await expect(s.put('ch', { epoch: 'e', offset: 1 })).rejects.toThrow(/quota/);
  });

  it('storageWorks tells a working storage from a failing one', () => {
    expect(storageWorks(() => localStorage)).toBe(true);
    expect(storage.data.size).toBe(0); // the probe cleans up
    storage.failWrites = true;
    expect(storageWorks(() => localStorage)).toBe(false);
  });
});

describe('storageWorks without Web Storage', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('is false where there is no localStorage (workers, Node)', () => {
    vi.stubGlobal('localStorage', undefined);
    expect(storageWorks(() => localStorage)).toBe(false);
  });

  it('is false where touching localStorage throws (blocked storage)', () => {
    vi.stubGlobal('localStorage', {
      setItem() {
        throw new DOMException('denied', 'SecurityError');
      },
      removeItem() {},
      getItem: () => null,
    });
    expect(storageWorks(() => localStorage)).toBe(false);
  });
});

describe('PositionWriter', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function recordingStore() {
    const puts: [string, Position][] = [];
    const store: PositionStore = {
      get: async () => null,
      put: async (channel, pos) => void puts.push([channel, { ...pos }]),
    };
    return { store, puts };
  }

  it('batches writes: one put per channel per delay, the latest position wins', async () => {
    const { store, puts } = recordingStore();
    const w = new PositionWriter(store, () => {}, 100);
    w.write('a', { epoch: 'e', offset: 1 });
    w.write('a', { epoch: 'e', offset: 2 });
    w.write('b', { epoch: 'e', offset: 7 });
    w.write('a', { epoch: 'e', offset: 3 });
    expect(puts).toEqual([]);
    await vi.advanceTimersByTimeAsync(99);
    expect(puts).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(puts).toEqual([
      ['a', { epoch: 'e', offset: 3 }],
      ['b', { epoch: 'e', offset: 7 }],
    ]);
    // Nothing more to write: no further puts.
    await vi.advanceTimersByTimeAsync(1000);
    expect(puts).toHaveLength(2);
  });

  it('a behind tab writing an earlier position of the epoch never lowers a pending one; a new epoch replaces it', async () => {
    const { store, puts } = recordingStore();
    const w = new PositionWriter(store, () => {}, 100);
    w.write('a', { epoch: 'e', offset: 10 });
    w.write('a', { epoch: 'e', offset: 3 });
    await vi.advanceTimersByTimeAsync(100);
    expect(puts).toEqual([['a', { epoch: 'e', offset: 10 }]]);
    w.write('a', { epoch: 'e', offset: 12 });
    w.write('a', { epoch: 'f', offset: 1 });
    await vi.advanceTimersByTimeAsync(100);
    expect(puts.at(-1)).toEqual(['a', { epoch: 'f', offset: 1 }]);
  });

  it('the timer does not restart on every write (bounded latency)', async () => {
    const { store, puts } = recordingStore();
    const w = new PositionWriter(store, () => {}, 100);
    for (let i = 1; i <= 10; i++) {
      w.write('a', { epoch: 'e', offset: i });
      await vi.advanceTimersByTimeAsync(30);
    }
    // 300 ms of writes every 30 ms: flushed at 100, 200, 300 (not once at the end).
    expect(puts.length).toBeGreaterThanOrEqual(2);
    expect(puts[0]![1].offset).toBeLessThan(5);
  });

  it('flush writes at once and cancels the pending timer', async () => {
    const { store, puts } = recordingStore();
    const w = new PositionWriter(store, () => {}, 100);
    w.write('a', { epoch: 'e', offset: 4 });
    w.flush();
    expect(puts).toEqual([['a', { epoch: 'e', offset: 4 }]]);
    await vi.advanceTimersByTimeAsync(500);
    expect(puts).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
    w.flush(); // nothing pending
    expect(puts).toHaveLength(1);
  });

  it('copies the position given to write', async () => {
    const { store, puts } = recordingStore();
    const w = new PositionWriter(store, () => {}, 100);
    const p = { epoch: 'e', offset: 1 };
    w.write('a', p);
    p.offset = 99;
    w.flush();
    expect(puts).toEqual([['a', { epoch: 'e', offset: 1 }]]);
  });

  it('reports a failing store instead of throwing', async () => {
    const errors: unknown[] = [];
    const store: PositionStore = { get: async () => null, put: async () => { throw new Error('quota'); } };
    const w = new PositionWriter(store, (e) => errors.push(e), 10);
    w.write('a', { epoch: 'e', offset: 1 });
    await vi.advanceTimersByTimeAsync(10);
    expect(errors).toHaveLength(1);
    expect(String(errors[0])).toContain('quota');
  });

  it('with a MemoryPositions store the stored position never moves back', async () => {
    const s = new MemoryPositions();
    const w = new PositionWriter(s, () => {}, 10);
    w.write('a', { epoch: 'e', offset: 10 });
    w.flush();
    w.write('a', { epoch: 'e', offset: 4 });
    await vi.advanceTimersByTimeAsync(10);
    expect(await s.get('a')).toEqual({ epoch: 'e', offset: 10 });
  });
});
