// Socket.IO peer publisher: a listener-less Socket.IO server with the
// redis-streams adapter; io.to(channel).emit("pub", payload) XADDs the
// broadcast to the Redis stream, from which every gateway delivers it.
//
//   node publisher.mjs --redis redis://127.0.0.1:PORT [--max-len 100000]
//
// stdin/stdout JSON lines:
//   <- {"ev":"ready"}
//   -> {"op":"publish","channel":"bench","rate":R,"count":C,"first_seq":S,"pad":P}
//   <- {"ev":"published","count":C,"ms":elapsed,"late_max_ms":x}
//   -> {"op":"exit"}
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { clockCorrectionUs, emit, log, monoMs, nowUs, parseArgs, readCommands, waitAdapterReady } from "./common.mjs";

const args = parseArgs(process.argv.slice(2), {
  redis: "redis://127.0.0.1:6379",
  "max-len": "100000",
});
const clientName = `herald-peer-pub-${process.pid}`;

const redisClient = createClient({ url: args.redis, name: clientName });
let redisErrors = 0;
redisClient.on("error", (err) => {
  if (redisErrors++ % 100 === 0) log(`redis error (#${redisErrors}): ${err.message}`);
});
await redisClient.connect();

// Not attached to any HTTP server: it only publishes.
const io = new Server({
  adapter: createAdapter(redisClient, { maxLen: Number(args["max-len"]) }),
});
await waitAdapterReady(redisClient, clientName);

const padCache = new Map();
function padOf(n) {
  let s = padCache.get(n);
  if (s === undefined) {
    s = "x".repeat(n);
    padCache.set(n, s);
  }
  return s;
}

let busy = Promise.resolve();

function publish(cmd) {
  const channel = String(cmd.channel ?? "bench");
  const rate = Number(cmd.rate ?? 0);
  const count = Math.max(0, Math.floor(Number(cmd.count ?? 0)));
  const firstSeq = Math.floor(Number(cmd.first_seq ?? 1));
  const pad = Math.floor(Number(cmd.pad ?? 64));
  const target = io.to(channel);

  // JSON of {"seq":N,"ts":T,"p":""} is 21 bytes + digits; ts has 16 digits.
  const send = (i) => {
    const seq = firstSeq + i;
    const fill = pad - (21 + 16 + String(seq).length);
    const ts = Math.round(nowUs());
    target.emit("pub", { seq, ts, p: fill > 0 ? padOf(fill) : "" });
  };

  return new Promise((resolve) => {
    const t0 = monoMs();
    let i = 0;
    let lateMax = 0;
    const finish = async () => {
      // Every XADD was queued on redisClient before this PING: when the PING
      // answers, all messages are in the stream.
      try {
        await redisClient.ping();
      } catch (e) {
        log("ping after publish failed:", e.message);
      }
      emit({
        ev: "published",
        count,
        ms: Math.round((monoMs() - t0) * 1000) / 1000,
        late_max_ms: Math.round(lateMax * 1000) / 1000,
        clock_corr_us: Math.round(clockCorrectionUs()),
      });
      resolve();
    };

    if (count === 0) return void finish();

    if (!(rate > 0)) {
      // As fast as possible: emit without awaiting anything; yield to the
      // event loop every 1000 messages so the Redis client can flush.
      const burst = () => {
        const end = Math.min(count, i + 1000);
        for (; i < end; i++) send(i);
        if (i < count) setImmediate(burst);
        else finish();
      };
      burst();
      return;
    }

    // Fixed offered rate, absolute schedule: message i is due at t0 + i/rate.
    const periodMs = 1000 / rate;
    const tick = () => {
      // send everything that is due now (a small burst per timer tick)
      let now = monoMs();
      while (i < count && t0 + i * periodMs <= now) {
        const late = now - (t0 + i * periodMs);
        if (late > lateMax) lateMax = late;
        send(i);
        i++;
        now = monoMs();
      }
      if (i >= count) return void finish();
      const wait = t0 + i * periodMs - monoMs();
      setTimeout(tick, Math.max(0, wait));
    };
    tick();
  });
}

readCommands(
  (cmd) => {
    switch (cmd.op) {
      case "publish":
        // publishes run one after another, in the order received
        busy = busy.then(() => publish(cmd));
        return;
      case "exit":
        process.exit(0);
      default:
        emit({ ev: "error", op: cmd.op, error: "unknown op" });
    }
  },
  () => process.exit(0),
);

process.on("SIGTERM", () => process.exit(0));
emit({ ev: "ready" });
log(`ready, redis ${args.redis}`);
