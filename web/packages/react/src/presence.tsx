//! Who is here: a channel's presence, kept current by join/leave and a slow refresh.

import { useCallback, useEffect, useRef, useState } from 'react';
import type { HeraldError, PresenceClient } from '@herald/web';
import { useHerald, useSubscription } from './context.js';

/** What {@link usePresence} keeps. */
export interface Presence {
  /** The clients subscribed to the channel (one per connection, so one per browser). */
  clients: readonly PresenceClient[];
  /** Their distinct users, sorted. */
  users: readonly string[];
  error: HeraldError | null;
}

/**
 * Subscribes to `channel` while mounted and keeps its presence: who is looking at a page,
 * who is editing an entity (subscribe everyone who edits it to a channel of its own). The
 * namespace needs `presence` and `allow_presence_for_subscriber`; with `join_leave` it
 * updates at once, otherwise every `refreshMs`.
 */
export function usePresence(channel: string | null | undefined, options: { enabled?: boolean; refreshMs?: number } = {}): Presence {
  const herald = useHerald();
  const { enabled = true, refreshMs = 10_000 } = options;
  const [state, setState] = useState<Presence>({ clients: [], users: [], error: null });
  const latest = useRef(0);
  const refresh = useCallback(() => {
    if (!channel || !enabled) return;
    const call = ++latest.current;
    void herald.presence(channel).then((r) => {
      if (call !== latest.current) return;
      if (!r.ok) return setState((s) => ({ ...s, error: r.error }));
      const users = [...new Set(r.clients.map((c) => c.user))].sort();
      setState({ clients: r.clients, users, error: null });
    });
  }, [herald, channel, enabled]);
  useSubscription(channel, () => {}, { enabled, onSubscribed: refresh, onJoinLeave: refresh });
  useEffect(() => {
    if (!channel || !enabled) return;
    const t = setInterval(refresh, refreshMs);
    return () => clearInterval(t);
  }, [refresh, refreshMs, channel, enabled]);
  return state;
}
