//! Where a reader stands in a channel's stream, and what to do with the next publication.

import type { Position, Publication } from './types.js';

/** What a reader does with a publication. */
export type Step =
  /** The next one: hand it over and advance. */
  | 'deliver'
  /** Already delivered (or older): drop it. */
  | 'duplicate'
  /** Publications are missing before it: fill the gap first. */
  | 'gap'
  /** From another epoch: the stream was reset under the reader. */
  | 'epoch';

/**
 * Classifies publication `offset` of `epoch` for a reader at `pos`. A reader without a
 * position takes whatever comes first. Publications without an offset (channels
 * without history) are always delivered: there is nothing to order them by.
 */
export function classify(pos: Position | null, epoch: string | undefined, offset: number | undefined): Step {
  if (offset === undefined || epoch === undefined || pos === null) return 'deliver';
  if (epoch !== pos.epoch) return 'epoch';
  if (offset <= pos.offset) return 'duplicate';
  return offset === pos.offset + 1 ? 'deliver' : 'gap';
}

/**
 * The later of two positions of one epoch, or `b` when the epochs differ (or there is no
 * `a`): what a store keeps, so that a position never moves back within an epoch.
 */
export function later(a: Position | null, b: Position): Position {
  if (a === null || a.epoch !== b.epoch) return b;
  return a.offset >= b.offset ? a : b;
}

/** A parsed, checked position, or null for anything else. */
export function asPosition(v: unknown): Position | null {
  if (typeof v !== 'object' || v === null) return null;
  const { epoch, offset } = v as Record<string, unknown>;
  if (typeof epoch !== 'string' || typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return null;
  return { epoch, offset };
}

/**
 * The most recent publications of one channel (one epoch), kept so that a reader who is a
 * little behind (a tab that reloaded, a tab that joined during a handover) is filled
 * without asking the server.
 */
export class Recent {
  #pubs: Publication[] = [];
  #epoch: string | null = null;

  readonly #capacity: number;

  constructor(capacity = 256) {
    this.#capacity = capacity;
  }

  /** Remembers a publication that has an offset; a new epoch forgets the old one's. */
  push(pub: Publication): void {
    if (pub.offset === undefined || pub.epoch === undefined) return;
    if (pub.epoch !== this.#epoch) {
      this.#pubs = [];
      this.#epoch = pub.epoch;
    }
    const last = this.#pubs[this.#pubs.length - 1];
    if (last && last.offset !== undefined && pub.offset <= last.offset) {
      if (this.#pubs.some((p) => p.offset === pub.offset)) return;
      this.#pubs.push(pub);
      this.#pubs.sort((a, b) => (a.offset ?? 0) - (b.offset ?? 0));
    } else {
      this.#pubs.push(pub);
    }
    if (this.#pubs.length > this.#capacity) this.#pubs.splice(0, this.#pubs.length - this.#capacity);
  }

  /**
   * The publications after `from` up to and including offset `to`, when every one of
   * them is here; null when any is missing.
   */
  range(from: Position, to: number): Publication[] | null {
    if (to <= from.offset) return [];
    if (from.epoch !== this.#epoch) return null;
    const out = this.#pubs.filter((p) => (p.offset ?? 0) > from.offset && (p.offset ?? 0) <= to);
    if (out.length !== to - from.offset) return null;
    return out;
  }

  clear(): void {
    this.#pubs = [];
    this.#epoch = null;
  }
}
