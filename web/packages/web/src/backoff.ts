//! The reconnect policy: exponential backoff with full jitter, a hard floor and a reset after stability.

import type { ReconnectOptions } from './types.js';

/** Reconnect options with every default filled in. */
export type ReconnectPolicy = Required<ReconnectOptions>;

/** Herald's defaults: 1 s, 2 s, 4 s … capped at 30 s, never less than 250 ms apart. */
export const DEFAULT_RECONNECT: ReconnectPolicy = {
  baseDelayMs: 1000,
  maxDelayMs: 30_000,
  minDelayMs: 250,
  stableAfterMs: 10_000,
  wakeAfterMs: 60_000,
};

/** Fills in defaults and clamps nonsense (a zero or negative floor, a cap below the base). */
export function reconnectPolicy(options: ReconnectOptions = {}): ReconnectPolicy {
  const p = { ...DEFAULT_RECONNECT, ...options };
  const minDelayMs = Math.max(50, finite(p.minDelayMs, DEFAULT_RECONNECT.minDelayMs));
  const baseDelayMs = Math.max(minDelayMs, finite(p.baseDelayMs, DEFAULT_RECONNECT.baseDelayMs));
  const maxDelayMs = Math.max(baseDelayMs, finite(p.maxDelayMs, DEFAULT_RECONNECT.maxDelayMs));
  return {
    minDelayMs,
    baseDelayMs,
    maxDelayMs,
    stableAfterMs: Math.max(0, finite(p.stableAfterMs, DEFAULT_RECONNECT.stableAfterMs)),
    wakeAfterMs: Math.max(0, finite(p.wakeAfterMs, DEFAULT_RECONNECT.wakeAfterMs)),
  };
}

function finite(v: number, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

/**
 * Counts failed attempts and picks the delay before the next one. Failures only add up:
 * a connection that drops before it was stable for `stableAfterMs` does not reset the
 * count, so a node that accepts and then drops every connection is retried ever more slowly.
 */
export class Backoff {
  /** Failed attempts since the last stable connection. */
  attempt = 0;
  #connectedAt: number | null = null;

  readonly #policy: ReconnectPolicy;
  readonly #random: () => number;

  constructor(policy: ReconnectPolicy, random: () => number = Math.random) {
    this.#policy = policy;
    this.#random = random;
  }

  /** A connection was established at `now`. */
  connected(now: number): void {
    this.#connectedAt = now;
  }

  /** Called when a connection ends or an attempt fails; returns the delay before the next attempt. */
  failed(now: number): number {
    if (this.#connectedAt !== null && now - this.#connectedAt >= this.#policy.stableAfterMs) this.attempt = 0;
    this.#connectedAt = null;
    const ceiling = Math.min(this.#policy.maxDelayMs, this.#policy.baseDelayMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(this.#policy.minDelayMs, Math.floor(this.#random() * ceiling));
  }

  /** Forget all failures (the app asked to connect). */
  reset(): void {
    this.attempt = 0;
    this.#connectedAt = null;
  }
}
