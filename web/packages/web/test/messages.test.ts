import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION, envelope, openEnvelope, parseHubMessage, parseTabMessage } from '../src/messages.js';
import { reconnectPolicy } from '../src/backoff.js';

type Raw = { type: string } & Record<string, unknown>;
const tab = (m: Record<string, unknown>) => parseTabMessage(m as Raw);
const hub = (m: Record<string, unknown>) => parseHubMessage(m as Raw);

const settings = {
  url: 'ws://localhost/connection/websocket',
  transports: [],
  connectTimeoutMs: 8000,
  reconnect: reconnectPolicy(),
  name: 'js',
  scope: 's',
  persistPositions: true,
};

describe('envelopes', () => {
  it('round-trips an envelope of this version', () => {
    const e = envelope('tab-1', '*', { type: 'bye' });
    expect(e).toEqual({ herald: PROTOCOL_VERSION, from: 'tab-1', to: '*', msg: { type: 'bye' } });
    expect(openEnvelope(JSON.parse(JSON.stringify(e)))).toEqual(e);
  });

  it.each([
    ['null', null],
    ['a string', 'hello'],
    ['a number', 1],
    ['an empty object', {}],
    ['another version', { herald: PROTOCOL_VERSION + 1, from: 'a', to: 'b', msg: { type: 'bye' } }],
    ['version as a string', { herald: String(PROTOCOL_VERSION), from: 'a', to: 'b', msg: { type: 'bye' } }],
    ['no from', { herald: PROTOCOL_VERSION, to: 'b', msg: { type: 'bye' } }],
    ['numeric to', { herald: PROTOCOL_VERSION, from: 'a', to: 2, msg: { type: 'bye' } }],
    ['no msg', { herald: PROTOCOL_VERSION, from: 'a', to: 'b' }],
    ['null msg', { herald: PROTOCOL_VERSION, from: 'a', to: 'b', msg: null }],
    ['msg without type', { herald: PROTOCOL_VERSION, from: 'a', to: 'b', msg: {} }],
    ['msg with a numeric type', { herald: PROTOCOL_VERSION, from: 'a', to: 'b', msg: { type: 1 } }],
    ['msg as a string', { herald: PROTOCOL_VERSION, from: 'a', to: 'b', msg: 'bye' }],
  ])('openEnvelope rejects %s', (_name, raw) => {
    expect(openEnvelope(raw)).toBeNull();
  });
});

describe('parseTabMessage', () => {
  it('accepts a hello', () => {
    const m = { type: 'hello', settings, hasToken: true, online: true, visible: false, wantConnect: true };
    expect(tab(m)).toEqual(m);
  });

  it('accepts a hello with the transports a previous hub found silent', () => {
    const skipped = [{ transport: 'websocket', endpoint: 'ws://h/connection/websocket', retryAt: 5 }];
    const m = { type: 'hello', settings: { ...settings, silentTimeoutMs: 4000, silentRetryMs: 60_000, emulationEndpoint: 'http://h/emulation' }, hasToken: true, online: true, visible: false, wantConnect: true, skipped };
    expect(tab(m)).toEqual(m);
  });

  it.each([
    ['skipped not an array', { skipped: { transport: 'websocket' } }],
    ['no settings', { settings: undefined }],
    ['settings without url', { settings: { ...settings, url: 5 } }],
    ['settings without scope', { settings: { ...settings, scope: undefined } }],
    ['transports not an array', { settings: { ...settings, transports: {} } }],
    ['connectTimeoutMs NaN', { settings: { ...settings, connectTimeoutMs: Number.NaN } }],
    ['hasToken not boolean', { hasToken: 'yes' }],
    ['online missing', { online: undefined }],
    ['visible a number', { visible: 1 }],
    ['wantConnect null', { wantConnect: null }],
  ])('rejects a hello with %s', (_name, change) => {
    const m = { type: 'hello', settings, hasToken: true, online: true, visible: true, wantConnect: true, ...change };
    expect(tab(m)).toBeNull();
  });

  it('accepts attach and validates its position (junk becomes null)', () => {
    expect(tab({ type: 'attach', channel: 'ch', since: { epoch: 'e', offset: 3 } })).toEqual({
      type: 'attach',
      channel: 'ch',
      since: { epoch: 'e', offset: 3 },
    });
    expect(tab({ type: 'attach', channel: 'ch', since: null })).toEqual({ type: 'attach', channel: 'ch', since: null });
    expect(tab({ type: 'attach', channel: 'ch', since: { epoch: 'e', offset: -1 } })).toEqual({ type: 'attach', channel: 'ch', since: null });
    expect(tab({ type: 'attach', channel: 'ch' })).toEqual({ type: 'attach', channel: 'ch', since: null });
  });

  it('copies only known fields', () => {
    const m = tab({ type: 'attach', channel: 'ch', since: null, evil: 1 });
    expect(m).not.toHaveProperty('evil');
    expect(tab({ type: 'bye', extra: 1 })).toEqual({ type: 'bye' });
  });

  it.each([
    ['attach with an empty channel', { type: 'attach', channel: '', since: null }],
    ['attach with a numeric channel', { type: 'attach', channel: 5, since: null }],
    ['attach with a too long channel', { type: 'attach', channel: 'x'.repeat(1025), since: null }],
    ['detach without a channel', { type: 'detach' }],
    ['detach with an empty channel', { type: 'detach', channel: '' }],
    ['publish without req', { type: 'publish', channel: 'ch', data: 1, key: null }],
    ['publish with a string req', { type: 'publish', req: '1', channel: 'ch', data: 1, key: null }],
    ['publish with an infinite req', { type: 'publish', req: Number.POSITIVE_INFINITY, channel: 'ch', data: 1, key: null }],
    ['publish with an empty channel', { type: 'publish', req: 1, channel: '', data: 1, key: null }],
    ['publish with a numeric key', { type: 'publish', req: 1, channel: 'ch', data: 1, key: 5 }],
    ['publish with an undefined key', { type: 'publish', req: 1, channel: 'ch', data: 1 }],
    ['network without online', { type: 'network' }],
    ['network with a string', { type: 'network', online: 'true' }],
    ['visible without hiddenMs', { type: 'visible' }],
    ['visible with NaN', { type: 'visible', hiddenMs: Number.NaN }],
    ['token without req', { type: 'token', token: 't', error: null }],
    ['token with a numeric token', { type: 'token', req: 1, token: 5, error: null }],
    ['token with an undefined error', { type: 'token', req: 1, token: 't' }],
    ['an unknown type', { type: 'launch-missiles' }],
    ['a hub message type', { type: 'welcome', hub: 'h' }],
  ])('rejects %s', (_name, m) => {
    expect(tab(m)).toBeNull();
  });

  it('accepts the other valid shapes', () => {
    expect(tab({ type: 'detach', channel: 'ch' })).toEqual({ type: 'detach', channel: 'ch' });
    expect(tab({ type: 'publish', req: 1, channel: 'ch', data: { a: 1 }, key: 'k' })).toEqual({
      type: 'publish', req: 1, channel: 'ch', data: { a: 1 }, key: 'k',
    });
    expect(tab({ type: 'publish', req: 2, channel: 'ch', data: undefined, key: null })).toEqual({
      type: 'publish', req: 2, channel: 'ch', data: undefined, key: null,
    });
    expect(tab({ type: 'network', online: false })).toEqual({ type: 'network', online: false });
    expect(tab({ type: 'visible', hiddenMs: 0 })).toEqual({ type: 'visible', hiddenMs: 0 });
    expect(tab({ type: 'token', req: 3, token: 'jwt', error: null })).toEqual({ type: 'token', req: 3, token: 'jwt', error: null });
    expect(tab({ type: 'token', req: 3, token: null, error: 'no' })).toEqual({ type: 'token', req: 3, token: null, error: 'no' });
    for (const type of ['outbox', 'connect', 'disconnect', 'bye']) expect(tab({ type })).toEqual({ type });
  });
});

describe('parseHubMessage', () => {
  const status = { state: 'connected', reason: null, attempt: 0, nextRetryAt: null, transport: 'websocket', latencyMs: 1, tabs: 1, lastConnectedAt: 1 };

  it('accepts the valid shapes', () => {
    const valid: Record<string, unknown>[] = [
      { type: 'welcome', hub: 'h1' },
      { type: 'status', status },
      { type: 'pub', pub: { channel: 'ch', data: 1, offset: 3, epoch: 'e' } },
      { type: 'pub', pub: { channel: 'ch', data: 1 } },
      { type: 'subscribed', event: { channel: 'ch', wasRecovering: false, recovered: false, position: null } },
      { type: 'resync', event: { channel: 'ch', reason: 'epoch-changed', from: null, to: null } },
      { type: 'error', error: { kind: 'auth', message: 'x', temporary: false } },
      { type: 'published', req: 1, ok: true, position: null, error: null },
      { type: 'token', req: 4, channel: null },
      { type: 'token', req: 5, channel: '$vip' },
      { type: 'outbox' },
      { type: 'fallback', event: { from: 'websocket', to: 'http_stream', reason: 'silent', waitedMs: 4000, retryAt: 9 } },
    ];
    for (const m of valid) expect(hub(m), JSON.stringify(m)).toEqual(m);
  });

  it('strips unknown fields of welcome and token', () => {
    expect(hub({ type: 'welcome', hub: 'h', x: 1 })).toEqual({ type: 'welcome', hub: 'h' });
    expect(hub({ type: 'token', req: 1, x: 1 })).toEqual({ type: 'token', req: 1, channel: null });
  });

  it.each([
    ['welcome without hub', { type: 'welcome' }],
    ['status without status', { type: 'status' }],
    ['status null', { type: 'status', status: null }],
    ['status without state', { type: 'status', status: { attempt: 0 } }],
    ['pub without pub', { type: 'pub' }],
    ['pub with an empty channel', { type: 'pub', pub: { channel: '', data: 1 } }],
    ['pub with a string offset', { type: 'pub', pub: { channel: 'ch', data: 1, offset: '3' } }],
    ['pub with a NaN offset', { type: 'pub', pub: { channel: 'ch', data: 1, offset: Number.NaN } }],
    ['subscribed without event', { type: 'subscribed' }],
    ['subscribed with an empty channel', { type: 'subscribed', event: { channel: '' } }],
    ['resync with a numeric channel', { type: 'resync', event: { channel: 1 } }],
    ['error without error', { type: 'error' }],
    ['error without kind', { type: 'error', error: { message: 'x' } }],
    ['error without message', { type: 'error', error: { kind: 'auth' } }],
    ['published without ok', { type: 'published', req: 1 }],
    ['published with a string req', { type: 'published', req: '1', ok: true }],
    ['token without req', { type: 'token' }],
    ['token with an empty channel', { type: 'token', req: 1, channel: '' }],
    ['fallback without event', { type: 'fallback' }],
    ['fallback without to', { type: 'fallback', event: { from: 'websocket', reason: 'silent', waitedMs: 1, retryAt: 9 } }],
    ['fallback with a string retryAt', { type: 'fallback', event: { from: 'websocket', to: 'sse', reason: 'silent', waitedMs: 1, retryAt: '9' } }],
    ['an unknown type', { type: 'nope' }],
    ['a tab message type', { type: 'attach', channel: 'ch', since: null }],
  ])('rejects %s', (_name, m) => {
    expect(hub(m)).toBeNull();
  });
});
