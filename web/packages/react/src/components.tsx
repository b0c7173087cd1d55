//! Components: a connection status for users, and "updated by another user" toasts.

import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';
import type { ConnectionState, EntityEvent, Status } from '@herald/web';
import type { EditConflict } from './entities.js';
import { useConnectionStatus } from './context.js';
import { useEntityEvents, type EntityEventsScope } from './entities.js';

/** The default words for each state. */
export const STATE_LABELS: Record<ConnectionState, string> = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  disconnected: 'Disconnected',
  failed: 'Connection failed',
};

/** The details of a status in a sentence: the reason and when the next attempt is due. */
export function describeStatus(status: Status, now = Date.now()): string {
  const parts: string[] = [];
  if (status.reason) parts.push(`${status.reason.message} (${status.reason.code})`);
  if (status.nextRetryAt !== null) parts.push(`next try in ${Math.max(0, Math.ceil((status.nextRetryAt - now) / 1000))} s`);
  if (status.state === 'connected' && status.latencyMs !== null) parts.push(`${Math.round(status.latencyMs)} ms round trip`);
  // A fallback transport is worth knowing about: WebSocket is blocked somewhere on the way.
  if (status.state === 'connected' && (status.transport === 'http_stream' || status.transport === 'sse')) {
    parts.push(status.transport === 'sse' ? 'over server-sent events' : 'over HTTP streaming');
  }
  if (status.tabs > 1) parts.push(`shared by ${status.tabs} tabs`);
  return parts.join('; ');
}

/**
 * A badge and a label for the connection's state, announced to screen readers
 * (`aria-live`), with the reason and the next retry in its tooltip. Unstyled: style it
 * through `className` and `data-state`, or import `@herald/react/styles.css`.
 */
export function ConnectionStatus({ labels = STATE_LABELS, className }: { labels?: Partial<Record<ConnectionState, string>>; className?: string }) {
  const status = useConnectionStatus();
  // Re-render once a second while a retry is scheduled, so the countdown stays true.
  const [, tick] = useState(0);
  useEffect(() => {
    if (status.nextRetryAt === null) return;
    const t = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(t);
  }, [status.nextRetryAt]);
  const label = labels[status.state] ?? STATE_LABELS[status.state];
  return (
    <span className={className ?? 'herald-status'} data-state={status.state} role="status" aria-live="polite" title={describeStatus(status)}>
      <span className="herald-status-badge" aria-hidden="true" />
      <span className="herald-status-label">{label}</span>
    </span>
  );
}

/** One toast: an entity event by someone else. */
export interface LiveUpdateToastItem<T = unknown> {
  key: string;
  event: EntityEvent<T>;
}

/**
 * Toasts for changes that other users make to the scope's entities ("Updated by bob"),
 * stacked, each with Refresh and Dismiss, each gone after `timeoutMs` (10 s). Changes
 * made by `me` show none, and neither do changes at or below `since`, the version the
 * page shows (a subscription that resumes replays changes the page loaded already).
 */
export function LiveUpdateToasts<T = unknown>({
  scope,
  me,
  since,
  onRefresh,
  timeoutMs = 10_000,
  render,
  className,
}: {
  scope: EntityEventsScope;
  me: string;
  /** The version on screen; older and equal versions never toast. Undefined: toast every change. */
  since?: number;
  onRefresh?: (event: EntityEvent<T>) => void;
  timeoutMs?: number;
  /** The toast's message; "Updated by bob" (or created/deleted) by default. */
  render?: (event: EntityEvent<T>) => ReactNode;
  className?: string;
}) {
  const [toasts, setToasts] = useState<LiveUpdateToastItem<T>[]>([]);
  const timers = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  const dismiss = useCallback((key: string) => {
    const t = timers.current.get(key);
    if (t) clearTimeout(t);
    timers.current.delete(key);
    setToasts((list) => list.filter((x) => x.key !== key));
  }, []);
  useEffect(() => () => {
    for (const t of timers.current.values()) clearTimeout(t);
  }, []);
  useEntityEvents<T>(scope, (event) => {
    if (event.actor === me || (since !== undefined && event.version <= since)) return;
    const key = `${event.entity_type}.${event.entity_id}.${event.version}`;
    setToasts((list) => (list.some((x) => x.key === key) ? list : [...list, { key, event }]));
    if (!timers.current.has(key)) timers.current.set(key, setTimeout(() => dismiss(key), timeoutMs));
  });
  if (toasts.length === 0) return null;
  return (
    <div className={className ?? 'herald-toasts'} role="region" aria-live="polite" aria-label="Live updates">
      {toasts.map(({ key, event }) => (
        <div key={key} className="herald-toast" role="status" data-action={event.action}>
          <span className="herald-toast-text">{render ? render(event) : defaultMessage(event)}</span>
          {onRefresh && event.action !== 'deleted' ? (
            <button type="button" onClick={() => { onRefresh(event); dismiss(key); }}>Refresh</button>
          ) : null}
          <button type="button" onClick={() => dismiss(key)}>Dismiss</button>
        </div>
      ))}
    </div>
  );
}

function defaultMessage(event: EntityEvent): string {
  const who = event.actor || 'someone';
  return `${event.action[0]?.toUpperCase()}${event.action.slice(1)} by ${who}`;
}

/** The name for the toast stack: the same component. */
export const LiveUpdateToast = LiveUpdateToasts;

/**
 * The banner for {@link useEditConflict}'s result: who saved (or deleted) the entity
 * being edited and when, with Reload and Keep editing. Renders nothing without a conflict.
 */
export function EditConflictBanner<T = unknown>({
  conflict,
  onReload,
  className,
}: {
  conflict: EditConflict<T> | null;
  onReload: () => void;
  className?: string;
}) {
  if (!conflict) return null;
  const { event } = conflict;
  const who = event.actor || 'Someone';
  const when = new Date(event.timestamp).toLocaleTimeString();
  return (
    <div role="alert" className={className ?? 'herald-conflict'} data-action={event.action}>
      <span>
        {event.action === 'deleted'
          ? `${who} deleted this at ${when}.`
          : `${who} saved this at ${when} (version ${event.version}). Saving now will fail.`}
      </span>
      <button type="button" onClick={onReload}>Reload</button>
      <button type="button" onClick={conflict.dismiss}>Keep editing</button>
    </div>
  );
}
