//! Tells when a connection attempt's transport opened, by handing the SDK wrapped
//! WebSocket, EventSource and fetch: the SDK keeps that moment to itself, and a silent
//! transport is measured from it.

/** The SDK options that make the transports, each wrapped to report the opening. */
export interface WatchedDeps {
  websocket?: unknown;
  eventsource?: unknown;
  fetch?: typeof fetch;
}

type Ctor = new (...args: never[]) => EventTarget;

/** `Base` (a WebSocket or EventSource class), whose instances call `opened` on `open`. */
function watchedClass(Base: Ctor, opened: () => void): unknown {
  return class extends (Base as new (...args: unknown[]) => EventTarget) {
    constructor(...args: unknown[]) {
      super(...args);
      try {
        this.addEventListener('open', () => opened());
      } catch {
        // A stand-in without events: the attempt is then only bounded by the connect timeout.
      }
    }
  };
}

/**
 * Wrapped transport dependencies for one attempt on `endpoint`: `opened` runs when its
 * socket or event stream opens, or when its streaming request is answered with 200.
 * `websocket` is the one to wrap where there is no global (Node).
 */
export function watchOpen(endpoint: string, opened: () => void, websocket?: unknown): WatchedDeps {
  const g = globalThis as { WebSocket?: unknown; EventSource?: unknown; fetch?: typeof fetch };
  const deps: WatchedDeps = {};
  const ws = websocket ?? g.WebSocket;
  if (typeof ws === 'function') deps.websocket = watchedClass(ws as Ctor, opened);
  if (typeof g.EventSource === 'function') deps.eventsource = watchedClass(g.EventSource as Ctor, opened);
  const baseFetch = g.fetch;
  if (typeof baseFetch === 'function') {
    deps.fetch = (input: RequestInfo | URL, init?: RequestInit) =>
      baseFetch.call(globalThis, input, init).then((res) => {
        // Only the stream of this attempt; the emulation posts are not an opening.
        const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
        if (res.ok && url === endpoint) opened();
        return res;
      });
  }
  return deps;
}
