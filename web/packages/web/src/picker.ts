//! Which transport each connection attempt uses: round the list on failures to open,
//! passing over a transport found silent until its retry time.

import type { TransportEndpoint, TransportSkip } from './types.js';

/**
 * Picks the transport of each attempt. A transport that fails to open hands the next
 * attempt to the next one, round the list. A transport that opened and then stayed
 * silent is passed over until its retry time; then the first attempt after it tries
 * that transport again (it is earlier in the list, so preferred).
 */
export class TransportPicker {
  readonly #list: readonly TransportEndpoint[];
  readonly #retryMs: number;
  #index = 0;
  /** Transports found silent: index → when they may be tried again. */
  readonly #skipped = new Map<number, number>();
  /** Transports attempted since the last connection came up. */
  readonly #tried = new Set<number>();

  constructor(list: readonly TransportEndpoint[], retryMs: number) {
    this.#list = list;
    this.#retryMs = retryMs;
  }

  /** More than one transport: there is something to fall back to. */
  get canFallBack(): boolean {
    return this.#list.length > 1;
  }

  /**
   * The transport for an attempt starting at `now` (null: WebSocket on the client's
   * url), and whether it is one not yet tried since the last connection.
   */
  next(now: number): { endpoint: TransportEndpoint | null; fresh: boolean } {
    const n = this.#list.length;
    if (n === 0) return { endpoint: null, fresh: false };
    // A silent transport whose time is up is preferred again, the earliest in the list first.
    for (const [i, until] of [...this.#skipped].sort((a, b) => a[0] - b[0])) {
      if (until > now) continue;
      this.#skipped.delete(i);
      if (i < this.#index) this.#index = i;
    }
    // Every transport silent: try them all again rather than none.
    if (this.#skipped.size >= n) this.#skipped.clear();
    for (let k = 0; k < n; k++) {
      const i = (this.#index + k) % n;
      if (this.#skipped.has(i)) continue;
      this.#index = i;
      const fresh = !this.#tried.has(i);
      this.#tried.add(i);
      return { endpoint: this.#list[i]!, fresh };
    }
    return { endpoint: this.#list[this.#index % n]!, fresh: false };
  }

  /** The transport of the latest attempt (null: WebSocket on the client's url). */
  current(): TransportEndpoint | null {
    return this.#list.length ? this.#list[this.#index % this.#list.length]! : null;
  }

  /** What {@link next} would pick at `now`, changing nothing. */
  peek(now: number): { endpoint: TransportEndpoint | null; fresh: boolean } {
    const n = this.#list.length;
    if (n === 0) return { endpoint: null, fresh: false };
    const live = (i: number) => (this.#skipped.get(i) ?? 0) <= now;
    let start = this.#index;
    for (const i of this.#skipped.keys()) if (live(i) && i < start) start = i;
    let pick = start % n;
    if ([...this.#list.keys()].some(live)) {
      for (let k = 0; k < n; k++) {
        const i = (start + k) % n;
        if (live(i)) {
          pick = i;
          break;
        }
      }
    }
    return { endpoint: this.#list[pick]!, fresh: !this.#tried.has(pick) };
  }

  /** The current transport failed to open: the next attempt uses the next one. */
  failed(): void {
    if (this.#list.length > 1) this.#index = (this.#index + 1) % this.#list.length;
  }

  /**
   * The current transport opened and stayed silent at `now`: it is passed over until
   * `now + retryMs` (unless it is the only one). Returns that time, or null.
   */
  silent(now: number): number | null {
    if (this.#list.length < 2) return null;
    const until = now + this.#retryMs;
    this.#skipped.set(this.#index, until);
    this.failed();
    return until;
  }

  /** A connection came up on the current transport: it stays the choice. */
  connected(): void {
    this.#tried.clear();
  }

  /** The transports passed over now, for the status. */
  skips(now: number): TransportSkip[] {
    return [...this.#skipped]
      .filter(([, until]) => until > now)
      .sort((a, b) => a[0] - b[0])
      .map(([i, until]) => ({ transport: this.#list[i]!.transport, endpoint: this.#list[i]!.endpoint, retryAt: until }));
  }

  /** Takes over what another hub found silent (a handover), matched by endpoint. */
  adopt(skips: readonly TransportSkip[], now: number): void {
    for (const s of skips) {
      if (!s || typeof s.endpoint !== 'string' || typeof s.retryAt !== 'number' || s.retryAt <= now) continue;
      const i = this.#list.findIndex((t) => t.endpoint === s.endpoint && t.transport === s.transport);
      // A longer pause than this client's own policy is not taken on trust.
      if (i >= 0 && this.#list.length > 1) this.#skipped.set(i, Math.min(s.retryAt, now + this.#retryMs));
    }
  }
}
