import { afterEach, describe, expect, it, vi } from 'vitest';
import { watchOpen } from '../src/watch.js';

/** A socket-like class that opens on the next task, as a browser's does. */
class FakeSocket extends EventTarget {
  static OPEN = 1;
  readonly url: string;
  constructor(url: string, readonly protocol?: string) {
    super();
    this.url = url;
    setTimeout(() => this.dispatchEvent(new Event('open')), 0);
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('watchOpen', () => {
  it('reports a socket opening, keeping the class usable as the original', async () => {
    const opened = vi.fn();
    const deps = watchOpen('ws://h/connection/websocket', opened, FakeSocket);
    const Ws = deps.websocket as typeof FakeSocket;
    const s = new Ws('ws://h/connection/websocket', 'p');
    expect(s).toBeInstanceOf(FakeSocket);
    expect(s.url).toBe('ws://h/connection/websocket');
    expect(s.protocol).toBe('p');
    expect(Ws.OPEN).toBe(1);
    expect(opened).not.toHaveBeenCalled();
    await tick();
    expect(opened).toHaveBeenCalledTimes(1);
  });

  it('reports an event stream opening', async () => {
    vi.stubGlobal('EventSource', FakeSocket);
    const opened = vi.fn();
    const Es = watchOpen('http://h/connection/sse', opened).eventsource as typeof FakeSocket;
    new Es('http://h/connection/sse?cf_connect=x');
    await tick();
    expect(opened).toHaveBeenCalledTimes(1);
  });

  it('reports only a successful answer to the stream request, not the command posts', async () => {
    const calls: unknown[] = [];
    vi.stubGlobal('fetch', function (this: unknown, input: unknown) {
      // The global fetch is called on the global object, as browsers require.
      calls.push(this === globalThis);
      const ok = !String(input).includes('bad');
      return Promise.resolve({ ok, status: ok ? 200 : 502 } as Response);
    });
    const opened = vi.fn();
    const endpoint = 'http://h/connection/http_stream';
    const f = watchOpen(endpoint, opened).fetch!;
    await f('http://h/emulation', { method: 'POST' });
    expect(opened).not.toHaveBeenCalled();
    await f(`${endpoint}?bad`);
    expect(opened).not.toHaveBeenCalled();
    const res = await f(new URL(endpoint));
    expect(res.status).toBe(200);
    expect(opened).toHaveBeenCalledTimes(1);
    expect(calls).toEqual([true, true, true]);
  });

  it('leaves out what the environment lacks', () => {
    vi.stubGlobal('WebSocket', undefined);
    vi.stubGlobal('EventSource', undefined);
    vi.stubGlobal('fetch', undefined);
    expect(watchOpen('x', () => {})).toEqual({});
  });
});
