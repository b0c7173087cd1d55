//! Command handling: decode a frame, dispatch each command, queue its reply.

use super::hooks::Identity;
use super::limits::Limit;
use super::{Conn, Fail, Session, idempotency};
use crate::auth::{TokenError, expiry, unix_now};
use crate::channel::{Action, Channel};
use crate::hub::ConnHandle;
use herald_broker::PublishRequest;
use herald_protocol::{
    ClientInfo, Command, CommandError, ConnectRequest, ConnectResult, DisconnectCode, ErrorCode,
    HistoryRequest, HistoryResult, PresenceResult, PresenceStatsResult, Reply, Request,
    SubRefreshResult, UnsubscribeResult, decode_commands,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

impl Conn {
    pub(super) async fn on_text_frame(&mut self, text: &str) -> Result<(), DisconnectCode> {
        let commands = decode_commands(text).map_err(|e| {
            tracing::debug!(error = %e, "malformed frame");
            DisconnectCode::BadRequest
        })?;
        for cmd in &commands {
            self.on_command(cmd).await?;
        }
        Ok(())
    }

    /// A Protobuf frame: the same commands as a text frame, except that a payload may
    /// not be JSON, which refuses that command alone.
    pub(super) async fn on_binary_frame(&mut self, frame: &[u8]) -> Result<(), DisconnectCode> {
        let commands = herald_protocol::protobuf::decode_commands(frame).map_err(|e| {
            tracing::debug!(error = %e, "malformed frame");
            DisconnectCode::BadRequest
        })?;
        for cmd in commands {
            match cmd {
                Ok(cmd) => self.on_command(&cmd).await?,
                Err(e) => {
                    tracing::debug!(error = %e, "payload is not JSON");
                    // As for any malformed command before `connect`, or one without an
                    // id other than `send` (which Herald ignores anyway).
                    if self.session.is_none() {
                        return Err(DisconnectCode::BadRequest);
                    }
                    if e.id == 0 {
                        continue;
                    }
                    // Refused commands count against the rate limit like any other.
                    match self.limit_command() {
                        Ok(()) => self.reply_error(e.id, ErrorCode::BadRequest),
                        Err(Fail::Error(code)) => self.reply_error(e.id, code),
                        Err(Fail::App(error)) => self.reply_app_error(e.id, *error),
                        Err(Fail::Disconnect(code)) => return Err(code),
                    }
                }
            }
        }
        Ok(())
    }

    fn reply_error(&mut self, id: u32, code: ErrorCode) {
        self.reply_app_error(id, code.to_error());
    }

    /// Replies with any error, Herald's or the application's (from a proxy hook).
    fn reply_app_error(&mut self, id: u32, error: herald_protocol::Error) {
        // The application's codes share one label: the label set stays bounded.
        let label = if ErrorCode::ALL.iter().any(|c| c.code() == error.code) {
            error.code.to_string()
        } else {
            "application".to_owned()
        };
        self.node
            .metrics
            .reply_errors
            .with_label_values(&[label.as_str()])
            .inc();
        let _ = self.out.push(&Reply::error(id, error));
    }

    async fn on_command(&mut self, cmd: &Command) -> Result<(), DisconnectCode> {
        let request = match cmd.request() {
            Ok(r) => r,
            Err(CommandError::UnknownMethod) => {
                self.node
                    .metrics
                    .messages_received
                    .with_label_values(&["unknown"])
                    .inc();
                self.reply_error(cmd.id, ErrorCode::MethodNotFound);
                return Ok(());
            }
            Err(CommandError::SeveralMethods) if cmd.id > 0 => {
                self.reply_error(cmd.id, ErrorCode::BadRequest);
                return Ok(());
            }
            Err(CommandError::SeveralMethods) => return Err(DisconnectCode::BadRequest),
        };
        self.node
            .metrics
            .messages_received
            .with_label_values(&[request.name()])
            .inc();
        self.commands_in = self.commands_in.saturating_add(1);
        // Only pongs and `send` go without an id.
        if cmd.id == 0 && !matches!(request, Request::Pong | Request::Send(_)) {
            return Err(DisconnectCode::BadRequest);
        }
        if self.session.is_none() && !matches!(request, Request::Connect(_)) {
            return Err(DisconnectCode::BadRequest);
        }
        // Pongs are the protocol's heartbeat, not load: refusing one would end in 3012.
        if !matches!(request, Request::Pong) {
            match self.limit_command() {
                Ok(()) => {}
                // A `send` has no id to answer: it is dropped.
                Err(Fail::Error(_)) if cmd.id == 0 => return Ok(()),
                Err(Fail::Error(code)) => {
                    self.reply_error(cmd.id, code);
                    return Ok(());
                }
                Err(Fail::App(error)) => {
                    self.reply_app_error(cmd.id, *error);
                    return Ok(());
                }
                Err(Fail::Disconnect(code)) => return Err(code),
            }
        }
        let result = match request {
            Request::Pong => {
                self.pong_deadline = None;
                return Ok(());
            }
            Request::Send(_) => return Ok(()),
            Request::Connect(req) => self.on_connect(req).await,
            Request::Subscribe(req) => self.on_subscribe(req).await,
            Request::Unsubscribe(req) => {
                self.remove_sub(&req.channel).await;
                Ok(Reply {
                    unsubscribe: Some(UnsubscribeResult {}),
                    ..Reply::default()
                })
            }
            Request::Publish(req) => self.on_publish(req).await,
            Request::History(req) => self.on_history(req).await,
            Request::Presence(req) => self.on_presence(&req.channel, false).await,
            Request::PresenceStats(req) => self.on_presence(&req.channel, true).await,
            Request::Refresh(req) => self.on_refresh(&req.token).await,
            Request::SubRefresh(req) => self.on_sub_refresh(&req.channel, &req.token).await,
            Request::Rpc(req) if req.method == herald_protocol::RPC_PING => Ok(Reply {
                rpc: Some(herald_protocol::RpcResult::default()),
                ..Reply::default()
            }),
            Request::Rpc(req) => self.rpc_by_proxy(req).await,
        };
        match result {
            Ok(mut reply) => {
                reply.id = cmd.id;
                let _ = self.out.push(&reply);
                Ok(())
            }
            Err(Fail::Error(code)) => {
                self.reply_error(cmd.id, code);
                Ok(())
            }
            Err(Fail::App(error)) => {
                self.reply_app_error(cmd.id, *error);
                Ok(())
            }
            Err(Fail::Disconnect(code)) => Err(code),
        }
    }

    async fn on_connect(&mut self, req: &ConnectRequest) -> Result<Reply, Fail> {
        if self.session.is_some() {
            return Err(Fail::Disconnect(DisconnectCode::BadRequest));
        }
        if self.node.draining() {
            return Err(Fail::Disconnect(DisconnectCode::Shutdown));
        }
        let config = self.node.config.clone();
        // The client id exists before the connect hook is asked, so that the backend
        // can tie its later calls to this one.
        let client: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
        let identity = if !req.token.is_empty() {
            self.identify_by_token(&req.token).await?
        } else if self.node.proxy.has(crate::proxy::Hook::Connect) {
            // The backend decides; a backend that cannot be asked lets nobody in.
            self.identify_by_proxy(req, &client).await?
        } else if config.client.allow_anonymous {
            Identity::anonymous()
        } else {
            return Err(Fail::Disconnect(DisconnectCode::InvalidToken));
        };
        let expires = identity.expires;
        if expires.is_some_and(|t| t <= unix_now()) {
            return Err(if identity.refreshed_by_proxy {
                Fail::Disconnect(DisconnectCode::Expired)
            } else {
                ErrorCode::TokenExpired.into()
            });
        }
        let (expires_at, ttl) = expiry(expires);
        let origin = origin_of(identity.origin.as_deref(), &req.headers, &identity.user)?;
        let user: Arc<str> = Arc::from(identity.user.as_str());
        // 111, temporary, as for the limit across nodes below: behind a balancer the
        // SDK's next attempt may land on a node where the user has room, or find that
        // another of the user's connections has gone. Its backoff grows while it is
        // refused, so a refused device costs a token check every few seconds at most,
        // and the application sees each refusal as an error event with the code.
        let user_permit = self
            .node
            .admission
            .admit_user(&user)
            .map_err(|_| Fail::Error(ErrorCode::TooManyRequests))?;
        // Then the user's slots across nodes, when that optional limit is set.
        self.admit(&user, &client).await?;
        let span = tracing::Span::current();
        span.record("client", &*client);
        span.record("user", &*user);
        let handle = ConnHandle {
            id: self.id,
            client: client.clone(),
            user: user.clone(),
            tx: self.tx.clone(),
            closer: self.closer.clone(),
        };
        self.node.hub.register(handle.clone());
        self.session = Some(Session {
            client: client.clone(),
            user,
            conn_info: identity.info.clone(),
            expires_at,
            filter: identity.filter.clone(),
            refreshed_by_proxy: identity.refreshed_by_proxy,
            origin,
            handle,
            _user_permit: user_permit,
        });
        self.next_ping = Instant::now() + config.client.ping_interval;

        let mut subs = BTreeMap::new();
        let mut channels: Vec<(String, Option<herald_protocol::RawJson>)> = identity.channels;
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        channels.dedup_by(|a, b| a.0 == b.0);
        for (channel, chan_info) in channels {
            let channel = &channel;
            let (recover, offset, epoch) = self.transport.start_of(channel, req.subs.get(channel));
            let opts = super::subscribe::SubOptions {
                recover,
                offset,
                epoch,
                reject_unrecovered: false,
                join_leave: false,
                expires_at: None,
                ttl: 0,
                chan_info,
                delta: None,
                token_filter: None,
                client_filter: None,
                refreshed_by_proxy: false,
                conflation: None,
            };
            match self.subscribe_channel(channel, opts).await {
                Ok(result) => {
                    subs.insert(channel.clone(), result);
                }
                Err(Fail::Error(ErrorCode::Internal)) => {
                    return Err(Fail::Disconnect(DisconnectCode::Internal));
                }
                Err(Fail::Disconnect(code)) => return Err(Fail::Disconnect(code)),
                Err(Fail::Error(code)) => {
                    tracing::warn!(
                        channel,
                        code = code.code(),
                        "server-side subscription refused"
                    );
                }
                Err(Fail::App(error)) => {
                    tracing::warn!(
                        channel,
                        code = error.code,
                        "server-side subscription refused"
                    );
                }
            }
        }
        if !self.transport.kind.bidirectional() {
            self.subscribe_requested(req, &mut subs).await?;
        }
        tracing::debug!("connected");
        Ok(Reply {
            connect: Some(ConnectResult {
                client: client.to_string(),
                version: crate::node::VERSION.to_owned(),
                // A connection the refresh hook extends never asks the client for a
                // token.
                expires: expires_at.is_some() && !identity.refreshed_by_proxy,
                ttl: if identity.refreshed_by_proxy { 0 } else { ttl },
                data: identity.data,
                ping: u32::try_from(config.client.ping_interval.as_secs()).unwrap_or(u32::MAX),
                pong: self.transport.kind.bidirectional(),
                // An emulated session's commands are routed to this node by its id.
                node: if self.transport.kind.emulated() {
                    self.node.uid.clone()
                } else {
                    self.node.name.clone()
                },
                session: self.transport.session.clone(),
                subs,
            }),
            ..Reply::default()
        })
    }

    /// A connection token's claims (`what`: which command's token, for the log): an
    /// expired token is 109, one whose key cannot be had yet 100, any other problem a
    /// close with 3500.
    async fn connection_claims(
        &self,
        token: &str,
        what: &'static str,
    ) -> Result<crate::auth::ConnectionClaims, Fail> {
        match self.node.verifier.verify_connection(token).await {
            Ok(c) => Ok(c),
            Err(TokenError::Expired) => Err(ErrorCode::TokenExpired.into()),
            Err(e) if e.is_temporary() => {
                tracing::debug!(error = %e, token = what, "token not checked yet");
                Err(ErrorCode::Internal.into())
            }
            Err(e) => {
                tracing::debug!(error = %e, token = what, "token refused");
                Err(Fail::Disconnect(DisconnectCode::InvalidToken))
            }
        }
    }

    /// Who a client is by its connection token.
    async fn identify_by_token(&self, token: &str) -> Result<Identity, Fail> {
        let claims = self.connection_claims(token, "connect").await?;
        let filter = super::claimed_filter(claims.tags_filter.as_ref()).map_err(|e| {
            tracing::debug!(error = %e, "connection token's tag filter refused");
            Fail::Disconnect(DisconnectCode::InvalidToken)
        })?;
        Ok(Identity {
            expires: claims.expires_at(),
            user: claims.sub,
            info: claims.info,
            channels: claims.channels.into_iter().map(|c| (c, None)).collect(),
            filter,
            data: None,
            refreshed_by_proxy: false,
            origin: claims.origin,
        })
    }

    /// Subscribes a unidirectional client to the channels its connect request names
    /// (with their recovery positions), checked like a `subscribe` command: it has no
    /// other way to subscribe. A channel refused is a refused connect: the client could
    /// not tell it apart from a quiet channel otherwise.
    async fn subscribe_requested(
        &mut self,
        req: &ConnectRequest,
        subs: &mut BTreeMap<String, herald_protocol::SubscribeResult>,
    ) -> Result<(), Fail> {
        for (channel, wanted) in &req.subs {
            if subs.contains_key(channel) {
                continue;
            }
            let (recover, offset, epoch) = self.transport.start_of(channel, Some(wanted));
            let request = herald_protocol::SubscribeRequest {
                channel: channel.clone(),
                recover,
                offset,
                epoch,
                ..wanted.clone()
            };
            match self.on_subscribe(&request).await {
                Ok(Reply {
                    subscribe: Some(result),
                    ..
                }) => {
                    subs.insert(channel.clone(), result);
                }
                Ok(_) => return Err(Fail::Disconnect(DisconnectCode::Internal)),
                Err(Fail::Error(code)) => {
                    tracing::debug!(
                        channel,
                        code = code.code(),
                        "requested subscription refused"
                    );
                    return Err(Fail::Disconnect(crate::transport::uni::refusal(code)));
                }
                // Refused by the backend: a temporary refusal reconnects, any other
                // does not.
                Err(Fail::App(error)) => {
                    tracing::debug!(channel, code = error.code, "requested subscription refused");
                    return Err(Fail::Disconnect(if error.temporary {
                        DisconnectCode::Internal
                    } else {
                        DisconnectCode::PermissionDenied
                    }));
                }
                Err(Fail::Disconnect(code)) => return Err(Fail::Disconnect(code)),
            }
        }
        Ok(())
    }

    /// Takes a slot of the per-user connection limit, when it is on. Over it, the connect
    /// command is answered with 111: temporary, so the SDKs retry it with a backoff that
    /// grows while they stay refused (a close with 3504 would stop them for good, and a
    /// reconnect code after a successful connect would reset their backoff). A broker
    /// failure admits the client (fail-open), counted; the refresh claims its slot later.
    async fn admit(&mut self, user: &str, client: &str) -> Result<(), Fail> {
        let limits = &self.node.config.client.rate_limits;
        let limit = limits.user_connections;
        if limit == 0 || user.is_empty() {
            return Ok(());
        }
        let ttl = self.node.config.client.presence_ttl;
        match self
            .node
            .broker
            .admit_connection(user, client, limit, ttl)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                let dry = limits.dry_run;
                self.refuse(Limit::UserConnections, dry)
            }
            Err(e) => {
                self.node
                    .metrics
                    .rate_limit_errors
                    .with_label_values(&[Limit::UserConnections.label()])
                    .inc();
                tracing::debug!(error = %herald_broker::Chain(&e), "user connection limit not checked");
                Ok(())
            }
        }
    }

    fn user(&self) -> &str {
        self.session.as_ref().map_or("", |s| &s.user)
    }

    async fn on_publish(
        &mut self,
        publish: &herald_protocol::PublishRequest,
    ) -> Result<Reply, Fail> {
        let channel = publish.channel.as_str();
        let config = self.node.config.clone();
        let ch = Channel::resolve(&config, channel)?;
        self.limit_channel(Limit::Publishes, &ch)?;
        // Permission first: a refused publish never consumes an idempotency key. With
        // the publish hook on, the backend is the permission.
        let by_proxy = ch.ns.publish_proxy;
        if !by_proxy {
            ch.check(
                Action::Publish,
                self.user(),
                self.subs.contains_key(channel),
            )?;
        }
        self.limit_user_publish(&ch).await?;
        let mut data = publish.data.clone().ok_or(ErrorCode::BadRequest)?;
        let mut tags = BTreeMap::new();
        let mut history = (ch.ns.history_size, ch.ns.history_ttl);
        if by_proxy {
            let review = self.review_by_proxy(channel, &data).await?;
            if let Some(rewritten) = review.data {
                data = rewritten;
            }
            // Tag keys starting with NUL are Herald's own.
            tags = review.tags;
            tags.retain(|k, _| !k.starts_with('\0'));
            if review.skip_history {
                history = (0, std::time::Duration::ZERO);
            }
        }
        let client = self.session.as_ref().map_or("", |s| &s.client);
        let key = idempotency::broker_key(self.user(), client, &publish.idempotency_key)?;
        // Only a keyed publish gets its position back, so that the reply to an ordinary
        // publish stays the `{}` every SDK expects.
        let keyed = key.is_some();
        let mut req = PublishRequest::new(data).with_history(history.0, history.1);
        req.tags = tags;
        req.info = self.client_info(None);
        // Marked with the connection's origin, or its user's.
        req.origin = self
            .session
            .as_ref()
            .map(|s| s.origin.as_deref().unwrap_or(&s.user).to_owned())
            .unwrap_or_default();
        req.idempotency_key = key;
        let timer = self
            .node
            .metrics
            .publish_duration
            .with_label_values(&["client"])
            .start_timer();
        let published = self.node.broker.publish(channel, req).await;
        timer.observe_duration();
        match published {
            Ok(out) => {
                let mut result = herald_protocol::PublishResult::default();
                if keyed {
                    result.offset = out.position.offset;
                    result.epoch = out.position.epoch;
                }
                Ok(Reply {
                    publish: Some(result),
                    ..Reply::default()
                })
            }
            Err(e) => {
                self.node
                    .metrics
                    .broker_errors
                    .with_label_values(&["publish"])
                    .inc();
                tracing::warn!(error = %herald_broker::Chain(&e), "publish failed");
                Err(ErrorCode::Internal.into())
            }
        }
    }

    async fn on_history(&mut self, req: &HistoryRequest) -> Result<Reply, Fail> {
        let config = self.node.config.clone();
        let ch = Channel::resolve(&config, &req.channel)?;
        ch.check(
            Action::History,
            self.user(),
            self.subs.contains_key(req.channel.as_str()),
        )?;
        let query = crate::reads::history_query(
            ch.ns,
            req.since.as_ref(),
            i64::from(req.limit),
            req.reverse,
        );
        let page = self
            .node
            .broker
            .history(&req.channel, query)
            .await
            .map_err(|e| {
                self.node
                    .metrics
                    .broker_errors
                    .with_label_values(&["history"])
                    .inc();
                tracing::warn!(error = %herald_broker::Chain(&e), "history read failed");
                ErrorCode::Internal
            })?;
        crate::reads::check_since_epoch(req.since.as_ref(), &page.position.epoch)?;
        Ok(Reply {
            history: Some(HistoryResult {
                publications: page.publications,
                epoch: page.position.epoch,
                offset: page.position.offset,
            }),
            ..Reply::default()
        })
    }

    async fn on_presence(&mut self, channel: &str, stats: bool) -> Result<Reply, Fail> {
        let config = self.node.config.clone();
        let ch = Channel::resolve(&config, channel)?;
        ch.check(
            Action::Presence,
            self.user(),
            self.subs.contains_key(channel),
        )?;
        let infos = self.node.broker.presence(channel).await.map_err(|e| {
            self.node
                .metrics
                .broker_errors
                .with_label_values(&["presence"])
                .inc();
            tracing::warn!(error = %herald_broker::Chain(&e), "presence read failed");
            ErrorCode::Internal
        })?;
        Ok(if stats {
            let (clients, users) = crate::reads::presence_stats(&infos);
            Reply {
                presence_stats: Some(PresenceStatsResult {
                    num_clients: u32::try_from(clients).unwrap_or(u32::MAX),
                    num_users: u32::try_from(users).unwrap_or(u32::MAX),
                }),
                ..Reply::default()
            }
        } else {
            Reply {
                presence: Some(PresenceResult {
                    presence: infos
                        .into_iter()
                        .map(|i: ClientInfo| (i.client.clone(), i))
                        .collect(),
                }),
                ..Reply::default()
            }
        })
    }

    async fn on_refresh(&mut self, token: &str) -> Result<Reply, Fail> {
        let claims = self.connection_claims(token, "refresh").await?;
        let session = self
            .session
            .as_mut()
            .ok_or(Fail::Disconnect(DisconnectCode::BadRequest))?;
        if claims.sub != *session.user {
            return Err(Fail::Disconnect(DisconnectCode::InvalidToken));
        }
        // The new token's filter replaces the old one (none: no filter).
        session.filter = super::claimed_filter(claims.tags_filter.as_ref()).map_err(|e| {
            tracing::debug!(error = %e, "refresh token's tag filter refused");
            Fail::Disconnect(DisconnectCode::InvalidToken)
        })?;
        let (expires_at, ttl) = expiry(claims.expires_at());
        session.expires_at = expires_at;
        // From now on the client's tokens keep the connection, not the refresh hook.
        session.refreshed_by_proxy = false;
        Ok(Reply {
            refresh: Some(herald_protocol::RefreshResult {
                client: session.client.to_string(),
                version: crate::node::VERSION.to_owned(),
                expires: expires_at.is_some(),
                ttl,
            }),
            ..Reply::default()
        })
    }

    async fn on_sub_refresh(&mut self, channel: &str, token: &str) -> Result<Reply, Fail> {
        let claims = match self.node.verifier.verify_subscription(token).await {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(ErrorCode::TokenExpired.into()),
            Err(e) if e.is_temporary() => {
                tracing::debug!(error = %e, "subscription refresh token not checked yet");
                return Err(ErrorCode::Internal.into());
            }
            Err(e) => {
                tracing::debug!(error = %e, "subscription refresh token refused");
                return Err(ErrorCode::PermissionDenied.into());
            }
        };
        if claims.channel != channel || claims.sub != self.user() {
            return Err(ErrorCode::PermissionDenied.into());
        }
        let filter = super::claimed_filter(claims.tags_filter.as_ref()).map_err(|e| {
            tracing::debug!(error = %e, "subscription refresh token's tag filter refused");
            ErrorCode::PermissionDenied
        })?;
        let sub = self.subs.get_mut(channel).ok_or(ErrorCode::BadRequest)?;
        let (expires_at, ttl) = expiry(claims.expires_at());
        sub.expires_at = expires_at;
        sub.token_filter = filter;
        sub.refreshed_by_proxy = false;
        Ok(Reply {
            sub_refresh: Some(SubRefreshResult {
                expires: expires_at.is_some(),
                ttl,
            }),
            ..Reply::default()
        })
    }
}

/// The request header (the SDKs' `headers` option) in which a client names its own
/// origin id.
pub(crate) const ORIGIN_HEADER: &str = "x-herald-origin";

/// The longest origin id a token, the backend or the API may give.
pub(crate) const MAX_ORIGIN_BYTES: usize = 256;

/// The longest origin id a client may choose for itself.
const MAX_CLIENT_ORIGIN_BYTES: usize = 64;

/// A connection's origin id: the one its token or the connect hook gave, as is, or
/// else the one the client chose in its connect request's `x-herald-origin` header,
/// scoped to its user as `user/chosen` (so that no client can take an origin that
/// hides its publications from another user). `None` when neither is there.
fn origin_of(
    given: Option<&str>,
    headers: &BTreeMap<String, String>,
    user: &str,
) -> Result<Option<Arc<str>>, Fail> {
    // An empty claim is no claim.
    if let Some(given) = given.filter(|g| !g.is_empty()) {
        if given.len() > MAX_ORIGIN_BYTES || given.chars().any(char::is_control) {
            tracing::debug!("the origin the token or the backend gave is not valid");
            return Err(Fail::Disconnect(DisconnectCode::InvalidToken));
        }
        return Ok(Some(Arc::from(given)));
    }
    let Some((_, chosen)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(ORIGIN_HEADER))
    else {
        return Ok(None);
    };
    let valid = !chosen.is_empty()
        && chosen.len() <= MAX_CLIENT_ORIGIN_BYTES
        && chosen.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if !valid {
        tracing::debug!("the client's origin id is not valid");
        return Err(Fail::Disconnect(DisconnectCode::BadRequest));
    }
    Ok(Some(Arc::from(format!("{user}/{chosen}"))))
}
