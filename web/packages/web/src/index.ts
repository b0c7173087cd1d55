//! `@herald/web`: Herald in the browser.

export { createHerald } from './client.js';
export { applyEntityEvent, asEntityEvent, entityChannel } from './entities.js';
export type { Audience, EntityAction, EntityEvent, EntityScope, Versioned } from './entities.js';
export type {
  ConnectionState,
  EnqueueOptions,
  EnqueueResult,
  FallbackEvent,
  Herald,
  HeraldError,
  HeraldErrorKind,
  HeraldEvents,
  HeraldOptions,
  JoinLeaveEvent,
  PresenceClient,
  Observable,
  Outbox,
  OutboxItem,
  OutboxOptions,
  OutboxStatus,
  Position,
  Publication,
  ReconnectOptions,
  ResyncEvent,
  ResyncReason,
  ShareMode,
  Status,
  SubscribedEvent,
  SubscribeOptions,
  TransportEndpoint,
  TransportName,
  TransportSkip,
} from './types.js';
