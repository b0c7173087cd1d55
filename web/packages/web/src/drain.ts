//! Sends the outbox in order: one item at a time, retried with backoff, refused items set aside.

import { Backoff, reconnectPolicy } from './backoff.js';
import type { OutboxRecord, OutboxStore } from './outbox.js';
import type { HeraldError, Position } from './types.js';

/** The result of one publish attempt. */
export type PublishOutcome = { ok: true; position: Position | null } | { ok: false; error: HeraldError };

/** Whether a publish error is worth retrying: server-side temporary errors and anything below 100 (timeouts, a dropped connection). */
export function isTemporary(error: HeraldError): boolean {
  const code = error.code ?? 0;
  return error.temporary || code < 100 || code === 100 || code === 109 || code === 111;
}

/**
 * Drains `store` through `publish` while `canSend()` holds. Single-flight: a `kick` while
 * a drain runs makes it look again when done. `onChange` fires after every change to
 * the store so that counts can be refreshed.
 */
export class Drainer {
  #running = false;
  #again = false;
  #timer: ReturnType<typeof setTimeout> | null = null;
  readonly #backoff = new Backoff(reconnectPolicy({ baseDelayMs: 1000, maxDelayMs: 30_000, minDelayMs: 250 }));
  #closed = false;

  readonly #store: OutboxStore;
  readonly #publish: (item: OutboxRecord) => Promise<PublishOutcome>;
  readonly #canSend: () => boolean;
  readonly #onChange: () => void;
  readonly #onError: (error: HeraldError) => void;
  /** Runs the drain exclusively across tabs where that is possible (Web Locks). */
  readonly #exclusive: <T>(fn: () => Promise<T>) => Promise<T>;

  constructor(
    store: OutboxStore,
    publish: (item: OutboxRecord) => Promise<PublishOutcome>,
    canSend: () => boolean,
    onChange: () => void,
    onError: (error: HeraldError) => void,
    exclusive: <T>(fn: () => Promise<T>) => Promise<T> = (fn) => fn(),
  ) {
    this.#store = store;
    this.#publish = publish;
    this.#canSend = canSend;
    this.#onChange = onChange;
    this.#onError = onError;
    this.#exclusive = exclusive;
  }

  /** Looks for items to send; `now` also cuts short a retry delay (the connection is back). */
  kick(now = false): void {
    if (this.#closed) return;
    if (now && this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer) return;
    this.#running = true;
    this.#exclusive(() => this.#run())
      .catch((e: unknown) => {
        this.#onError({ kind: 'storage', message: `outbox: ${String(e)}`, temporary: true });
        this.#retryLater();
      })
      .finally(() => {
        this.#running = false;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  #retryLater(): void {
    if (this.#closed || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.kick();
    }, this.#backoff.failed(Date.now()));
  }

  #expired(expired: OutboxRecord[]): void {
    for (const r of expired) {
      this.#onError({ kind: 'outbox-failed', message: `outbox item ${r.id}: ${r.error?.message ?? 'expired'}`, channel: r.channel, temporary: false });
    }
    if (expired.length) this.#onChange();
  }

  async #run(): Promise<void> {
    // Items expire while offline too.
    if (!this.#canSend()) return this.#expired((await this.#store.next(Date.now(), false)).expired);
    while (!this.#closed && this.#canSend()) {
      const { next, expired } = await this.#store.next(Date.now());
      this.#expired(expired);
      if (!next) return;
      const result = await this.#publish(next);
      if (result.ok) {
        this.#backoff.reset();
        await this.#store.update(next.id, () => null);
        this.#onChange();
        continue;
      }
      if (isTemporary(result.error)) return this.#retryLater();
      const error = { code: result.error.code ?? 0, message: result.error.message };
      await this.#store.update(next.id, (r) => ({ ...r, state: 'failed', error }));
      this.#onError({ ...result.error, kind: 'outbox-failed', channel: next.channel });
      this.#onChange();
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
