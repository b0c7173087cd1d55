//! The connection's side of the proxy hooks: what it asks the application's backend,
//! and what it does with the answers.

use super::{Conn, Deferred, Fail};
use crate::proxy::{Answer, Hook, wire};
use herald_protocol::{DisconnectCode, ErrorCode, Filter, RawJson, UnsubscribeCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a connection or subscription the backend could not be asked about stays
/// before the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Who a connection is, as a token or the connect hook established it.
pub(super) struct Identity {
    pub user: String,
    pub info: Option<RawJson>,
    /// Unix seconds; `None` = never.
    pub expires: Option<u64>,
    /// Server-side subscriptions, with channel info.
    pub channels: Vec<(String, Option<RawJson>)>,
    pub filter: Option<Arc<Filter>>,
    /// For the client, in the connect reply.
    pub data: Option<RawJson>,
    /// The refresh hook extends the connection when it expires.
    pub refreshed_by_proxy: bool,
    /// The origin id the token or the backend gave.
    pub origin: Option<String>,
}

impl Identity {
    /// An anonymous client, where anonymous connections are allowed.
    pub(super) fn anonymous() -> Self {
        Self {
            user: String::new(),
            info: None,
            expires: None,
            channels: Vec::new(),
            filter: None,
            data: None,
            refreshed_by_proxy: false,
            origin: None,
        }
    }
}

/// What the subscribe hook granted.
pub(super) struct Grant {
    pub expires: Option<u64>,
    pub info: Option<RawJson>,
    pub data: Option<RawJson>,
    pub filter: Option<Arc<Filter>>,
    pub conflation: Option<crate::conflation::ConflationConfig>,
}

/// A Unix time from the proxy protocol (0 = never).
fn unix(at: u64) -> Option<u64> {
    (at > 0).then_some(at)
}

/// Whether a Unix time from the proxy protocol has passed (0 = never).
fn past(at: u64) -> bool {
    at > 0 && at <= crate::auth::unix_now()
}

impl Conn {
    /// The fields every proxy request starts with.
    fn caller(&self) -> wire::Caller<'_> {
        let (client, user) = self
            .session
            .as_ref()
            .map_or(("", ""), |s| (&*s.client, &*s.user));
        wire::Caller {
            client,
            transport: self.transport.kind.name(),
            protocol: match self.out.encoding() {
                herald_protocol::Encoding::Json => "json",
                herald_protocol::Encoding::Protobuf => "protobuf",
            },
            encoding: "json",
            user,
        }
    }

    /// Calls `hook`: its result, or the failure to answer the command with. A failed
    /// call is error 100, temporary; the backend's own error goes to the client as it
    /// is; its disconnect closes the connection with the backend's code.
    async fn ask<Req: Serialize, Res: DeserializeOwned>(
        &self,
        hook: Hook,
        body: &Req,
    ) -> Result<Res, Fail> {
        match self
            .node
            .proxy
            .call(hook, &self.transport.forwarded, body)
            .await
        {
            Ok(Answer::Result(result)) => Ok(result),
            Ok(Answer::Error(error)) => Err(Fail::App(Box::new(error))),
            Ok(Answer::Disconnect(code, reason)) => {
                self.closer.close_with(code, &reason);
                Err(Fail::Disconnect(DisconnectCode::ForceDisconnect))
            }
            Err(_) => Err(Fail::Error(ErrorCode::Internal)),
        }
    }

    /// Asks the connect hook who a client without a token is.
    pub(super) async fn identify_by_proxy(
        &self,
        req: &herald_protocol::ConnectRequest,
        client: &str,
    ) -> Result<Identity, Fail> {
        let body = wire::ConnectRequest {
            caller: wire::Caller {
                client,
                ..self.caller()
            },
            name: &req.name,
            version: &req.version,
            data: req.data.as_ref(),
            channels: req.subs.keys().map(String::as_str).collect(),
        };
        let result: wire::ConnectResult = self.ask(Hook::Connect, &body).await?;
        let filter = super::claimed_filter(result.tags_filter.as_ref()).map_err(|e| {
            tracing::warn!(error = %e, "the connect hook's tag filter is not valid");
            Fail::Error(ErrorCode::Internal)
        })?;
        let mut channels: Vec<(String, Option<RawJson>)> =
            result.channels.into_iter().map(|c| (c, None)).collect();
        for (channel, options) in result.subs {
            channels.retain(|(c, _)| *c != channel);
            channels.push((channel, options.info));
        }
        Ok(Identity {
            user: result.user,
            info: result.info,
            expires: unix(result.expire_at),
            channels,
            filter,
            data: result.data,
            refreshed_by_proxy: self.node.proxy.has(Hook::Refresh),
            origin: result.origin,
        })
    }

    /// Asks the subscribe hook whether this connection may subscribe.
    pub(super) async fn authorize_by_proxy(
        &self,
        req: &herald_protocol::SubscribeRequest,
    ) -> Result<Grant, Fail> {
        let body = wire::SubscribeRequest {
            caller: self.caller(),
            channel: &req.channel,
            token: &req.token,
            data: req.data.as_ref(),
        };
        let result: wire::SubscribeResult = self.ask(Hook::Subscribe, &body).await?;
        let filter = super::claimed_filter(result.tags_filter.as_ref()).map_err(|e| {
            tracing::warn!(error = %e, channel = req.channel, "the subscribe hook's tag filter is not valid");
            Fail::Error(ErrorCode::Internal)
        })?;
        if let Some(problem) = result.conflation.as_ref().and_then(|c| c.problem()) {
            tracing::warn!(
                channel = req.channel,
                problem,
                "the subscribe hook's conflation is not valid"
            );
            return Err(Fail::Error(ErrorCode::Internal));
        }
        Ok(Grant {
            expires: unix(result.expire_at),
            info: result.info,
            data: result.data,
            filter,
            conflation: result.conflation,
        })
    }

    /// Asks the publish hook about a client publication: what to publish instead (or
    /// the same), with which tags, kept in history or not.
    pub(super) async fn review_by_proxy(
        &self,
        channel: &str,
        data: &RawJson,
    ) -> Result<wire::PublishResult, Fail> {
        let body = wire::PublishRequest {
            caller: self.caller(),
            channel,
            data,
        };
        self.ask(Hook::Publish, &body).await
    }

    /// Routes an RPC call to the backend.
    pub(super) async fn rpc_by_proxy(
        &self,
        req: &herald_protocol::RpcRequest,
    ) -> Result<herald_protocol::Reply, Fail> {
        if !self.node.proxy.has(Hook::Rpc) {
            return Err(ErrorCode::NotAvailable.into());
        }
        let body = wire::RpcRequest {
            caller: self.caller(),
            method: &req.method,
            data: req.data.as_ref(),
        };
        let result: wire::RpcResult = self.ask(Hook::Rpc, &body).await?;
        Ok(herald_protocol::Reply {
            rpc: Some(herald_protocol::RpcResult { data: result.data }),
            ..herald_protocol::Reply::default()
        })
    }

    /// The connection expired and the refresh hook decides whether it goes on: a new
    /// expiry (or none) keeps it, `expired` ends it with 3005. When the backend cannot
    /// be asked, or answers with an error, the connection stays for another minute
    /// and is asked about again then.
    pub(super) async fn refresh_by_proxy(&mut self) -> Result<(), DisconnectCode> {
        let answer: Result<wire::RefreshResult, Fail> =
            self.ask(Hook::Refresh, &self.caller()).await;
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        match answer {
            // An expiry already past ends the connection too: asking again at once
            // would only repeat the call in a loop.
            Ok(result) if result.expired || past(result.expire_at) => Err(DisconnectCode::Expired),
            Ok(result) => {
                session.expires_at = crate::auth::expiry(unix(result.expire_at)).0;
                if result.info.is_some() {
                    session.conn_info = result.info;
                }
                Ok(())
            }
            Err(Fail::Disconnect(code)) => Err(code),
            Err(_) => {
                session.expires_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                Ok(())
            }
        }
    }

    /// A subscription expired: the sub_refresh hook decides. One the backend lets go
    /// on gets its new expiry; one it ends is unsubscribed with 2501 (the client
    /// subscribes again, and the subscribe hook decides). One it could not be asked
    /// about stays for another minute.
    pub(super) async fn sub_refresh_by_proxy(
        &mut self,
        channel: &Arc<str>,
    ) -> Result<(), DisconnectCode> {
        if !self.subs.contains_key(channel) {
            return Ok(());
        }
        let body = wire::ChannelRequest {
            caller: self.caller(),
            channel,
        };
        let answer: Result<wire::RefreshResult, Fail> = self.ask(Hook::SubRefresh, &body).await;
        let Some(sub) = self.subs.get_mut(channel) else {
            return Ok(());
        };
        match answer {
            Ok(result) if result.expired || past(result.expire_at) => {
                self.deferred.push(Deferred::Unsubscribe(
                    channel.clone(),
                    UnsubscribeCode::Expired,
                ));
            }
            Ok(result) => {
                sub.expires_at = crate::auth::expiry(unix(result.expire_at)).0;
                if result.info.is_some() {
                    sub.chan_info = result.info;
                }
            }
            Err(Fail::Disconnect(code)) => return Err(code),
            Err(_) => sub.expires_at = Some(Instant::now() + RETRY_AFTER_FAILURE),
        }
        Ok(())
    }
}
