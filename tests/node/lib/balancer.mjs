// An HTTP round-robin balancer for the emulated transports: every HTTP request (not
// every TCP connection, as a connection-level balancer would) goes to the next node in
// turn, with no stickiness, so an SDK's stream and its commands posted to /emulation
// land on different nodes as behind an L7 proxy that knows nothing of sessions.
//
//   const lb = await startHttpBalancer(nodes.map((n) => n.port));
//   lb.url                      // http://127.0.0.1:<port>
//   lb.crossPosts()             // /emulation POSTs that reached another node than their stream
//   lb.explain()                // the routing log, for assertion messages
//
// Request bodies are small (≤ 64 KiB) and read whole, so that a request whose node
// refuses the TCP connection (it was killed) can be sent to the next one. Responses are
// piped through chunk by chunk as they arrive (a stream must never wait in a buffer
// here); when a node dies mid-response, the client's response is cut as well.

import http from 'node:http';

// Per-connection headers of one hop, never forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
]);

function forwardable(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k.toLowerCase())) out[k] = v;
  return out;
}

const readAll = (stream) =>
  new Promise((resolve, reject) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });

/**
 * Starts the balancer over nodes listening on `backends` (ports on 127.0.0.1).
 * `requests` lists every routed request ({ n, method, path, node, status, session,
 * postedFor }); `streams` maps a session id to the node (index) holding its stream,
 * read from the connect reply as it passes through.
 */
export async function startHttpBalancer(backends) {
  let next = 0;
  let seq = 0;
  const t0 = Date.now();
  const log = [];
  const note = (text) => log.push(`  +${Date.now() - t0}ms ${text}`);
  const requests = [];
  const streams = new Map();
  const open = new Set();
  // A fresh TCP connection per request: the node sees each request on its own.
  const agent = new http.Agent({ keepAlive: false });

  const forward = (k, req, body) =>
    new Promise((resolve, reject) => {
      const upstream = http.request({
        host: '127.0.0.1',
        port: backends[k],
        method: req.method,
        path: req.url,
        headers: { ...forwardable(req.headers), 'content-length': String(body.length) },
        agent,
      });
      upstream.once('response', resolve);
      upstream.once('error', reject);
      upstream.end(body);
    });

  const server = http.createServer(async (req, res) => {
    const n = ++seq;
    open.add(res);
    res.once('close', () => open.delete(res));
    const path = req.url.split('?')[0];
    const entry = { n, method: req.method, path, node: null, status: null };
    requests.push(entry);
    let body;
    try {
      body = await readAll(req);
    } catch {
      return void res.destroy();
    }
    if (path === '/emulation') {
      try {
        const request = JSON.parse(body.toString('utf8'));
        entry.session = request.session;
        entry.postedFor = request.node;
      } catch {
        // Not JSON: the node answers it.
      }
    }
    const start = next++;
    for (let i = 0; i < backends.length; i++) {
      const k = (start + i) % backends.length;
      let upstream;
      try {
        upstream = await forward(k, req, body);
      } catch (e) {
        note(`#${n} ${req.method} ${path} -> node ${k + 1} failed (${e.code ?? e.message}), trying the next`);
        continue;
      }
      entry.node = k;
      entry.status = upstream.statusCode;
      const streamNode = entry.session === undefined ? '' : ` (stream on node ${(streams.get(entry.session) ?? -2) + 1})`;
      note(`#${n} ${req.method} ${path} -> node ${k + 1}: ${upstream.statusCode}${streamNode}`);
      if (path.startsWith('/connection/')) {
        // The connect reply is the stream's first message: it names the session.
        let head = '';
        const sniff = (chunk) => {
          head += chunk.toString('utf8');
          const m = /"session":"([^"]+)"/.exec(head);
          if (m || head.length > 8192) {
            upstream.off('data', sniff);
            if (m) {
              entry.session = m[1];
              streams.set(m[1], k);
            }
          }
        };
        upstream.on('data', sniff);
      }
      res.writeHead(upstream.statusCode, forwardable(upstream.headers));
      res.flushHeaders();
      upstream.pipe(res);
      // A node that dies mid-response: the client must see its stream break, not end.
      upstream.once('aborted', () => res.destroy());
      upstream.once('error', () => res.destroy());
      // A client that goes away: the node must see its session end.
      res.once('close', () => {
        if (!upstream.complete) upstream.destroy();
      });
      return;
    }
    note(`#${n} ${req.method} ${path}: no node reachable`);
    res.writeHead(502).end();
  });
  const port = await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    streams,
    /** Emulation POSTs delivered (204) by another node than the one holding the stream. */
    crossPosts: () =>
      requests.filter(
        (r) => r.path === '/emulation' && r.status === 204 && streams.has(r.session) && streams.get(r.session) !== r.node,
      ),
    /** The node (index) holding the stream of `session`, if it passed through here. */
    streamNodeOf: (session) => streams.get(session),
    explain: (last = 120) => `balancer log (last ${last}):\n${log.slice(-last).join('\n')}`,
    async stop() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const res of open) res.destroy();
      server.closeAllConnections();
      agent.destroy();
      await closed;
    },
  };
}
