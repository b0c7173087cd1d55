//! Command ids: allocating them and matching replies back to whoever is waiting.

use crate::error::ClientError;
use herald_protocol::Reply;
use std::collections::HashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Where an application call's reply goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Reply, ClientError>>;

/// Who is waiting for the reply to a command.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// An application call (publish, history, ...).
    User(ReplyTx),
    /// The `connect` command of the current socket.
    Connect,
    /// A subscribe for the subscription with this key.
    Subscribe { channel: String, key: u64 },
    /// An unsubscribe the SDK sent itself (gap, overflow, dropped handle): nobody waits.
    Unsubscribe,
    /// A connection token refresh.
    Refresh,
    /// A subscription token refresh.
    SubRefresh { channel: String, key: u64 },
}

#[derive(Debug)]
struct Pending {
    waiter: Waiter,
    deadline: Instant,
}

/// The commands written on the current socket that still wait for a reply.
#[derive(Debug)]
pub(crate) struct Calls {
    next_id: u32,
    pending: HashMap<u32, Pending>,
}

impl Calls {
    pub(crate) fn new() -> Self {
        Self {
            next_id: 1,
            pending: HashMap::new(),
        }
    }

    /// Allocates an id for a command about to be written. Ids are never 0 (0 means "no
    /// reply expected") and never one still in flight, even after the counter wraps.
    pub(crate) fn register(&mut self, waiter: Waiter, deadline: Instant) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.pending.entry(id) {
                slot.insert(Pending { waiter, deadline });
                return id;
            }
        }
    }

    /// The waiter for a reply's id, removed; `None` for an unknown or already answered id.
    pub(crate) fn resolve(&mut self, id: u32) -> Option<Waiter> {
        self.pending.remove(&id).map(|p| p.waiter)
    }

    /// Forgets application calls whose caller stopped waiting, and returns the SDK's own
    /// commands that are past their deadline (a sign the connection is stuck).
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<Waiter> {
        let mut expired = Vec::new();
        self.pending.retain(|_, p| match &p.waiter {
            Waiter::User(tx) => !tx.is_closed(),
            // Nothing depends on the reply to an unsubscribe the SDK sent itself.
            Waiter::Unsubscribe => p.deadline > now,
            _ => true,
        });
        let ids: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now && !matches!(p.waiter, Waiter::User(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                expired.push(p.waiter);
            }
        }
        expired
    }

    /// The socket is gone: no reply will come. Application calls learn that their command
    /// may or may not have been applied; the SDK's own commands are simply dropped, the
    /// reconnect redoes them.
    pub(crate) fn fail_all(&mut self) {
        for (_, p) in self.pending.drain() {
            if let Waiter::User(tx) = p.waiter {
                let _ = tx.send(Err(ClientError::Interrupted));
            }
        }
        self.next_id = 1;
    }

    /// No command is waiting for its reply.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// Turns an error reply into a [`ClientError::Server`], leaving a result reply as is.
pub(crate) fn into_result(mut reply: Reply) -> Result<Reply, ClientError> {
    match reply.error.take() {
        Some(e) => Err(ClientError::from_wire(e)),
        None => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::{PublishResult, decode_replies};
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn ids_start_at_one_and_are_unique() {
        let mut calls = Calls::new();
        let a = calls.register(Waiter::Connect, later());
        let b = calls.register(Waiter::Refresh, later());
        assert_eq!((a, b), (1, 2));
        assert_eq!(calls.len(), 2);
    }

    #[tokio::test]
    async fn replies_in_any_order_reach_their_callers() {
        let mut calls = Calls::new();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let id1 = calls.register(Waiter::User(tx1), later());
        let id2 = calls.register(Waiter::User(tx2), later());
        // One server frame answering both commands, second one first, plus a ping.
        let frame = format!(
            "{{\"id\":{id2},\"error\":{{\"code\":103,\"message\":\"permission denied\"}}}}\n{{}}\n{{\"id\":{id1},\"publish\":{{}}}}"
        );
        for reply in decode_replies(&frame).expect("valid frame") {
            if reply.id == 0 {
                assert!(reply.is_ping());
                continue;
            }
            match calls.resolve(reply.id) {
                Some(Waiter::User(tx)) => {
                    let _ = tx.send(into_result(reply));
                }
                other => panic!("unexpected waiter {other:?}"),
            }
        }
        let r1 = rx1.await.expect("answered").expect("ok");
        assert_eq!(r1.publish, Some(PublishResult::default()));
        match rx2.await.expect("answered") {
            Err(ClientError::Server { code: 103, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(calls.len(), 0);
        // A duplicate or unknown id matches nothing.
        assert!(calls.resolve(id1).is_none());
        assert!(calls.resolve(999).is_none());
    }

    #[test]
    fn wrapping_skips_zero_and_ids_in_flight() {
        let mut calls = Calls::new();
        let first = calls.register(Waiter::Connect, later());
        assert_eq!(first, 1);
        calls.next_id = u32::MAX;
        assert_eq!(calls.register(Waiter::Refresh, later()), u32::MAX);
        // 0 is skipped, 1 is still in flight, so the next id is 2.
        assert_eq!(calls.register(Waiter::Refresh, later()), 2);
    }

    #[tokio::test]
    async fn fail_all_interrupts_callers_and_restarts_ids() {
        let mut calls = Calls::new();
        let (tx, rx) = oneshot::channel();
        calls.register(Waiter::User(tx), later());
        calls.register(Waiter::Connect, later());
        calls.fail_all();
        assert!(matches!(rx.await, Ok(Err(ClientError::Interrupted))));
        assert_eq!(calls.len(), 0);
        assert_eq!(calls.register(Waiter::Connect, later()), 1);
    }

    #[tokio::test]
    async fn sweep_drops_abandoned_calls_and_reports_stuck_commands() {
        let mut calls = Calls::new();
        let now = Instant::now();
        let (tx, rx) = oneshot::channel();
        calls.register(Waiter::User(tx), now);
        let (live_tx, _live_rx) = oneshot::channel();
        calls.register(Waiter::User(live_tx), now);
        calls.register(
            Waiter::Subscribe {
                channel: "c".into(),
                key: 1,
            },
            now,
        );
        calls.register(Waiter::Refresh, now + Duration::from_secs(5));
        drop(rx);
        let expired = calls.sweep(now);
        assert!(matches!(
            expired.as_slice(),
            [Waiter::Subscribe { key: 1, .. }]
        ));
        // The live caller (its own timeout decides) and the refresh not yet due remain.
        assert_eq!(calls.len(), 2);
    }
}
