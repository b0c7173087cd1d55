// Shared helpers for the Socket.IO peer programs (server, publisher, worker).
import { performance } from "node:perf_hooks";
import readline from "node:readline";

// ---------------------------------------------------------------------------
// Wall clock in microseconds.
//
// `performance.timeOrigin + performance.now()` has microsecond resolution and
// is anchored to the wall clock (µs-accurately) at process start, but then
// follows the monotonic clock; `Date.now()` follows CLOCK_REALTIME (which the
// Rust side of the benchmark uses too) but only has millisecond resolution.
// So: use the former, and once a second compare it with Date.now(); if it has
// drifted outside the millisecond Date.now() names (NTP slew or step), shift it
// back by the excess. Without drift no correction is ever applied; with drift
// the error stays below ~1 ms. A check is skipped when the thread was
// preempted between the reads.
// ---------------------------------------------------------------------------
let corrUs = 0;
const baseUs = () => (performance.timeOrigin + performance.now()) * 1000;

function checkDrift() {
  const w0 = baseUs();
  const d = Date.now() * 1000;
  const w1 = baseUs();
  if (w1 - w0 > 50) return; // preempted: inconclusive
  const w = w0 + corrUs;
  if (w < d) corrUs += d - w; // we are behind: the wall clock is at least d
  else if (w1 + corrUs > d + 1000) corrUs -= w1 + corrUs - (d + 1000); // ahead of d's millisecond
}
checkDrift();
setInterval(checkDrift, 1000).unref();

/** Current wall-clock time in microseconds (float). */
export function nowUs() {
  return baseUs() + corrUs;
}

/** Correction currently applied to performance.timeOrigin + now(), in µs. */
export function clockCorrectionUs() {
  return corrUs;
}

/** Monotonic milliseconds (float). */
export function monoMs() {
  return performance.now();
}

// ---------------------------------------------------------------------------
// Sparse latency histograms: value rounded to 3 significant digits -> count.
// ---------------------------------------------------------------------------
export function round3(v) {
  if (v < 1000) return v;
  let m = 1;
  while (v >= 1000 * m) m *= 10;
  return Math.round(v / m) * m;
}

export class SparseHist {
  constructor() {
    this.m = new Map();
    this.n = 0;
    this.neg = 0; // negative samples (clock skew), recorded as 0
  }
  add(vUs) {
    let v = Math.round(vUs);
    if (v < 0) {
      this.neg++;
      v = 0;
    }
    const k = round3(v);
    this.m.set(k, (this.m.get(k) || 0) + 1);
    this.n++;
  }
  clear() {
    this.m.clear();
    this.n = 0;
    this.neg = 0;
  }
  /** [[value_us, count], ...] sorted by value */
  toPairs() {
    return [...this.m.entries()].sort((a, b) => a[0] - b[0]);
  }
}

/** Quantile from [[v,n],...] pairs (for human summaries only). */
export function quantile(pairs, q) {
  let total = 0;
  for (const [, n] of pairs) total += n;
  if (total === 0) return null;
  const want = Math.max(1, Math.ceil(q * total));
  let acc = 0;
  for (const [v, n] of pairs) {
    acc += n;
    if (acc >= want) return v;
  }
  return pairs[pairs.length - 1][0];
}

// ---------------------------------------------------------------------------
// JSON-lines protocol on stdin/stdout. Everything else goes to stderr.
// ---------------------------------------------------------------------------
export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

export function log(...args) {
  process.stderr.write(`[${process.argv[1]?.split("/").pop()} ${process.pid}] ` + args.join(" ") + "\n");
}

/** Calls handler(obj) for every JSON line on stdin; onEnd() at EOF. */
export function readCommands(handler, onEnd) {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  rl.on("line", (line) => {
    line = line.trim();
    if (!line) return;
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      emit({ ev: "error", error: `bad json: ${e.message}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(obj))
      .catch((e) => {
        log("command failed:", e?.stack || e);
        emit({ ev: "error", op: obj.op, error: String(e?.message || e) });
      });
  });
  rl.on("close", () => onEnd && onEnd());
}

/** Minimal `--key value` / `--flag` argument parser. */
export function parseArgs(argv, defaults = {}) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
      out[a.slice(2)] = argv[++i];
    } else {
      out[a.slice(2)] = true;
    }
  }
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The redis-streams adapter opens its extra Redis connections (one blocking
 * XREAD poller per stream, one pub/sub client) in the background, without a
 * way to await them. All connections are duplicates of `client`, so they carry
 * the same CLIENT SETNAME: wait until Redis shows both a blocked XREAD and a
 * subscribed connection with that name. Before that, a gateway would miss
 * stream entries (its poller starts at "$").
 */
export async function waitAdapterReady(client, name, timeoutMs = 15000) {
  const deadline = monoMs() + timeoutMs;
  for (;;) {
    const list = await client.sendCommand(["CLIENT", "LIST"]);
    let xread = false;
    let sub = false;
    for (const line of String(list).split("\n")) {
      if (!line.includes(` name=${name} `)) continue;
      if (/ cmd=xread /.test(line)) xread = true;
      if (/ sub=[1-9]/.test(line) || / ssub=[1-9]/.test(line)) sub = true;
    }
    if (xread && sub) return;
    if (monoMs() > deadline) throw new Error(`adapter not ready after ${timeoutMs} ms (xread=${xread} sub=${sub})`);
    await sleep(20);
  }
}
