// Socket.IO peer load worker: many socket.io-client connections in one process,
// driven by JSON-line commands on stdin; replies are JSON lines on stdout.
// See README.md for the protocol. Everything that is not a reply goes to stderr.
//
//   node worker.mjs
import { io as connectSocket } from "socket.io-client";
import { SparseHist, clockCorrectionUs, emit, log, monoMs, nowUs, readCommands, sleep } from "./common.mjs";

const MAX_INFLIGHT = 500; // connection attempts (connect + subscribe) in flight
const OPEN_TIMEOUT_MS = 30000; // per connection

// ---------------------------------------------------------------------------
// Global counters (all connections of this process)
// ---------------------------------------------------------------------------
const conns = [];
const lat = new SparseHist();
const replay = new SparseHist();
let received = 0;
let dups = 0;
let late = 0; // subset of dups: first delivery of a seq previously counted in gaps
let gaps = 0;
let lastRxUs = 0;
let reconnects = 0;
let recoveredCount = 0;
let notRecovered = 0;
let unplannedDrops = 0;
let plannedDrops = 0;
let offlineMinMs = Infinity; // drop -> "connect" event, over all reconnections
let offlineMaxMs = 0;
// First few delivery anomalies (gap or duplicate), with enough context to tell
// where they come from; also logged to stderr.
const anomalies = [];
const MAX_ANOMALIES = 50;
// counts per kind and seq, e.g. {"gap:703": 13, "dup:650": 2}; gap keys name
// the missing seqs ("gap:703" or "gap:703-705")
const anomalySummary = new Map();
function anomaly(c, kind, seq, offset) {
  const key = kind === "gap" ? (seq - c.last === 2 ? `gap:${c.last + 1}` : `gap:${c.last + 1}-${seq - 1}`) : `${kind}:${seq}`;
  if (anomalySummary.size < 1000 || anomalySummary.has(key)) anomalySummary.set(key, (anomalySummary.get(key) || 0) + 1);
  if (anomalies.length >= MAX_ANOMALIES) return;
  const a = {
    conn: c.idx,
    kind,
    seq,
    last: c.last,
    // "replay": delivered while reconnecting, before the "connect" event, i.e.
    // one of the missed packets the server sent with the recovered session
    via: c.up ? "live" : "replay",
    ms_since_connect: c.upAt ? Math.round((nowUs() - c.upAt) / 100) / 10 : null,
    reconnects: c.reconnects,
    recovered: c.sock?.recovered ?? null,
    replayed: c.replayFirst ? [c.replayFirst, c.replayLast] : null,
    offset: typeof offset === "string" ? offset : null,
  };
  anomalies.push(a);
  log("anomaly " + JSON.stringify(a));
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------
class Conn {
  constructor(idx, channel) {
    this.idx = idx;
    this.channel = channel;
    this.sock = null;
    this.last = 0; // highest seq seen
    this.missing = null; // Set of seqs skipped over (counted in gaps), if any
    this.dropAt = 0; // wall µs of the most recent drop
    this.reconAt = 0; // wall µs when the reconnection after it started
    this.subscribed = false;
    this.connectedOnce = false;
    this.failed = false;
    this.closed = false;
    this.offline = false; // dropped (planned or not) and not yet reconnected
    this.planned = false; // a planned drop whose "disconnect" has not fired yet
    this.reconnectWhenDown = false;
    this.reconTimer = null;
    this.onPlannedDown = null; // callback for the "dropped" reply
    this.onOpened = null; // callback(ok) for the "opened" reply
    // diagnostics
    this.up = false; // between our "connect" and "disconnect" handlers
    this.upAt = 0;
    this.reconnects = 0;
    this.replayFirst = 0; // seq range delivered before the last "connect"
    this.replayLast = 0;
  }

  start(url, sourceIp) {
    const opts = {
      transports: ["websocket"],
      forceNew: true,
      reconnection: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      timeout: 20000,
      perMessageDeflate: false,
    };
    // engine.io-client passes `localAddress` through to `ws`, which hands it to
    // http.request / net.connect: the TCP socket is bound to this source IP.
    if (sourceIp) opts.localAddress = sourceIp;
    const sock = connectSocket(url, opts);
    this.sock = sock;

    sock.on("pub", (m, offset) => this.onPub(m, offset));
    sock.on("connect", () => this.onConnect());
    sock.on("disconnect", (reason) => this.onDisconnect(reason));
    sock.io.on("reconnect_attempt", () => {
      // automatic reconnection after an unplanned drop
      if (this.offline && this.reconAt < this.dropAt) this.reconAt = nowUs();
    });
  }

  onPub(m, offset) {
    const rx = nowUs();
    const seq = m.seq;
    if (!this.up) {
      if (!this.replayFirst) this.replayFirst = seq;
      this.replayLast = seq;
    }
    if (seq <= this.last) {
      dups++;
      if (this.missing !== null && this.missing.delete(seq)) {
        late++;
        anomaly(this, "late", seq, offset);
      } else {
        anomaly(this, "dup", seq, offset);
      }
      return;
    }
    if (seq > this.last + 1) {
      gaps += seq - this.last - 1;
      if (this.last > 0) {
        anomaly(this, "gap", seq, offset);
        if (seq - this.last <= 1000) {
          if (this.missing === null) this.missing = new Set();
          for (let s = this.last + 1; s < seq; s++) this.missing.add(s);
        }
      }
    }
    this.last = seq;
    received++;
    lastRxUs = rx;
    const l = rx - m.ts;
    lat.add(l);
    if (m.ts >= this.dropAt && m.ts < this.reconAt) replay.add(l);
  }

  onConnect() {
    const sock = this.sock;
    this.up = true;
    this.upAt = nowUs();
    if (this.connectedOnce) {
      reconnects++;
      this.reconnects++;
      this.offline = false;
      if (this.dropAt > 0) {
        const off = (this.upAt - this.dropAt) / 1000;
        if (off < offlineMinMs) offlineMinMs = off;
        if (off > offlineMaxMs) offlineMaxMs = off;
      }
      if (sock.recovered) {
        recoveredCount++;
      } else {
        notRecovered++;
        this.subscribed = false; // rooms were not restored
      }
    }
    this.connectedOnce = true;
    // Re-emit "subscribe" only if the server did not restore the rooms.
    if (!this.subscribed) this.subscribe();
  }

  subscribe() {
    this.sock.emit("subscribe", this.channel, (resp) => {
      if (resp && resp.ok === false) {
        log(`conn ${this.idx}: subscribe refused: ${resp.error}`);
        return;
      }
      this.subscribed = true;
      if (this.onOpened) {
        const cb = this.onOpened;
        this.onOpened = null;
        cb(true);
      }
    });
  }

  onDisconnect(reason) {
    this.up = false;
    this.replayFirst = this.replayLast = 0;
    if (this.closed) return;
    if (this.planned) {
      this.planned = false;
      if (this.onPlannedDown) {
        const cb = this.onPlannedDown;
        this.onPlannedDown = null;
        cb();
      }
      if (this.reconnectWhenDown) {
        this.reconnectWhenDown = false;
        this.reconnect();
      }
      return;
    }
    // Unplanned (server restart, ping timeout, ...): socket.io-client
    // reconnects by itself, except after a server-side disconnect.
    unplannedDrops++;
    this.offline = true;
    this.dropAt = nowUs();
    if (reason === "io server disconnect") {
      this.reconAt = nowUs();
      this.sock.connect();
    }
  }

  /**
   * Abrupt drop, as if the network failed: the TCP connection is closed under
   * the WebSocket (no WebSocket close frame, no Socket.IO DISCONNECT packet),
   * so the server sees "transport close"/"transport error" and keeps the
   * session for recovery. Automatic reconnection is switched off until
   * `offlineMs` later, when we reconnect ourselves.
   * Returns false if the connection is not up (nothing to drop).
   */
  drop(offlineMs, mode, onDown) {
    const sock = this.sock;
    if (!sock || this.closed || this.failed || this.offline || !sock.connected) return false;
    const mgr = sock.io;
    const ws = mgr.engine?.transport?.ws;
    if (!ws) return false;
    this.offline = true;
    this.planned = true;
    this.onPlannedDown = onDown;
    this.dropAt = nowUs();
    plannedDrops++;
    mgr.reconnection(false); // also sets skipReconnect: no automatic attempt
    if (mode === "clean") {
      // control case: a clean Socket.IO disconnect (DISCONNECT packet); the
      // server discards the session, so there is nothing to recover
      sock.disconnect();
    } else if (mode === "rst" && ws._socket && typeof ws._socket.resetAndDestroy === "function") {
      ws._socket.resetAndDestroy(); // TCP RST
    } else {
      ws.terminate(); // destroys the TCP socket: FIN, no close frame
    }
    this.reconTimer = setTimeout(() => {
      this.reconTimer = null;
      if (this.sock.connected) {
        // the "disconnect" has not been processed yet: reconnect right after it
        this.reconnectWhenDown = true;
      } else {
        this.reconnect();
      }
    }, offlineMs);
    return true;
  }

  reconnect() {
    if (this.closed) return;
    this.reconAt = nowUs();
    const mgr = this.sock.io;
    mgr.reconnection(true); // retries with backoff if this attempt fails
    this.sock.connect(); // CONNECT carries pid + last offset -> recovery
  }

  close() {
    this.closed = true;
    if (this.reconTimer) clearTimeout(this.reconTimer);
    this.reconTimer = null;
    if (this.sock) {
      this.sock.io.reconnection(false);
      this.sock.disconnect();
    }
  }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------
function openConns(cmd) {
  const url = String(cmd.url);
  const k = Math.max(0, Math.floor(Number(cmd.conns ?? 1)));
  const sourceIp = cmd.source_ip || undefined;
  const channel = String(cmd.channel ?? "bench");
  const ramp = Number(cmd.ramp ?? 0);
  const t0 = monoMs();
  let started = 0;
  let inflight = 0;
  let ok = 0;
  let failed = 0;
  let timer = null;

  return new Promise((resolve) => {
    const done = () => {
      emit({ ev: "opened", ok, failed, ms: Math.round(monoMs() - t0) });
      resolve();
    };
    if (k === 0) return void done();

    const startOne = () => {
      const c = new Conn(conns.length, channel);
      conns.push(c);
      started++;
      inflight++;
      const to = setTimeout(() => {
        if (!c.onOpened) return;
        c.onOpened = null;
        c.failed = true;
        c.close();
        finishOne(false);
      }, OPEN_TIMEOUT_MS);
      c.onOpened = (success) => {
        clearTimeout(to);
        finishOne(success);
      };
      c.start(url, sourceIp);
    };
    const finishOne = (success) => {
      inflight--;
      if (success) ok++;
      else failed++;
      if (ok + failed === k) done();
      else pump();
    };
    const pump = () => {
      const now = monoMs();
      while (started < k && inflight < MAX_INFLIGHT && (!(ramp > 0) || t0 + (started * 1000) / ramp <= now)) {
        startOne();
      }
      if (started < k && ramp > 0 && inflight < MAX_INFLIGHT && timer === null) {
        const wait = Math.max(1, t0 + (started * 1000) / ramp - monoMs());
        timer = setTimeout(() => {
          timer = null;
          pump();
        }, wait);
      }
    };
    pump();
  });
}

function stats(cmd) {
  let connected = 0;
  let offline = 0;
  let failed = 0;
  for (const c of conns) {
    if (c.failed) failed++;
    else if (c.sock?.connected) connected++;
    if (c.offline) offline++;
  }
  const out = {
    ev: "stats",
    conns: conns.length,
    connected,
    received,
    dups,
    gaps,
  };
  out.late = late;
  if (cmd.expect_last !== undefined) {
    const n = Number(cmd.expect_last);
    let t = 0;
    for (const c of conns) if (!c.failed && c.last < n) t += n - c.last;
    out.tail_missing = t;
  }
  Object.assign(out, {
    lat: lat.toPairs(),
    replay: replay.toPairs(),
    last_rx_us: Math.round(lastRxUs),
    reconnects,
    recovered: recoveredCount,
    not_recovered: notRecovered,
    planned_drops: plannedDrops,
    unplanned_drops: unplannedDrops,
    offline,
    offline_min_ms: Number.isFinite(offlineMinMs) ? Math.round(offlineMinMs) : null,
    offline_max_ms: Math.round(offlineMaxMs),
    failed,
    lat_neg: lat.neg,
    anomalies,
    anomaly_summary: Object.fromEntries(anomalySummary),
  });
  const cpu = process.cpuUsage();
  out.cpu_user_ms = Math.round(cpu.user / 1000);
  out.cpu_sys_ms = Math.round(cpu.system / 1000);
  out.rss_kb = Math.round(process.memoryUsage.rss() / 1024);
  out.clock_corr_us = Math.round(clockCorrectionUs());
  emit(out);
}

async function dropAll(cmd) {
  const offlineMs = Number(cmd.offline_ms ?? 1000);
  const jitterMs = Number(cmd.jitter_ms ?? 0);
  const mode = ["rst", "clean"].includes(cmd.mode) ? cmd.mode : "fin";
  let pending = 0;
  let n = 0;
  let resolveAll;
  const allDown = new Promise((r) => (resolveAll = r));
  const onDown = () => {
    if (--pending === 0) resolveAll();
  };
  for (const c of conns) {
    pending++;
    if (c.drop(offlineMs + Math.random() * jitterMs, mode, onDown)) n++;
    else pending--;
  }
  if (pending > 0) {
    await Promise.race([allDown, sleep(10000)]);
  }
  emit({ ev: "dropped", count: n, not_down: pending });
}

let disrupting = null;
async function disrupt(cmd) {
  if (disrupting) throw new Error("already disrupting");
  const everyMs = Number(cmd.every_ms ?? 15000);
  const offlineMs = Number(cmd.offline_ms ?? 2000);
  const durationMs = Number(cmd.duration_ms ?? 60000);
  const mode = ["rst", "clean"].includes(cmd.mode) ? cmd.mode : "fin";
  const t0 = monoMs();
  const end = t0 + durationMs;
  const timers = new Set();
  let drops = 0;
  let skipped = 0;
  disrupting = { timers };
  emit({ ev: "disrupting" });

  for (const c of conns) {
    if (c.failed) continue;
    const phase = Math.random() * everyMs;
    const schedule = (at) => {
      if (at >= end) return;
      const t = setTimeout(() => {
        timers.delete(t);
        const off = offlineMs * (0.8 + 0.4 * Math.random());
        if (c.drop(off, mode, null)) drops++;
        else skipped++; // still offline from the previous cycle, or closed
        schedule(at + everyMs);
      }, Math.max(0, at - monoMs()));
      timers.add(t);
    };
    schedule(t0 + phase);
  }

  await sleep(Math.max(0, end - monoMs()));
  for (const t of timers) clearTimeout(t);
  timers.clear();
  // let pending reconnections complete (bounded)
  const deadline = monoMs() + 60000;
  while (monoMs() < deadline && conns.some((c) => c.offline && !c.closed)) await sleep(50);
  const stillOffline = conns.filter((c) => c.offline && !c.closed).length;
  disrupting = null;
  emit({ ev: "disrupt_done", drops, skipped, still_offline: stillOffline, ms: Math.round(monoMs() - t0) });
}

function closeAll(reply) {
  if (disrupting) for (const t of disrupting.timers) clearTimeout(t);
  for (const c of conns) c.close();
  if (reply) emit({ ev: "closed" });
  // give the DISCONNECT packets a moment to leave
  setTimeout(() => process.exit(0), 100);
}

readCommands(
  (cmd) => {
    switch (cmd.op) {
      case "open":
        return openConns(cmd);
      case "reset":
        lat.clear();
        replay.clear();
        emit({ ev: "reset" });
        return;
      case "stats":
        return stats(cmd);
      case "drop":
        return dropAll(cmd);
      case "disrupt":
        return disrupt(cmd);
      case "close":
        return closeAll(true);
      default:
        emit({ ev: "error", op: cmd.op, error: "unknown op" });
    }
  },
  () => closeAll(false), // stdin closed: the coordinator is gone
);
process.on("SIGTERM", () => closeAll(false));
