//! Channel positions that outlive the page, so a reload or a new tab resumes where delivery stopped.

import { asPosition, later } from './cursor.js';
import { POSITIONS, done, transact } from './idb.js';
import type { Position } from './types.js';

/** Where positions are kept. */
export interface PositionStore {
  get(channel: string): Promise<Position | null>;
  /** Saves `pos` unless a later position of the same epoch is stored already. */
  put(channel: string, pos: Position): Promise<void>;
}

/** Positions in IndexedDB, shared by every tab and worker of the origin. */
export class IdbPositions implements PositionStore {
  readonly #db: IDBDatabase;

  constructor(db: IDBDatabase) {
    this.#db = db;
  }

  async get(channel: string): Promise<Position | null> {
    const row = await transact(this.#db, POSITIONS, 'readonly', (s) => done(s.get(channel)));
    return asPosition(row);
  }

  put(channel: string, pos: Position): Promise<void> {
    return transact(this.#db, POSITIONS, 'readwrite', async (s) => {
      const old = asPosition(await done(s.get(channel)));
      // Several writers (one per tab without sharing) must never move a position back.
      if (later(old, pos) !== pos) return;
      await done(s.put({ channel, epoch: pos.epoch, offset: pos.offset, at: Date.now() }));
    });
  }
}

/**
 * Positions in Web Storage: localStorage is the fallback where IndexedDB is unavailable
 * (tabs only; workers have neither); sessionStorage keeps what one tab delivered, across
 * its reloads.
 */
export class WebStoragePositions implements PositionStore {
  readonly #storage: () => Storage;
  readonly #prefix: string;
  readonly #monotonic: boolean;

  /** `monotonic`: never move a position back within an epoch (a store that several hubs write). */
  constructor(storage: () => Storage, prefix: string, monotonic: boolean) {
    this.#storage = storage;
    this.#prefix = prefix;
    this.#monotonic = monotonic;
  }

  async get(channel: string): Promise<Position | null> {
    try {
      return asPosition(JSON.parse(this.#storage().getItem(this.#prefix + channel) ?? 'null'));
    } catch {
      return null;
    }
  }

  async put(channel: string, pos: Position): Promise<void> {
    if (this.#monotonic) {
      const old = await this.get(channel);
      if (later(old, pos) !== pos) return;
    }
    this.#storage().setItem(this.#prefix + channel, JSON.stringify({ epoch: pos.epoch, offset: pos.offset }));
  }
}

/** Whether `storage` works here (it throws in workers, and in some private modes). */
export function storageWorks(storage: () => Storage): boolean {
  try {
    const k = 'herald:probe';
    storage().setItem(k, '1');
    storage().removeItem(k);
    return true;
  } catch {
    return false;
  }
}

/** Positions in memory: the last fallback, where neither IndexedDB nor localStorage works. */
export class MemoryPositions implements PositionStore {
  readonly #map = new Map<string, Position>();

  async get(channel: string): Promise<Position | null> {
    return this.#map.get(channel) ?? null;
  }

  async put(channel: string, pos: Position): Promise<void> {
    const old = this.#map.get(channel) ?? null;
    if (later(old, pos) !== pos) return;
    this.#map.set(channel, { ...pos });
  }
}

/**
 * Batches position writes: at most one write per channel per `delayMs`, the latest
 * position wins (within an epoch, the furthest; a new epoch replaces an old one), and `flush` writes everything pending at once (page hide, close).
 */
export class PositionWriter {
  readonly #pending = new Map<string, Position>();
  #timer: ReturnType<typeof setTimeout> | null = null;

  readonly #store: PositionStore;
  readonly #onError: (e: unknown) => void;
  readonly #delayMs: number;

  constructor(store: PositionStore, onError: (e: unknown) => void, delayMs = 100) {
    this.#store = store;
    this.#onError = onError;
    this.#delayMs = delayMs;
  }

  write(channel: string, pos: Position): void {
    // Tabs at different positions write too: the later one of an epoch is kept.
    this.#pending.set(channel, { ...later(this.#pending.get(channel) ?? null, pos) });
    this.#timer ??= setTimeout(() => this.flush(), this.#delayMs);
  }

  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    for (const [channel, pos] of this.#pending) this.#store.put(channel, pos).catch(this.#onError);
    this.#pending.clear();
  }
}
