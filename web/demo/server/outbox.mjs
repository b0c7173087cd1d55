// The outbox publisher: sends unsent outbox rows to Herald's `publish_entity`, strictly
// in `seq` order, one at a time. A row is marked sent only when Herald accepted the
// event on every channel; on any error it stays and is retried with backoff (100 ms,
// doubling, at most 5 s), with the same idempotency key, so a retry after a lost reply
// publishes nothing twice.

const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5000;
/** The safety sweep: a wake-up now and then even if no commit asked for one. */
const SWEEP_MS = 5000;
const REQUEST_TIMEOUT_MS = 5000;

/** Why a `publish_entity` reply is not a success, or null when it is one. */
function replyProblem(status, text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return `HTTP ${status}: not JSON`;
  }
  if (body && body.error) return `HTTP ${status}: error ${body.error.code} ${body.error.message}`;
  if (status !== 200) return `HTTP ${status}`;
  const responses = body?.result?.responses;
  if (!Array.isArray(responses) || responses.length === 0) return 'reply has no responses';
  const failed = responses.find((r) => !r || r.error || !r.result);
  if (failed) {
    const e = failed?.error;
    return `channel ${failed?.channel}: ${e ? `error ${e.code} ${e.message}` : 'no result'}`;
  }
  return null;
}

export class OutboxPublisher {
  /**
   * @param {import('./store.mjs').Store} store
   * @param {{heraldApi: string, apiKey: string, log: (line: string) => void, verbose: boolean}} opts
   */
  constructor(store, { heraldApi, apiKey, log, verbose }) {
    this.store = store;
    this.url = `${heraldApi}/api/publish_entity`;
    this.apiKey = apiKey;
    this.log = log;
    this.verbose = verbose;
    this.backoff = 0; // 0 while healthy; else the delay before the next try
    this.failing = null; // the first error of the current run of failures
    this.running = null; // the drain loop's promise while it runs
    this.again = false; // a wake-up came while the loop ran
    this.retryTimer = null;
    this.sweepTimer = null;
    this.stopped = false;
    this.inflight = null; // AbortController of the request in flight
  }

  start() {
    this.sweepTimer = setInterval(() => this.wake(), SWEEP_MS);
    this.sweepTimer.unref();
    this.wake();
  }

  /** Sends what is pending now, unless a retry is already scheduled (backoff holds). */
  wake() {
    if (this.stopped || this.retryTimer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((e) => {
        // A database error, say: log it and try again later rather than crash.
        this.log(`outbox: ${e?.message ?? e}`);
        if (!this.stopped && !this.retryTimer) {
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.wake();
          }, MAX_BACKOFF_MS);
        }
      })
      .finally(() => {
        this.running = null;
      });
  }

  async drain() {
    do {
      this.again = false;
      for (;;) {
        if (this.stopped) return;
        const row = this.store.nextUnsent();
        if (!row) break;
        const problem = await this.send(row);
        if (this.stopped) return;
        if (problem === null) {
          this.store.markSent(row.seq);
          if (this.failing) this.log(`outbox: publishing again after ${this.failing}`);
          this.failing = null;
          this.backoff = 0;
          continue;
        }
        this.store.markFailed(row.seq, problem);
        this.backoff = this.backoff === 0 ? FIRST_BACKOFF_MS : Math.min(this.backoff * 2, MAX_BACKOFF_MS);
        if (!this.failing) {
          this.failing = problem;
          this.log(`outbox: cannot publish #${row.seq} (${problem}); retrying with backoff`);
        } else if (this.verbose) {
          this.log(`outbox: #${row.seq} still failing (${problem}); next try in ${this.backoff} ms`);
        }
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.wake();
        }, this.backoff);
        return;
      }
    } while (this.again);
  }

  /** One `publish_entity` call; resolves to null on success, else what went wrong. */
  async send(row) {
    const body = `{"event":${row.event},"audiences":${JSON.stringify(row.audiences)},"idempotency_key":${JSON.stringify(
      `demo-outbox-${this.store.instance}-${row.seq}`,
    )}}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('timed out')), REQUEST_TIMEOUT_MS);
    this.inflight = controller;
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-API-Key': this.apiKey },
        body,
        signal: controller.signal,
      });
      return replyProblem(res.status, await res.text());
    } catch (e) {
      const cause = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(e);
      return `request failed: ${cause}`;
    } finally {
      clearTimeout(timer);
      this.inflight = null;
    }
  }

  /** Stops sending: aborts a request in flight (its row stays unsent) and waits. */
  async stop() {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.inflight?.abort(new Error('shutting down'));
    await this.running;
  }
}
