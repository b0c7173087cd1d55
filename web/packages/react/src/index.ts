//! `@herald/react`: React bindings for Herald.

export { HeraldProvider, useConnectionStatus, useHerald, useOutbox, useSubscription } from './context.js';
export type { UseSubscriptionOptions } from './context.js';
export { useEditConflict, useEntityEvents, useLiveEntity, useLiveList } from './entities.js';
export type { EditConflict, EntityEventsScope, LiveEntity, LiveList } from './entities.js';
export { ConnectionStatus, EditConflictBanner, LiveUpdateToast, LiveUpdateToasts, STATE_LABELS, describeStatus } from './components.js';
export type { LiveUpdateToastItem } from './components.js';
export { usePresence } from './presence.js';
export type { Presence } from './presence.js';
export { entityEventsMiddleware, syncQueryClient } from './adapters.js';
export type { EntityEventAction, EntityResyncAction, QueryClientLike } from './adapters.js';
