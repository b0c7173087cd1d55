import { describe, expect, it } from 'vitest';
import { TransportPicker } from '../src/picker.js';
import { baseOf, planTransports } from '../src/transports.js';
import type { TransportEndpoint } from '../src/types.js';

describe('baseOf', () => {
  it('turns a WebSocket endpoint into the node base over HTTP', () => {
    expect(baseOf('wss://h.example.com/connection/websocket')?.href).toBe('https://h.example.com/');
    expect(baseOf('ws://127.0.0.1:8000/herald/connection/websocket')?.href).toBe('http://127.0.0.1:8000/herald');
    expect(baseOf('https://h.example.com/rt/connection/sse')?.href).toBe('https://h.example.com/rt');
  });

  it('takes a URL without a transport path as the base', () => {
    expect(baseOf('wss://h.example.com/rt/')?.href).toBe('https://h.example.com/rt');
  });

  it('refuses what it cannot parse or another scheme', () => {
    expect(baseOf('not a url')).toBeNull();
    expect(baseOf('ftp://h/connection/websocket')).toBeNull();
  });
});

describe('planTransports', () => {
  const url = 'wss://h.example.com/connection/websocket';

  it('keeps WebSocket only by default', () => {
    expect(planTransports(url, undefined)).toEqual({ list: [], emulationEndpoint: null });
    expect(planTransports(url, 'websocket')).toEqual({ list: [], emulationEndpoint: null });
  });

  it("'auto' adds HTTP-streaming and SSE on the same node, with /emulation", () => {
    expect(planTransports(url, 'auto')).toEqual({
      list: [
        { transport: 'websocket', endpoint: url },
        { transport: 'http_stream', endpoint: 'https://h.example.com/connection/http_stream' },
        { transport: 'sse', endpoint: 'https://h.example.com/connection/sse' },
      ],
      emulationEndpoint: 'https://h.example.com/emulation',
    });
  });

  it("'auto' keeps a path prefix and the query on the streams, not on /emulation", () => {
    const p = planTransports('ws://127.0.0.1:9/rt/connection/websocket?x=1', 'auto');
    expect(p.list.map((t) => t.endpoint)).toEqual([
      'ws://127.0.0.1:9/rt/connection/websocket?x=1',
      'http://127.0.0.1:9/rt/connection/http_stream?x=1',
      'http://127.0.0.1:9/rt/connection/sse?x=1',
    ]);
    expect(p.emulationEndpoint).toBe('http://127.0.0.1:9/rt/emulation');
  });

  it("'auto' with a URL it cannot parse falls back to WebSocket only", () => {
    expect(planTransports('::', 'auto')).toEqual({ list: [], emulationEndpoint: null });
  });

  it('uses a list as given, dropping unknown entries, and derives /emulation from the first emulated one', () => {
    const list = [
      { transport: 'websocket', endpoint: url },
      { transport: 'webtransport', endpoint: 'https://x/wt' },
      { transport: 'sse', endpoint: 'https://other.example.com/p/connection/sse' },
    ] as unknown as TransportEndpoint[];
    expect(planTransports(url, list)).toEqual({
      list: [list[0], list[2]],
      emulationEndpoint: 'https://other.example.com/p/emulation',
    });
    expect(planTransports(url, list, '/custom-emulation').emulationEndpoint).toBe('/custom-emulation');
    expect(planTransports(url, [list[0]!], '/e').emulationEndpoint).toBeNull();
  });
});

const ws: TransportEndpoint = { transport: 'websocket', endpoint: 'ws://h/connection/websocket' };
const hs: TransportEndpoint = { transport: 'http_stream', endpoint: 'http://h/connection/http_stream' };
const sse: TransportEndpoint = { transport: 'sse', endpoint: 'http://h/connection/sse' };

describe('TransportPicker', () => {
  it('without a list, attempts use the url', () => {
    const p = new TransportPicker([], 1000);
    expect(p.canFallBack).toBe(false);
    expect(p.next(0).endpoint).toBeNull();
    expect(p.silent(0)).toBeNull();
  });

  it('moves round the list on failures to open', () => {
    const p = new TransportPicker([ws, hs, sse], 1000);
    const seen = [];
    for (let i = 0; i < 4; i++) {
      seen.push(p.next(0).endpoint?.transport);
      p.failed();
    }
    expect(seen).toEqual(['websocket', 'http_stream', 'sse', 'websocket']);
  });

  it('stays on a transport that connected', () => {
    const p = new TransportPicker([ws, hs, sse], 1000);
    p.next(0);
    p.failed();
    expect(p.next(0).endpoint).toBe(hs);
    p.connected();
    expect(p.next(10)).toEqual({ endpoint: hs, fresh: true });
    expect(p.next(20)).toEqual({ endpoint: hs, fresh: false });
  });

  it('passes over a silent transport until its retry time, then prefers it again', () => {
    const p = new TransportPicker([ws, hs, sse], 1000);
    expect(p.next(0)).toEqual({ endpoint: ws, fresh: true });
    expect(p.silent(100)).toBe(1100);
    expect(p.peek(100)).toEqual({ endpoint: hs, fresh: true });
    expect(p.next(100)).toEqual({ endpoint: hs, fresh: true });
    p.connected();
    expect(p.skips(500)).toEqual([{ transport: 'websocket', endpoint: ws.endpoint, retryAt: 1100 }]);
    // The connection on http_stream dropped: the reconnect skips the silent WebSocket,
    // also when http_stream fails to open.
    expect(p.next(600).endpoint).toBe(hs);
    p.failed();
    expect(p.next(700).endpoint).toBe(sse);
    p.failed();
    expect(p.next(800).endpoint).toBe(hs);
    // Its time is up: WebSocket is tried again first.
    expect(p.peek(1100).endpoint).toBe(ws);
    expect(p.next(1100).endpoint).toBe(ws);
    expect(p.skips(1100)).toEqual([]);
  });

  it('tries every transport again when all of them were silent', () => {
    const p = new TransportPicker([ws, hs], 1000);
    p.next(0);
    p.silent(0);
    expect(p.next(1).endpoint).toBe(hs);
    p.silent(1);
    // Not a new transport: the hub waits out the backoff before going round again.
    expect(p.peek(2)).toEqual({ endpoint: ws, fresh: false });
    expect(p.next(2).endpoint).toBe(ws);
    expect(p.skips(2)).toEqual([]);
  });

  it('adopts what another hub found silent, bounded by its own retry time', () => {
    const p = new TransportPicker([ws, hs, sse], 1000);
    p.adopt([
      { transport: 'websocket', endpoint: ws.endpoint, retryAt: 99_999 },
      { transport: 'sse', endpoint: 'http://elsewhere/connection/sse', retryAt: 500 },
      { transport: 'http_stream', endpoint: hs.endpoint, retryAt: 5 },
      null as never,
    ], 10);
    expect(p.skips(10)).toEqual([{ transport: 'websocket', endpoint: ws.endpoint, retryAt: 1010 }]);
    expect(p.next(10).endpoint).toBe(hs);
  });
});
