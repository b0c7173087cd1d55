//! The transports a client tries, in order: the list built from its options.

import type { TransportEndpoint, TransportName } from './types.js';

/** The emulated transports' endpoints under a node's base path. */
const PATHS: Record<TransportName, string> = {
  websocket: '/connection/websocket',
  http_stream: '/connection/http_stream',
  sse: '/connection/sse',
};

/** The SDK's transports for a client: the list, and where emulated transports post commands. */
export interface TransportPlan {
  /** Empty: WebSocket on the client's `url` only. */
  list: TransportEndpoint[];
  /** The `/emulation` endpoint for HTTP-streaming and SSE, when the list has either. */
  emulationEndpoint: string | null;
}

/**
 * The node's base (scheme http(s), host and the path before `/connection/…`) of
 * `endpoint`, resolved against the page; null when it cannot be parsed. A URL without a
 * `/connection/<transport>` suffix is taken as the base itself.
 */
export function baseOf(endpoint: string): URL | null {
  let u: URL;
  try {
    const page = (globalThis as { location?: { href?: string } }).location?.href;
    u = page ? new URL(endpoint, page) : new URL(endpoint);
  } catch {
    return null;
  }
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  else if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  const suffix = Object.values(PATHS).find((p) => u.pathname.endsWith(p));
  u.pathname = suffix ? u.pathname.slice(0, -suffix.length) : u.pathname.replace(/\/+$/, '');
  u.hash = '';
  return u;
}

/** `base` with `path` appended, query kept (or dropped), in `scheme`. */
function under(base: URL, path: string, ws: boolean, keepQuery: boolean): string {
  const u = new URL(base.href);
  u.pathname = `${base.pathname.replace(/\/+$/, '')}${path}`;
  if (ws) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  if (!keepQuery) u.search = '';
  return u.href;
}

/**
 * Builds the transport list. `'auto'`: WebSocket on `url`, then HTTP-streaming and SSE
 * on the same node, with `/emulation` beside them. A list is used as given. Anything
 * else (the default): WebSocket on `url` only, as before fallback existed.
 */
export function planTransports(
  url: string,
  transports: 'websocket' | 'auto' | readonly TransportEndpoint[] | undefined,
  emulationEndpoint?: string,
): TransportPlan {
  let list: TransportEndpoint[] = [];
  if (transports === 'auto') {
    const base = baseOf(url);
    if (base) {
      list = [
        { transport: 'websocket', endpoint: url },
        { transport: 'http_stream', endpoint: under(base, PATHS.http_stream, false, true) },
        { transport: 'sse', endpoint: under(base, PATHS.sse, false, true) },
      ];
    }
  } else if (Array.isArray(transports)) {
    list = transports
      .filter((t) => t && typeof t.endpoint === 'string' && (t.transport === 'websocket' || t.transport === 'http_stream' || t.transport === 'sse'))
      .map((t) => ({ transport: t.transport, endpoint: t.endpoint }));
  }
  let emulation: string | null = null;
  const emulated = list.find((t) => t.transport !== 'websocket');
  if (emulated) {
    if (typeof emulationEndpoint === 'string' && emulationEndpoint) emulation = emulationEndpoint;
    else {
      const base = baseOf(emulated.endpoint);
      if (base) emulation = under(base, '/emulation', false, false);
    }
  }
  return { list, emulationEndpoint: emulation };
}
