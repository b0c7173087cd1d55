//! The messages between a tab and the connection holder (hub): typed, versioned, validated.

import { asPosition } from './cursor.js';
import type { FallbackEvent, HeraldError, JoinLeaveEvent, Position, PresenceClient, Publication, ResyncEvent, Status, SubscribedEvent, TransportEndpoint, TransportSkip } from './types.js';
import type { ReconnectPolicy } from './backoff.js';

/** Bumped on any incompatible change; a peer speaking another version is ignored. */
export const PROTOCOL_VERSION = 1;

/** What a hub needs to connect; sent by every tab, taken from the first. */
export interface HubSettings {
  url: string;
  /** The transports in order (empty: WebSocket on `url` only). */
  transports: TransportEndpoint[];
  /** Where emulated transports post commands (null: the SDK's default). */
  emulationEndpoint?: string | null;
  connectTimeoutMs: number;
  /** A transport that opened and gives no connect reply in this time is silent. */
  silentTimeoutMs?: number;
  /** How long a silent transport is passed over. */
  silentRetryMs?: number;
  reconnect: ReconnectPolicy;
  name: string;
  scope: string;
  persistPositions: boolean;
}

/** Tab → hub. */
export type TabMessage =
  | { type: 'hello'; settings: HubSettings; hasToken: boolean; hasSubToken?: boolean; online: boolean; visible: boolean; wantConnect: boolean; skipped?: TransportSkip[] }
  | { type: 'attach'; channel: string; since: Position | null }
  | { type: 'detach'; channel: string }
  | { type: 'publish'; req: number; channel: string; data: unknown; key: string | null }
  | { type: 'presence'; req: number; channel: string }
  | { type: 'outbox'; }
  | { type: 'network'; online: boolean }
  | { type: 'visible'; hiddenMs: number }
  | { type: 'connect' }
  | { type: 'disconnect' }
  | { type: 'token'; req: number; token: string | null; error: string | null }
  | { type: 'bye' };

/** Hub → tab. */
export type HubMessage =
  | { type: 'welcome'; hub: string }
  | { type: 'status'; status: HubStatus }
  | { type: 'pub'; pub: Publication }
  | { type: 'subscribed'; event: SubscribedEvent }
  | { type: 'resync'; event: ResyncEvent }
  | { type: 'error'; error: HeraldError }
  | { type: 'published'; req: number; ok: boolean; position: Position | null; error: HeraldError | null }
  /** A token request: for the connection (`channel` null), or a subscription token for `channel`. */
  | { type: 'token'; req: number; channel: string | null }
  | { type: 'outbox' }
  | { type: 'presence'; req: number; clients: PresenceClient[] | null; error: HeraldError | null }
  | { type: 'joinLeave'; event: JoinLeaveEvent }
  | { type: 'fallback'; event: FallbackEvent };

/** The status as the hub knows it; each tab adds what only it knows. */
export type HubStatus = Omit<Status, 'isLeader' | 'mode'>;

/** An envelope on a shared medium (BroadcastChannel, MessagePort). */
export interface Envelope<M> {
  herald: typeof PROTOCOL_VERSION;
  /** The sender: a tab id or a hub id. */
  from: string;
  /** The receiver: a tab id, a hub id, or '*' for every tab. */
  to: string;
  msg: M;
}

export function envelope<M>(from: string, to: string, msg: M): Envelope<M> {
  return { herald: PROTOCOL_VERSION, from, to, msg };
}

/** An envelope of this protocol version with string addresses and a typed body, or null. */
export function openEnvelope(raw: unknown): Envelope<{ type: string }> | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const e = raw as Record<string, unknown>;
  if (e.herald !== PROTOCOL_VERSION || typeof e.from !== 'string' || typeof e.to !== 'string') return null;
  const msg = e.msg as Record<string, unknown> | null;
  if (typeof msg !== 'object' || msg === null || typeof msg.type !== 'string') return null;
  return e as unknown as Envelope<{ type: string }>;
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isChannel = (v: unknown): v is string => isStr(v) && v.length > 0 && v.length <= 1024;

/** Checks a message from a tab field by field; anything malformed is null. */
export function parseTabMessage(m: { type: string } & Record<string, unknown>): TabMessage | null {
  switch (m.type) {
    case 'hello': {
      const s = m.settings as Record<string, unknown> | undefined;
      if (!s || !isStr(s.url) || !isStr(s.scope) || !Array.isArray(s.transports) || !isNum(s.connectTimeoutMs)) return null;
      if (!isBool(m.hasToken) || !isBool(m.online) || !isBool(m.visible) || !isBool(m.wantConnect)) return null;
      if (m.skipped !== undefined && !Array.isArray(m.skipped)) return null;
      return m as unknown as TabMessage;
    }
    case 'attach':
      if (!isChannel(m.channel)) return null;
      return { type: 'attach', channel: m.channel, since: asPosition(m.since) };
    case 'detach':
      return isChannel(m.channel) ? { type: 'detach', channel: m.channel } : null;
    case 'publish':
      if (!isNum(m.req) || !isChannel(m.channel) || !(m.key === null || isStr(m.key))) return null;
      return { type: 'publish', req: m.req, channel: m.channel, data: m.data, key: m.key };
    case 'presence':
      return isNum(m.req) && isChannel(m.channel) ? { type: 'presence', req: m.req, channel: m.channel } : null;
    case 'network':
      return isBool(m.online) ? { type: 'network', online: m.online } : null;
    case 'visible':
      return isNum(m.hiddenMs) ? { type: 'visible', hiddenMs: m.hiddenMs } : null;
    case 'token':
      if (!isNum(m.req) || !(m.token === null || isStr(m.token)) || !(m.error === null || isStr(m.error))) return null;
      return { type: 'token', req: m.req, token: m.token, error: m.error };
    case 'outbox':
    case 'connect':
    case 'disconnect':
    case 'bye':
      return { type: m.type };
    default:
      return null;
  }
}

/** Checks a message from a hub; anything malformed is null. */
export function parseHubMessage(m: { type: string } & Record<string, unknown>): HubMessage | null {
  switch (m.type) {
    case 'welcome':
      return isStr(m.hub) ? { type: 'welcome', hub: m.hub } : null;
    case 'status':
      return typeof m.status === 'object' && m.status !== null && isStr((m.status as HubStatus).state)
        ? (m as unknown as HubMessage)
        : null;
    case 'pub': {
      const p = m.pub as Record<string, unknown> | undefined;
      if (!p || !isChannel(p.channel) || !(p.offset === undefined || isNum(p.offset))) return null;
      return m as unknown as HubMessage;
    }
    case 'subscribed':
    case 'resync': {
      const e = m.event as Record<string, unknown> | undefined;
      return e && isChannel(e.channel) ? (m as unknown as HubMessage) : null;
    }
    case 'error': {
      const e = m.error as Record<string, unknown> | undefined;
      return e && isStr(e.kind) && isStr(e.message) ? (m as unknown as HubMessage) : null;
    }
    case 'published':
      return isNum(m.req) && isBool(m.ok) ? (m as unknown as HubMessage) : null;
    case 'token':
      if (!isNum(m.req) || !(m.channel === null || m.channel === undefined || isChannel(m.channel))) return null;
      return { type: 'token', req: m.req, channel: (m.channel as string | undefined) ?? null };
    case 'outbox':
      return { type: 'outbox' };
    case 'presence':
      return isNum(m.req) && (m.clients === null || Array.isArray(m.clients)) ? (m as unknown as HubMessage) : null;
    case 'joinLeave': {
      const e = m.event as Record<string, unknown> | undefined;
      return e && isChannel(e.channel) && (e.kind === 'join' || e.kind === 'leave') && typeof e.info === 'object' && e.info !== null
        ? (m as unknown as HubMessage)
        : null;
    }
    case 'fallback': {
      const e = m.event as Record<string, unknown> | undefined;
      return e && isStr(e.from) && isStr(e.to) && isNum(e.retryAt) && isNum(e.waitedMs) ? (m as unknown as HubMessage) : null;
    }
    default:
      return null;
  }
}
