// Socket.IO 4.8 peer gateway for Herald's side-by-side benchmarks.
//
//   node server.mjs --port P --redis redis://127.0.0.1:PORT [--host 127.0.0.1]
//                   [--max-len 100000] [--backlog 4096]
//
// WebSocket transport only, connection state recovery on, redis-streams adapter.
// Clients emit ("subscribe", channel, ack): the socket joins the room `channel`.
// Prints {"ev":"listening","port":P,"pid":PID} on stdout once the HTTP server
// listens AND the adapter's stream poller is running; exits 0 on SIGTERM/SIGINT.
import http from "node:http";
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { emit, log, parseArgs, waitAdapterReady } from "./common.mjs";

const args = parseArgs(process.argv.slice(2), {
  host: "127.0.0.1",
  redis: "redis://127.0.0.1:6379",
  "max-len": "100000",
  backlog: "4096",
});
if (!args.port) {
  log("usage: node server.mjs --port P --redis redis://127.0.0.1:PORT [--host H] [--max-len N] [--backlog N]");
  process.exit(2);
}
const port = Number(args.port);
const clientName = `herald-peer-gw-${process.pid}`;

const redisClient = createClient({ url: args.redis, name: clientName });
let redisErrors = 0;
redisClient.on("error", (err) => {
  if (redisErrors++ % 100 === 0) log(`redis error (#${redisErrors}): ${err.message}`);
});
await redisClient.connect();

const httpServer = http.createServer((req, res) => {
  // Everything but the engine.io path: a tiny health endpoint.
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "text/plain" });
  res.end(req.url === "/healthz" ? "ok\n" : "not found\n");
});

const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  connectionStateRecovery: {
    maxDisconnectionDuration: 120000,
    skipMiddlewares: true,
  },
  adapter: createAdapter(redisClient, {
    maxLen: Number(args["max-len"]),
  }),
});

let connections = 0;
let recovered = 0;
io.on("connection", (socket) => {
  connections++;
  if (socket.recovered) recovered++;
  socket.on("subscribe", (channel, ack) => {
    if (typeof channel === "string" && channel.length > 0) {
      socket.join(channel);
      if (typeof ack === "function") ack({ ok: true });
    } else if (typeof ack === "function") {
      ack({ ok: false, error: "channel must be a non-empty string" });
    }
  });
});

if (args["trace-recovery"]) traceRecovery(io.of("/").adapter);

await waitAdapterReady(redisClient, clientName);
await new Promise((resolve, reject) => {
  httpServer.once("error", reject);
  httpServer.listen({ port, host: args.host, backlog: Number(args.backlog) }, resolve);
});
emit({ ev: "listening", port, pid: process.pid });
log(`listening on ${args.host}:${port}, redis ${args.redis}, maxLen ${args["max-len"]}`);

// Occasional one-line status on stderr (cheap; helps when running by hand).
const statusTimer = setInterval(() => {
  log(`sockets=${io.of("/").sockets.size} connections_total=${connections} recovered_total=${recovered}`);
}, 30000);
statusTimer.unref();

let stopping = false;
function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  log(`${sig}: shutting down`);
  // io.close() disconnects every client; exiting before it calls back was seen to
  // lose clients' recovery sessions (the bench's rolling case, 1.5 s here before).
  // A hard deadline all the same, above the adapter's XREAD BLOCK (5 s), which its
  // poller only notices the close after.
  setTimeout(() => process.exit(0), 8000).unref();
  io.close(() => {
    redisClient
      .quit()
      .catch(() => {})
      .finally(() => process.exit(0));
  });
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

// ---------------------------------------------------------------------------
// --trace-recovery: diagnostics for connection state recovery (stderr only).
//
// The adapter restores a session by XRANGE-ing the stream from the client's
// offset to the end, then the socket joins its rooms; meanwhile the adapter's
// own XREAD poller keeps broadcasting new stream entries to the room. Nothing
// synchronises the two. At the moment of the join (same microtask chain as the
// restore, so no poller callback can run in between):
//   - every entry the poller has ALREADY broadcast that is newer than the last
//     replayed one reaches neither the replay nor the live path: lost (unless
//     a later recovery of the same session replays it: "healed");
//   - every replayed entry the poller has NOT YET broadcast is delivered again
//     when the poller gets to it, if the socket is still connected: duplicate.
// This counts both from the adapter's own state, so the counts can be compared
// with what the clients observe.
// ---------------------------------------------------------------------------
function traceRecovery(adapter) {
  const cmpId = (a, b) => {
    const [am, as] = a.split("-");
    const [bm, bs] = b.split("-");
    return Number(am) - Number(bm) || Number(as) - Number(bs);
  };
  const live = []; // stream ids broadcast by the poller, in order
  const pendingLost = new Map(); // pid -> Set of ids this session lost
  const pendingDup = new Map(); // id -> Set of sids that will get it twice
  let restored = 0;
  let lost = 0;
  let healed = 0;
  let dup = 0;
  let logged = 0;

  const origOnRaw = adapter.onRawMessage.bind(adapter);
  adapter.onRawMessage = (raw, offset) => {
    if (raw.type === "3") {
      live.push(offset);
      if (live.length > 200000) live.splice(0, 100000);
      const sids = pendingDup.get(offset);
      if (sids) {
        pendingDup.delete(offset);
        for (const sid of sids) if (adapter.sids.has(sid)) dup++; // still connected: delivered again
      }
    }
    return origOnRaw(raw, offset);
  };

  const origRestore = adapter.restoreSession.bind(adapter);
  adapter.restoreSession = async (pid, offset) => {
    const session = await origRestore(pid, offset);
    if (!session) return session;
    restored++;
    const missed = session.missedPackets.map((d) => d[d.length - 1]);
    // losses of this session's previous incarnation that this replay delivers
    const prev = pendingLost.get(pid);
    if (prev) {
      for (const id of missed) {
        if (prev.has(id)) {
          lost--;
          healed++;
        }
      }
      pendingLost.delete(pid);
    }
    const lastReplayed = missed.length ? missed[missed.length - 1] : offset;
    const lostIds = [];
    for (let i = live.length - 1; i >= 0 && cmpId(live[i], lastReplayed) > 0; i--) lostIds.push(live[i]);
    if (lostIds.length) {
      lost += lostIds.length;
      pendingLost.set(pid, new Set(lostIds));
    }
    const lastLive = live.length ? live[live.length - 1] : "0-0";
    let d = 0;
    for (let i = missed.length - 1; i >= 0 && cmpId(missed[i], lastLive) > 0; i--) {
      let set = pendingDup.get(missed[i]);
      if (!set) pendingDup.set(missed[i], (set = new Set()));
      set.add(session.sid);
      d++;
    }
    if ((lostIds.length || d) && logged++ < 20) {
      log(`trace-recovery: pid ${pid} from ${offset}: replayed ${missed.length} up to ${lastReplayed}, ` +
        `live broadcast so far up to ${lastLive}: loses ${lostIds.length}, may duplicate ${d}`);
    }
    return session;
  };

  let reported = "";
  const report = () => {
    const line = `trace-recovery: restored ${restored} sessions, lost ${lost}, duplicates ${dup}, healed ${healed}`;
    if (line !== reported) log(line);
    reported = line;
  };
  setInterval(report, 500).unref();
  process.on("exit", report);
}
