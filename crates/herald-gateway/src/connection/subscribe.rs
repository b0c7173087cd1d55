//! Subscribing, with recovery: join the hub first, then read history, so that every
//! publication is either in the reply or arrives live afterwards; the writer drops
//! live ones the reply already carried.

use super::{Conn, Fail, Sub};
use crate::auth::TokenError;
use crate::channel::Channel;
use crate::hub::Subscriber;
use herald_broker::HistoryQuery;
use herald_protocol::{
    DeltaType, DisconnectCode, ErrorCode, FLAG_REJECT_UNRECOVERED, Filter, HistoryLimit, Position,
    RawJson, Reply, SubscribeRequest, SubscribeResult,
};
use std::sync::Arc;
use tokio::time::Instant;

/// How to subscribe one channel.
pub(super) struct SubOptions {
    pub recover: bool,
    pub offset: u64,
    pub epoch: String,
    pub reject_unrecovered: bool,
    /// The subscriber wants join/leave pushes (granted only where the namespace emits them).
    pub join_leave: bool,
    pub expires_at: Option<Instant>,
    pub ttl: u32,
    pub chan_info: Option<RawJson>,
    /// The delta compression asked for (already checked to be one Herald knows).
    pub delta: Option<DeltaType>,
    /// The subscription token's tag filter.
    pub token_filter: Option<Arc<Filter>>,
    /// The tag filter the client chose (already checked against the namespace).
    pub client_filter: Option<Arc<Filter>>,
    /// The sub_refresh hook extends the subscription when it expires.
    pub refreshed_by_proxy: bool,
    /// Conflation from the token or the subscribe hook (the namespace's otherwise).
    pub conflation: Option<crate::conflation::ConflationConfig>,
}

impl Conn {
    pub(super) async fn on_subscribe(&mut self, req: &SubscribeRequest) -> Result<Reply, Fail> {
        let config = self.node.config.clone();
        let ch = Channel::resolve(&config, &req.channel)?;
        // An unknown delta type is a client speaking another protocol version: like
        // any malformed command, it ends the connection.
        let delta = match req.delta.as_str() {
            "" => None,
            name => {
                Some(DeltaType::parse(name).ok_or(Fail::Disconnect(DisconnectCode::BadRequest))?)
            }
        };
        self.limit_channel(super::limits::Limit::Subscribes, &ch)?;
        if self.subs.contains_key(req.channel.as_str()) {
            return Err(ErrorCode::AlreadySubscribed.into());
        }
        if self.subs.len() >= config.client.max_channels {
            return Err(ErrorCode::LimitExceeded.into());
        }
        // A filter of the client's own, where the namespace allows one: a tree that is
        // not valid is a bad request.
        let client_filter = match &req.tf {
            None => None,
            Some(_) if !ch.ns.allow_tags_filter => return Err(ErrorCode::BadRequest.into()),
            Some(node) => Some(Arc::new(Filter::compile(node).map_err(|e| {
                tracing::debug!(error = %e, "tag filter refused");
                ErrorCode::BadRequest
            })?)),
        };
        let user = self.session.as_ref().map_or("", |s| &s.user).to_owned();
        let mut data = None;
        let mut refreshed_by_proxy = false;
        let mut conflation = None;
        let (expires, chan_info, token_filter) = if !req.token.is_empty() {
            match self.node.verifier.verify_subscription(&req.token).await {
                Ok(mut c) if c.channel == req.channel && c.sub == user => {
                    let filter = super::claimed_filter(c.tags_filter.as_ref()).map_err(|e| {
                        tracing::debug!(error = %e, "subscription token's tag filter refused");
                        ErrorCode::PermissionDenied
                    })?;
                    if let Some(problem) = c.conflation.as_ref().and_then(|c| c.problem()) {
                        tracing::debug!(problem, "subscription token's conflation refused");
                        return Err(ErrorCode::PermissionDenied.into());
                    }
                    conflation = c.conflation.take();
                    (c.expires_at(), c.info, filter)
                }
                Ok(_) => return Err(ErrorCode::PermissionDenied.into()),
                Err(TokenError::Expired) => return Err(ErrorCode::TokenExpired.into()),
                Err(e) if e.is_temporary() => {
                    tracing::debug!(error = %e, "subscription token not checked yet");
                    return Err(ErrorCode::Internal.into());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "subscription token refused");
                    return Err(ErrorCode::PermissionDenied.into());
                }
            }
        } else if ch.ns.subscribe_proxy {
            // The backend decides, except that a user-limited channel's list holds.
            if ch.excludes_user(&user) {
                return Err(ErrorCode::PermissionDenied.into());
            }
            let grant = self.authorize_by_proxy(req).await?;
            data = grant.data;
            conflation = grant.conflation;
            refreshed_by_proxy = ch.ns.sub_refresh_proxy && grant.expires.is_some();
            (grant.expires, grant.info, grant.filter)
        } else if ch.may_subscribe(&user) {
            (None, None, None)
        } else {
            return Err(ErrorCode::PermissionDenied.into());
        };
        if expires.is_some_and(|t| t <= crate::auth::unix_now()) {
            return Err(ErrorCode::TokenExpired.into());
        }
        let (expires_at, ttl) = crate::auth::expiry(expires);
        // A subscription the backend extends never asks the client for a token.
        let ttl = if refreshed_by_proxy { 0 } else { ttl };
        let opts = SubOptions {
            recover: req.recover,
            offset: req.offset,
            epoch: req.epoch.clone(),
            reject_unrecovered: req.flag & FLAG_REJECT_UNRECOVERED != 0,
            join_leave: req.join_leave,
            expires_at,
            ttl,
            chan_info,
            delta,
            token_filter,
            client_filter,
            refreshed_by_proxy,
            conflation,
        };
        let mut result = self.subscribe_channel(&req.channel, opts).await?;
        if data.is_some() {
            result.data = data;
        }
        Ok(Reply {
            subscribe: Some(result),
            ..Reply::default()
        })
    }

    /// Subscribes this connection to a channel it is allowed into.
    pub(super) async fn subscribe_channel(
        &mut self,
        channel: &str,
        opts: SubOptions,
    ) -> Result<SubscribeResult, Fail> {
        let config = self.node.config.clone();
        let ch = Channel::resolve(&config, channel)?;
        let ns = ch.ns;
        let info = self
            .client_info(opts.chan_info.clone())
            .ok_or(ErrorCode::Unauthorized)?;
        let session = self.session.as_ref().ok_or(ErrorCode::Unauthorized)?;
        // The namespace decides whether joins and leaves are announced; the subscriber
        // decides whether it receives them.
        let announce = ns.join_leave;
        let receive = opts.join_leave && ns.join_leave;
        // Patches chain publications by offset, so deltas need history; a type the
        // namespace does not allow is simply not granted (the reply says so).
        let delta = ns.history_enabled()
            && opts
                .delta
                .is_some_and(|t| ns.allowed_delta_types.contains(&t));
        let subscriber = Subscriber {
            conn: session.handle.clone(),
            info: info.clone(),
            join_leave: receive,
            presence: ns.presence,
            delta,
        };
        let hub = self.node.hub.clone();
        hub.subscribe(channel, subscriber).await.map_err(|e| {
            tracing::warn!(error = %herald_broker::Chain(&e), channel, "node subscription failed");
            ErrorCode::Internal
        })?;
        // Live publications reach this connection from here on; the history read must
        // start no earlier, or one published in between would fall in neither.
        let registered = Instant::now();

        let mut result = SubscribeResult {
            expires: opts.expires_at.is_some() && !opts.refreshed_by_proxy,
            ttl: opts.ttl,
            join_leave: receive,
            delta,
            ..SubscribeResult::default()
        };
        let mut sub = Sub {
            positioned: ns.history_enabled(),
            offset: 0,
            epoch: Arc::from(""),
            expires_at: opts.expires_at,
            announce_leave: announce,
            presence: ns.presence,
            chan_info: opts.chan_info,
            delta,
            delta_base: false,
            token_filter: opts.token_filter,
            client_filter: opts.client_filter,
            refreshed_by_proxy: opts.refreshed_by_proxy,
            conflation: opts
                .conflation
                .or_else(|| ns.conflation.clone())
                .map(|c| Box::new(crate::conflation::Conflation::new(&c))),
        };
        let session_filter = session.filter.clone();
        let session_origin = session.origin.clone();
        let excluding = || super::Excluding {
            filter: session_filter.as_deref(),
            origin: session_origin.as_deref(),
        };
        let filtered = excluding().any() || sub.filtered();
        if ns.history_enabled() {
            let query = if ns.latest_value {
                // Only the newest publication ever goes in the reply (the newest that
                // passes the filters, when there are any).
                HistoryQuery {
                    limit: HistoryLimit::at_most(if filtered { ns.history_size } else { 1 }),
                    reverse: true,
                    not_before: Some(registered),
                    ..HistoryQuery::default()
                }
            } else if opts.recover {
                HistoryQuery {
                    since_offset: Some(opts.offset),
                    limit: HistoryLimit::at_most(ns.history_size),
                    reverse: false,
                    not_before: Some(registered),
                }
            } else {
                HistoryQuery {
                    limit: HistoryLimit::PositionOnly,
                    not_before: Some(registered),
                    ..HistoryQuery::default()
                }
            };
            let page = match self.node.broker.history(channel, query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %herald_broker::Chain(&e), channel, "history read failed");
                    self.node
                        .metrics
                        .broker_errors
                        .with_label_values(&["history"])
                        .inc();
                    hub.unsubscribe(channel, self.id).await;
                    return Err(ErrorCode::Internal.into());
                }
            };
            let top = page.position.offset;
            result.recoverable = true;
            result.positioned = true;
            result.epoch = page.position.epoch.clone();
            result.offset = top;
            sub.offset = top;
            sub.epoch = Arc::from(page.position.epoch.as_str());
            if ns.latest_value {
                // Always "recovered": the newest publication is the whole state. A
                // client that already holds it (recovering from the top of the same
                // epoch) gets none.
                result.was_recovering = opts.recover;
                result.recovered = true;
                if opts.recover {
                    self.node
                        .metrics
                        .recoveries
                        .with_label_values(&["recovered"])
                        .inc();
                }
                let holds_newest =
                    opts.recover && opts.epoch == page.position.epoch && opts.offset >= top;
                if !holds_newest {
                    let mut newest = page.publications;
                    sub.retain_passing(&mut newest, excluding());
                    newest.truncate(1);
                    result.publications = self.recovered_publications(
                        channel,
                        &mut sub,
                        newest,
                        &page.position.epoch,
                        top,
                    );
                }
            } else if opts.recover {
                result.was_recovering = true;
                let recoveries = &self.node.metrics.recoveries;
                let from = Position::new(opts.offset, &opts.epoch);
                if from.covers(
                    page.position.as_position(),
                    page.publications.iter().map(|p| p.offset),
                ) {
                    recoveries.with_label_values(&["recovered"]).inc();
                    // The reply names the stream's top, as for a fresh subscribe: the
                    // recovered publications lead up to it, and a client that reads
                    // its position from the reply is current at once.
                    result.recovered = true;
                    // Filtered after the check that nothing is missing: what a filter
                    // leaves out was not lost, and the client's position moves past it.
                    let mut recovered = page.publications;
                    sub.retain_passing(&mut recovered, excluding());
                    // A conflated subscription gets the newest of each key.
                    if let Some(c) = &sub.conflation {
                        crate::conflation::newest_per_key(&mut recovered, c.key());
                    }
                    result.publications = self.recovered_publications(
                        channel,
                        &mut sub,
                        recovered,
                        &page.position.epoch,
                        top,
                    );
                } else if opts.reject_unrecovered {
                    recoveries.with_label_values(&["rejected"]).inc();
                    hub.unsubscribe(channel, self.id).await;
                    return Err(ErrorCode::UnrecoverablePosition.into());
                } else {
                    recoveries.with_label_values(&["not_recovered"]).inc();
                }
            }
        }
        self.subs.insert(Arc::from(channel), Box::new(sub));
        let broker = &self.node.broker;
        if ns.presence
            && let Err(e) = broker
                .add_presence(channel, &info, config.client.presence_ttl)
                .await
        {
            tracing::warn!(error = %herald_broker::Chain(&e), channel, "presence update failed");
        }
        if announce
            && let Err(e) = broker
                .publish_join_leave(channel, herald_broker::JoinLeave::Join(info))
                .await
        {
            tracing::warn!(error = %herald_broker::Chain(&e), channel, "join announcement failed");
        }
        Ok(result)
    }

    /// Publications going out in a subscribe reply, in the subscription's form: with
    /// deltas on, the first in full and the rest as patches, and the hub told that this
    /// client holds the top's full text when they end there (so that it may patch the
    /// next publication against it).
    fn recovered_publications(
        &self,
        channel: &str,
        sub: &mut Sub,
        publications: Vec<herald_protocol::Publication>,
        epoch: &str,
        top: u64,
    ) -> Vec<herald_protocol::Publication> {
        if !sub.delta {
            return publications;
        }
        if let Some(last) = publications.last()
            && last.offset == top
        {
            sub.delta_base = true;
            let last = herald_broker::StoredPublication {
                publication: last.clone(),
                epoch: epoch.to_owned(),
            };
            self.node.hub.seed_delta_base(channel, Arc::new(last));
        }
        crate::delta::recovered(publications)
    }
}
