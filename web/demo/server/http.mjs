// The demo's HTTP surface on plain node:http: identity, configuration, the
// applications REST API, Herald tokens, the outbox counters and the built frontend.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { EDITING_CHANNEL, RESTRICTED_CHANNEL_PREFIX, USERS, canSeeRestricted, isUser } from './access.mjs';
import { connectionToken, subscriptionToken } from './jwt.mjs';
import { HttpError } from './store.mjs';

const COOKIE = 'demo_user';
const MAX_BODY_BYTES = 64 * 1024;

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
};

const NOT_BUILT = `Herald demo: the frontend is not built.

Build it with \`npm run build -w herald-demo\` (from web/) and start the backend with
\`--static web/demo/dist\`, or run \`./scripts/demo\`, which does both.
The API is up: try GET /config.json or /login?user=alice.
`;

function send(res, status, body, headers = {}) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
  res.writeHead(status, { 'Content-Length': buf.length, ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : buf);
}

function sendJson(res, status, value, headers = {}) {
  send(res, status, JSON.stringify(value), {
    'Content-Type': 'application/json; charset=utf-8',
    'Cache-Control': 'no-store',
    ...headers,
  });
}

function sendText(res, status, text, headers = {}) {
  send(res, status, text, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
}

function parseCookies(header) {
  const out = {};
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const key = part.slice(0, i).trim();
    let value = part.slice(i + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      // keep it raw
    }
    if (!(key in out)) out[key] = value;
  }
  return out;
}

/** The acting user: the X-Demo-User header wins over the cookie; undefined when neither. */
function claimedUser(req) {
  const header = req.headers['x-demo-user'];
  if (header !== undefined) return header;
  return parseCookies(req.headers.cookie)[COOKIE];
}

/** The acting user, or a 401. */
function requireUser(req) {
  const user = claimedUser(req);
  if (user === undefined || user === '') {
    throw new HttpError(401, 'not logged in: visit /login?user=alice or send X-Demo-User');
  }
  if (!isUser(user)) throw new HttpError(401, `unknown user ${JSON.stringify(user)}: expected ${USERS.join(', ')}`);
  return user;
}

/** The request body as JSON (a 400 when it is not, a 413 when it is too large). */
async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `the body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'the body is empty: send a JSON object');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the body is not valid JSON: ${e.message}`);
  }
}

/** `?version=N` on DELETE: undefined when absent, else a positive integer or a 400. */
function versionParam(url) {
  const text = url.searchParams.get('version');
  if (text === null) return undefined;
  if (!/^[1-9]\d{0,15}$/.test(text)) throw new HttpError(400, 'version must be a positive integer');
  return Number(text);
}

function methodNotAllowed(allowed) {
  const e = new HttpError(405, `method not allowed: use ${allowed.join(', ')}`);
  e.headers = { Allow: allowed.join(', ') };
  return e;
}

/** A local redirect target: a path on this site, never another origin. */
function localPath(next, fallback) {
  if (typeof next !== 'string' || !/^\/(?![/\\])/.test(next)) return fallback;
  // Browsers drop tabs and newlines from URLs (`/\t/evil.example` is `//evil.example`):
  // only a path that stays on this site, as a browser would read it, is followed.
  if (/[\u0000-\u0020\u007f\\]/.test(next)) return fallback;
  const base = 'http://demo.invalid';
  try {
    return new URL(next, base).origin === base ? next : fallback;
  } catch {
    return fallback;
  }
}

const wantsHtml = (req) => /\btext\/html\b/.test(req.headers.accept ?? '');

/** Serves `DIR/<path>` if it is a file inside DIR; returns whether it did. */
async function serveFile(res, dir, urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return false;
  }
  if (decoded.includes('\0')) return false;
  const file = path.resolve(dir, `.${path.posix.normalize(`/${decoded}`)}`);
  if (file !== dir && !file.startsWith(dir + path.sep)) return false;
  let stat;
  try {
    stat = await fs.promises.stat(file);
  } catch {
    return false;
  }
  if (!stat.isFile()) return false;
  const body = await fs.promises.readFile(file);
  const hashed = urlPath.startsWith('/assets/');
  send(res, 200, body, {
    'Content-Type': MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
    'Cache-Control': hashed ? 'public, max-age=31536000, immutable' : 'no-cache',
  });
  return true;
}

/**
 * Creates the HTTP server (not yet listening).
 * @param {{store: import('./store.mjs').Store, config: object, log: (line: string) => void}} deps
 */
export function createServer({ store, config, log }) {
  const staticDir = config.staticDir ? path.resolve(config.staticDir) : null;

  async function route(req, res, url) {
    const p = url.pathname;
    const method = req.method;

    if (p === '/login' || p === '/logout') {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(['GET']);
      if (p === '/logout') {
        res.writeHead(302, {
          Location: localPath(url.searchParams.get('next'), '/'),
          'Set-Cookie': `${COOKIE}=; Path=/; Max-Age=0; SameSite=Lax; HttpOnly`,
          'Cache-Control': 'no-store',
          'Content-Length': 0,
        });
        return res.end();
      }
      const user = url.searchParams.get('user');
      if (!isUser(user)) {
        throw new HttpError(400, `unknown user ${JSON.stringify(user)}: expected ${USERS.join(', ')}`);
      }
      res.writeHead(302, {
        Location: localPath(url.searchParams.get('next'), '/applications'),
        'Set-Cookie': `${COOKIE}=${user}; Path=/; SameSite=Lax; HttpOnly`,
        'Cache-Control': 'no-store',
        'Content-Length': 0,
      });
      return res.end();
    }

    if (p === '/config.json') {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(['GET']);
      const claimed = claimedUser(req);
      const user = isUser(claimed) ? claimed : null;
      return sendJson(res, 200, {
        heraldUrl: config.heraldWs,
        user,
        users: USERS,
        canSeeRestricted: user !== null && canSeeRestricted(user),
      });
    }

    if (p === '/healthz') return sendText(res, 200, 'ok\n');

    if (p === '/api' || p.startsWith('/api/')) return api(req, res, url);

    if (method !== 'GET' && method !== 'HEAD') throw new HttpError(404, `no route ${method} ${p}`);
    if (!staticDir) return sendText(res, p === '/' ? 200 : 404, NOT_BUILT);
    if (p !== '/' && (await serveFile(res, staticDir, p))) return undefined;
    if (p === '/' || wantsHtml(req)) {
      if (await serveFile(res, staticDir, '/index.html')) return undefined;
      return sendText(res, 404, `${staticDir}/index.html is missing: build the frontend first.\n`);
    }
    return sendText(res, 404, `not found: ${p}\n`);
  }

  async function api(req, res, url) {
    const p = url.pathname;
    const method = req.method;

    if (p === '/api/applications') {
      if (method === 'GET') return sendJson(res, 200, store.list(requireUser(req)));
      if (method === 'POST') {
        const user = requireUser(req);
        return sendJson(res, 201, store.create(user, await readJson(req)));
      }
      throw methodNotAllowed(['GET', 'POST']);
    }

    const one = /^\/api\/applications\/([^/]+)$/.exec(p);
    if (one) {
      let id;
      try {
        id = decodeURIComponent(one[1]);
      } catch {
        throw new HttpError(404, 'no such application');
      }
      if (method === 'GET') return sendJson(res, 200, store.get(requireUser(req), id));
      if (method === 'PATCH') {
        const user = requireUser(req);
        return sendJson(res, 200, store.patch(user, id, await readJson(req)));
      }
      if (method === 'DELETE') {
        const user = requireUser(req);
        return sendJson(res, 200, store.remove(user, id, versionParam(url)));
      }
      throw methodNotAllowed(['GET', 'PATCH', 'DELETE']);
    }

    if (p === '/api/herald/token') {
      if (method !== 'GET') throw methodNotAllowed(['GET']);
      return sendText(res, 200, connectionToken(config.tokenSecret, requireUser(req)));
    }

    if (p === '/api/herald/subscription-token') {
      if (method !== 'GET') throw methodNotAllowed(['GET']);
      const user = requireUser(req);
      const channel = url.searchParams.get('channel');
      if (!channel) throw new HttpError(400, 'channel is required: ?channel=$entities:…');
      const editing = EDITING_CHANNEL.exec(channel);
      if (editing) {
        try {
          store.get(user, editing[1]); // 404 unless this user may see the application
        } catch {
          throw new HttpError(403, `${user} may not see who edits this application`);
        }
        return sendText(res, 200, subscriptionToken(config.tokenSecret, user, channel));
      }
      if (!channel.startsWith(RESTRICTED_CHANNEL_PREFIX)) {
        throw new HttpError(403, `subscription tokens are only for ${RESTRICTED_CHANNEL_PREFIX}… channels`);
      }
      if (!canSeeRestricted(user)) throw new HttpError(403, `${user} may not see restricted applications`);
      return sendText(res, 200, subscriptionToken(config.tokenSecret, user, channel));
    }

    if (p === '/api/outbox') {
      if (method !== 'GET') throw methodNotAllowed(['GET']);
      return sendJson(res, 200, store.outboxCounts());
    }

    throw new HttpError(404, `no API route ${method} ${p}`);
  }

  const server = http.createServer(async (req, res) => {
    const started = Date.now();
    res.req = req;
    let user = '';
    try {
      const url = new URL(`http://demo.invalid${req.url.startsWith('/') ? '' : '/'}${req.url}`);
      const claimed = claimedUser(req);
      user = isUser(claimed) ? claimed : '';
      await route(req, res, url);
    } catch (e) {
      if (!(e instanceof HttpError)) {
        log(`error: ${req.method} ${req.url?.split('?')[0]}: ${e?.stack ?? e}`);
      }
      const status = e instanceof HttpError ? e.status : 500;
      const message = e instanceof HttpError ? e.message : 'internal error';
      if (res.headersSent) {
        res.destroy();
      } else {
        // A request whose body was not read must not keep the connection half-read.
        const close = req.complete ? {} : { Connection: 'close' };
        sendJson(res, status, { error: message, ...(e.extra ?? {}) }, { ...close, ...(e.headers ?? {}) });
      }
    } finally {
      if (config.verbose) {
        // The path only: query strings are not logged.
        const where = (req.url ?? '').split('?')[0];
        log(`${req.method} ${where} ${res.statusCode} ${Date.now() - started}ms${user ? ` ${user}` : ''}`);
      }
    }
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  return server;
}
