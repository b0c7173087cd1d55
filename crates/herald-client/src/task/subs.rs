//! Subscriptions inside the connection task: subscribing and resubscribing with
//! recovery, ordered delivery into each subscription's buffer, token refresh, and the
//! slow-consumer policy (unsubscribe on a full buffer, resubscribe once it drained).

use super::{Internal, Task, TokenPurpose, refresh_delay, refresh_retry_delay};
use crate::backoff::Backoff;
use crate::calls::{ReplyTx, Waiter, into_result};
use crate::config::{SubscribeOptions, TokenRefresher};
use crate::error::ClientError;
use crate::event::{SubscriptionEvent, subscription_error_code, unsubscribed_code};
use crate::tracker::{Tracker, Verdict};
use herald_protocol::{
    Command, ErrorCode, FLAG_REJECT_UNRECOVERED, Publication, Reply, SubRefreshRequest,
    SubscribeRequest, SubscribeResult, UnsubscribeRequest,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Buffer slots publications may not use, so that a final `Unsubscribed` or `Error`
/// still reaches a consumer whose buffer filled up with publications.
const CONTROL_RESERVE: usize = 8;

/// Where a subscription is with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Needs a subscribe (when connected and `retry_at` has passed).
    Pending,
    /// Waiting for the subscription token refresher.
    FetchingToken,
    /// The subscribe command is out.
    Subscribing,
    /// Publications flow.
    Subscribed,
    /// The consumer's buffer filled up: unsubscribed, waiting for it to drain.
    Overflowed,
}

/// One subscription as the task sees it.
pub(crate) struct SubEntry {
    /// Tells this subscription apart from an earlier one of the same channel.
    key: u64,
    events: mpsc::Sender<SubscriptionEvent>,
    token: String,
    refresher: Option<TokenRefresher>,
    reject_unrecovered: bool,
    tracker: Tracker,
    phase: Phase,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// When to fetch a new subscription token.
    refresh_at: Option<Instant>,
}

impl SubEntry {
    fn on_server(&self) -> bool {
        matches!(self.phase, Phase::Subscribing | Phase::Subscribed)
    }

    /// The sweep has work for this subscription soon: a resubscribe once its consumer
    /// has drained the buffer, or (while connected) a subscribe to retry.
    pub(super) fn needs_sweep(&self, authenticated: bool) -> bool {
        match self.phase {
            Phase::Overflowed => true,
            Phase::Pending => authenticated,
            _ => false,
        }
    }
}

#[derive(Clone, Copy)]
enum Sent {
    Queued,
    Full,
    Gone,
}

fn send(
    events: &mpsc::Sender<SubscriptionEvent>,
    event: SubscriptionEvent,
    reserve: usize,
) -> Sent {
    if events.is_closed() {
        return Sent::Gone;
    }
    if events.capacity() <= reserve {
        return Sent::Full;
    }
    match events.try_send(event) {
        Ok(()) => Sent::Queued,
        Err(TrySendError::Full(_)) => Sent::Full,
        Err(TrySendError::Closed(_)) => Sent::Gone,
    }
}

/// The error and its causes on one line, for an event message.
fn describe(e: &ClientError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Task {
    pub(super) fn on_subscribe_control(
        &mut self,
        channel: String,
        key: u64,
        options: SubscribeOptions,
        events: mpsc::Sender<SubscriptionEvent>,
        ack: oneshot::Sender<Result<(), ClientError>>,
    ) {
        if self.subs.contains_key(&channel) {
            let _ = ack.send(Err(ClientError::AlreadySubscribed { channel }));
            return;
        }
        let SubscribeOptions {
            since,
            token,
            token_refresher,
            reject_unrecovered,
        } = options;
        let entry = SubEntry {
            key,
            events,
            token: token.unwrap_or_default(),
            refresher: token_refresher,
            reject_unrecovered,
            tracker: Tracker::new(since),
            phase: Phase::Pending,
            retry_at: None,
            backoff: Backoff::new(self.cfg.min_backoff, self.cfg.max_backoff),
            refresh_at: None,
        };
        self.subs.insert(channel.clone(), entry);
        let _ = ack.send(Ok(()));
        self.try_subscribe(&channel, Instant::now());
    }

    pub(super) fn on_unsubscribe_control(
        &mut self,
        channel: &str,
        key: u64,
        reply: Option<ReplyTx>,
    ) {
        if self.subs.get(channel).is_none_or(|e| e.key != key) {
            // Already ended (or a newer subscription of the channel, which stays).
            if let Some(reply) = reply {
                let _ = reply.send(Ok(Reply::default()));
            }
            return;
        }
        let Some(entry) = self.subs.remove(channel) else {
            return;
        };
        if reply.is_some() {
            let _ = entry.events.try_send(SubscriptionEvent::Unsubscribed {
                code: unsubscribed_code::UNSUBSCRIBE_CALLED,
                reason: "unsubscribe called".to_owned(),
            });
        }
        if entry.on_server() && self.authenticated() {
            let waiter = reply.map_or(Waiter::Unsubscribe, Waiter::User);
            self.send_unsubscribe(channel, waiter);
        } else if let Some(reply) = reply {
            let _ = reply.send(Ok(Reply::default()));
        }
    }

    fn send_unsubscribe(&mut self, channel: &str, waiter: Waiter) {
        let id = self
            .calls
            .register(waiter, Instant::now() + self.cfg.timeout);
        self.write(&Command {
            id,
            unsubscribe: Some(UnsubscribeRequest {
                channel: channel.to_owned(),
            }),
            ..Command::default()
        });
    }

    /// Subscribes every pending subscription whose retry time has come.
    pub(super) fn subscribe_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, e)| e.phase == Phase::Pending && e.retry_at.is_none_or(|t| t <= now))
            .map(|(c, _)| c.clone())
            .collect();
        for channel in due {
            self.try_subscribe(&channel, now);
        }
    }

    fn try_subscribe(&mut self, channel: &str, now: Instant) {
        if !self.authenticated() {
            return;
        }
        let timeout = self.cfg.timeout;
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        if entry.phase != Phase::Pending || entry.retry_at.is_some_and(|t| t > now) {
            return;
        }
        entry.retry_at = None;
        if entry.token.is_empty()
            && let Some(refresher) = entry.refresher.clone()
        {
            entry.phase = Phase::FetchingToken;
            let (channel, key) = (channel.to_owned(), entry.key);
            self.spawn_token_fetch(refresher, move |result| Internal::SubToken {
                channel,
                key,
                purpose: TokenPurpose::Subscribe,
                result,
            });
            return;
        }
        let mut request = SubscribeRequest {
            channel: channel.to_owned(),
            token: entry.token.clone(),
            ..SubscribeRequest::default()
        };
        if let Some(position) = entry.tracker.recovery() {
            request.recover = true;
            request.offset = position.offset;
            request.epoch = position.epoch.clone();
        }
        if entry.reject_unrecovered {
            request.flag |= FLAG_REJECT_UNRECOVERED;
        }
        entry.phase = Phase::Subscribing;
        let waiter = Waiter::Subscribe {
            channel: channel.to_owned(),
            key: entry.key,
        };
        let id = self.calls.register(waiter, now + timeout);
        self.write(&Command {
            id,
            subscribe: Some(request),
            ..Command::default()
        });
    }

    pub(super) fn on_subscribe_reply(&mut self, channel: &str, key: u64, reply: Reply) {
        if !self
            .subs
            .get(channel)
            .is_some_and(|e| e.key == key && e.phase == Phase::Subscribing)
        {
            return;
        }
        match into_result(reply) {
            Ok(reply) => self.on_subscribed(channel, reply.subscribe.unwrap_or_default()),
            Err(ClientError::Server {
                code,
                message,
                temporary,
            }) => self.on_subscribe_error(channel, code, message, temporary),
            Err(other) => self.on_subscribe_error(channel, 0, describe(&other), true),
        }
    }

    fn on_subscribe_error(&mut self, channel: &str, code: u32, message: String, temporary: bool) {
        tracing::debug!(channel, code, message, "subscribe failed");
        let now = Instant::now();
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        let event = SubscriptionEvent::Error { code, message };
        let token_expired = code == ErrorCode::TokenExpired.code();
        if token_expired && entry.refresher.is_some() {
            entry.token.clear();
            entry.phase = Phase::Pending;
            let _ = send(&entry.events, event, 0);
            self.try_subscribe(channel, now);
        } else if !token_expired && (temporary || code < 100) {
            entry.phase = Phase::Pending;
            entry.retry_at = Some(now + entry.backoff.next_delay());
            let _ = send(&entry.events, event, 0);
        } else {
            // Permission denied, unrecoverable position with reject_unrecovered, an
            // expired token nobody can refresh...: retrying cannot help.
            self.end_subscription(channel, event, false);
        }
    }

    fn on_subscribed(&mut self, channel: &str, mut result: SubscribeResult) {
        let now = Instant::now();
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        let accepted = entry.tracker.on_subscribed(&mut result);
        entry.phase = Phase::Subscribed;
        entry.backoff.reset();
        entry.refresh_at =
            (result.expires && entry.refresher.is_some()).then(|| now + refresh_delay(result.ttl));
        let subscribed = SubscriptionEvent::Subscribed {
            recovered: result.recovered,
            was_recovering: result.was_recovering,
            position: accepted.position,
            recoverable: result.recoverable,
        };
        let mut outcome = send(&entry.events, subscribed, 0);
        if matches!(outcome, Sent::Queued) {
            for publication in accepted.publications {
                let offset = publication.offset;
                outcome = send(
                    &entry.events,
                    SubscriptionEvent::Publication(publication),
                    CONTROL_RESERVE,
                );
                match outcome {
                    Sent::Queued => entry.tracker.delivered(offset),
                    _ => break,
                }
            }
        }
        self.after_send(channel, outcome);
    }

    pub(super) fn on_publication(&mut self, channel: &str, publication: Publication) {
        let Some(entry) = self.subs.get_mut(channel) else {
            tracing::trace!(channel, "publication for a channel without a subscription");
            return;
        };
        if entry.phase != Phase::Subscribed {
            // Left over from before a resubscribe; recovery brings it back in order.
            return;
        }
        match entry.tracker.check(&publication) {
            Verdict::Duplicate => {
                tracing::trace!(channel, offset = publication.offset, "duplicate dropped");
            }
            Verdict::Gap => {
                tracing::debug!(
                    channel,
                    offset = publication.offset,
                    have = entry.tracker.position().offset,
                    "gap in publications; resubscribing with recovery"
                );
                self.resubscribe(channel);
            }
            Verdict::Deliver => {
                let offset = publication.offset;
                let outcome = send(
                    &entry.events,
                    SubscriptionEvent::Publication(publication),
                    CONTROL_RESERVE,
                );
                if matches!(outcome, Sent::Queued) {
                    entry.tracker.delivered(offset);
                }
                self.after_send(channel, outcome);
            }
        }
    }

    fn after_send(&mut self, channel: &str, outcome: Sent) {
        match outcome {
            Sent::Queued => {}
            Sent::Full => self.overflow(channel),
            Sent::Gone => self.forget(channel),
        }
    }

    /// Drops the server-side subscription and subscribes again from the last delivered
    /// position; commands on one socket are handled in order, so the unsubscribe lands
    /// before the subscribe.
    fn resubscribe(&mut self, channel: &str) {
        let authenticated = self.authenticated();
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        let on_server = entry.on_server();
        entry.phase = Phase::Pending;
        entry.retry_at = None;
        if on_server && authenticated {
            self.send_unsubscribe(channel, Waiter::Unsubscribe);
        }
        self.try_subscribe(channel, Instant::now());
    }

    /// The consumer is too slow: stop receiving rather than block the socket or skip
    /// publications; the sweep resubscribes with recovery once the buffer has drained.
    fn overflow(&mut self, channel: &str) {
        let authenticated = self.authenticated();
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        tracing::warn!(
            channel,
            offset = entry.tracker.position().offset,
            "subscription buffer full; unsubscribing until the consumer catches up"
        );
        let on_server = entry.on_server();
        entry.phase = Phase::Overflowed;
        if on_server && authenticated {
            self.send_unsubscribe(channel, Waiter::Unsubscribe);
        }
    }

    /// The consumer dropped its handle.
    fn forget(&mut self, channel: &str) {
        if let Some(entry) = self.subs.remove(channel)
            && entry.on_server()
            && self.authenticated()
        {
            self.send_unsubscribe(channel, Waiter::Unsubscribe);
        }
    }

    /// Ends a subscription for good with a last event.
    fn end_subscription(&mut self, channel: &str, event: SubscriptionEvent, unsubscribe: bool) {
        let Some(entry) = self.subs.remove(channel) else {
            return;
        };
        let _ = entry.events.try_send(event);
        if unsubscribe && entry.on_server() && self.authenticated() {
            self.send_unsubscribe(channel, Waiter::Unsubscribe);
        }
    }

    pub(super) fn on_unsubscribe_push(&mut self, channel: &str, code: u32, reason: String) {
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        if !entry.on_server() {
            return;
        }
        tracing::debug!(channel, code, %reason, "unsubscribed by the server");
        if code < 2500 {
            self.end_subscription(
                channel,
                SubscriptionEvent::Unsubscribed { code, reason },
                false,
            );
            return;
        }
        // 2501: the subscription token expired, so the resubscribe needs a new one.
        if code == 2501 && entry.refresher.is_some() {
            entry.token.clear();
        }
        entry.phase = Phase::Pending;
        entry.retry_at = None;
        self.try_subscribe(channel, Instant::now());
    }

    /// After a socket ends every subscription must subscribe again on the next one.
    pub(super) fn reset_subs(&mut self) {
        for entry in self.subs.values_mut() {
            if entry.on_server() {
                entry.phase = Phase::Pending;
                entry.retry_at = None;
            }
            entry.refresh_at = None;
        }
    }

    pub(super) fn sweep_subs(&mut self, now: Instant) {
        let mut gone = Vec::new();
        let mut due = Vec::new();
        let mut refresh = Vec::new();
        for (channel, entry) in &mut self.subs {
            if entry.events.is_closed() {
                gone.push(channel.clone());
                continue;
            }
            match entry.phase {
                Phase::Overflowed if entry.events.capacity() >= entry.events.max_capacity() / 2 => {
                    tracing::debug!(channel, "consumer caught up; resubscribing with recovery");
                    entry.phase = Phase::Pending;
                    entry.retry_at = None;
                    due.push(channel.clone());
                }
                Phase::Pending if entry.retry_at.is_none_or(|t| t <= now) => {
                    due.push(channel.clone());
                }
                Phase::Subscribed if entry.refresh_at.is_some_and(|t| t <= now) => {
                    entry.refresh_at = None;
                    if let Some(refresher) = entry.refresher.clone() {
                        refresh.push((channel.clone(), entry.key, refresher));
                    }
                }
                _ => {}
            }
        }
        for channel in gone {
            self.forget(&channel);
        }
        for channel in due {
            self.try_subscribe(&channel, now);
        }
        for (channel, key, refresher) in refresh {
            self.spawn_token_fetch(refresher, move |result| Internal::SubToken {
                channel,
                key,
                purpose: TokenPurpose::Refresh,
                result,
            });
        }
    }

    pub(super) fn on_sub_token(
        &mut self,
        channel: &str,
        key: u64,
        purpose: TokenPurpose,
        result: Result<String, ClientError>,
    ) {
        let now = Instant::now();
        let authenticated = self.authenticated();
        let Some(entry) = self.subs.get_mut(channel).filter(|e| e.key == key) else {
            return;
        };
        match (purpose, result) {
            (TokenPurpose::Subscribe, Ok(token)) => {
                entry.token = token;
                if entry.phase == Phase::FetchingToken {
                    entry.phase = Phase::Pending;
                    self.try_subscribe(channel, now);
                }
            }
            (TokenPurpose::Subscribe, Err(e)) => {
                let event = SubscriptionEvent::Error {
                    code: subscription_error_code::TOKEN,
                    message: describe(&e),
                };
                if entry.phase == Phase::FetchingToken {
                    entry.phase = Phase::Pending;
                    entry.retry_at = Some(now + entry.backoff.next_delay());
                }
                let _ = send(&entry.events, event, 0);
            }
            (TokenPurpose::Refresh, Ok(token)) => {
                entry.token = token.clone();
                if entry.phase == Phase::Subscribed && authenticated {
                    let waiter = Waiter::SubRefresh {
                        channel: channel.to_owned(),
                        key,
                    };
                    let id = self.calls.register(waiter, now + self.cfg.timeout);
                    self.write(&Command {
                        id,
                        sub_refresh: Some(SubRefreshRequest {
                            channel: channel.to_owned(),
                            token,
                        }),
                        ..Command::default()
                    });
                }
            }
            (TokenPurpose::Refresh, Err(e)) => {
                entry.refresh_at = Some(now + refresh_retry_delay());
                let event = SubscriptionEvent::Error {
                    code: subscription_error_code::TOKEN,
                    message: describe(&e),
                };
                let _ = send(&entry.events, event, 0);
            }
        }
    }

    pub(super) fn on_sub_refresh_reply(&mut self, channel: &str, key: u64, reply: Reply) {
        let now = Instant::now();
        let Some(entry) = self.subs.get_mut(channel).filter(|e| e.key == key) else {
            return;
        };
        match into_result(reply) {
            Ok(reply) => {
                let result = reply.sub_refresh.unwrap_or_default();
                if result.expires {
                    entry.refresh_at = Some(now + refresh_delay(result.ttl));
                }
            }
            Err(ClientError::Server {
                code,
                message,
                temporary,
            }) if !temporary && code >= 100 => {
                self.end_subscription(channel, SubscriptionEvent::Error { code, message }, true);
            }
            Err(e) => {
                entry.refresh_at = Some(now + refresh_retry_delay());
                let code = match &e {
                    ClientError::Server { code, .. } => *code,
                    _ => subscription_error_code::TOKEN,
                };
                let event = SubscriptionEvent::Error {
                    code,
                    message: describe(&e),
                };
                let _ = send(&entry.events, event, 0);
            }
        }
    }
}
