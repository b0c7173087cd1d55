//! The JSON bodies of proxy calls: what Herald posts to the application's backend and
//! what it accepts back. The shapes are those of the Centrifugo proxy protocol, so a
//! backend written for it answers Herald unchanged.

use herald_protocol::{FilterNode, RawJson};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The fields every request carries: who is calling, and over what.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Caller<'a> {
    /// The connection's client id.
    pub client: &'a str,
    /// `websocket`, `http_stream`, `sse`, `uni_websocket`, `uni_http_stream`, `uni_sse`.
    pub transport: &'static str,
    /// `json` or `protobuf`: the client protocol's encoding.
    pub protocol: &'static str,
    /// Always `json`: Herald's payloads are JSON whatever the protocol.
    pub encoding: &'static str,
    /// The authenticated user; absent before authentication and for anonymous clients.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
}

/// `connect`: a client without a token asks to be let in.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectRequest<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawJson>,
    /// The channels the connect request names: those a unidirectional client asks
    /// for, or the server-side subscriptions an SDK recovers after a reconnect.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<&'a str>,
}

/// `subscribe`: may this connection subscribe to `channel`?
#[derive(Debug, Serialize)]
pub(crate) struct SubscribeRequest<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub channel: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawJson>,
}

/// `publish`: a client publication to validate or rewrite.
#[derive(Debug, Serialize)]
pub(crate) struct PublishRequest<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub channel: &'a str,
    pub data: &'a RawJson,
}

/// `sub_refresh`: a subscription the backend authorized has expired.
#[derive(Debug, Serialize)]
pub(crate) struct ChannelRequest<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub channel: &'a str,
}

/// `rpc`: a client call routed to the backend by method.
#[derive(Debug, Serialize)]
pub(crate) struct RpcRequest<'a> {
    #[serde(flatten)]
    pub caller: Caller<'a>,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawJson>,
}

/// What the backend answers: exactly one of a result, an error for the client, or a
/// disconnect.
#[derive(Debug, Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
pub(crate) struct Reply<T> {
    #[serde(default)]
    pub result: Option<T>,
    #[serde(default)]
    pub error: Option<AppError>,
    #[serde(default)]
    pub disconnect: Option<AppDisconnect>,
}

/// An error the backend wants the client to see.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct AppError {
    pub code: u32,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub temporary: bool,
}

/// A close the backend asks for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct AppDisconnect {
    pub code: u32,
    #[serde(default)]
    pub reason: String,
}

/// The `connect` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectResult {
    /// The user id ("" = anonymous).
    pub user: String,
    /// When the connection expires (Unix seconds; 0 = never).
    pub expire_at: u64,
    /// Public user info, shown to others in presence and join/leave.
    pub info: Option<RawJson>,
    /// Sent to the client in the connect reply.
    pub data: Option<RawJson>,
    /// Server-side subscriptions.
    pub channels: Vec<String>,
    /// Server-side subscriptions with their channel info.
    pub subs: BTreeMap<String, SubOptions>,
    /// A tag filter every subscription of the connection applies (Herald's own field).
    pub tags_filter: Option<FilterNode>,
    /// The connection's origin id (Herald's own field; see the token claim).
    pub origin: Option<String>,
}

/// One server-side subscription of a `connect` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SubOptions {
    pub info: Option<RawJson>,
}

/// The `refresh` and `sub_refresh` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RefreshResult {
    /// The connection (or subscription) ends now.
    pub expired: bool,
    /// The next expiry (Unix seconds; 0 = never).
    pub expire_at: u64,
    /// New info, when it changes.
    pub info: Option<RawJson>,
}

/// The `subscribe` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SubscribeResult {
    /// When the subscription expires (Unix seconds; 0 = never).
    pub expire_at: u64,
    /// Channel info for this subscriber.
    pub info: Option<RawJson>,
    /// Sent to the client in the subscribe reply.
    pub data: Option<RawJson>,
    /// A tag filter the subscription applies, which the client cannot change (Herald's
    /// own field).
    pub tags_filter: Option<FilterNode>,
    /// At most one publication per key per interval (Herald's own field).
    pub conflation: Option<crate::conflation::ConflationConfig>,
}

/// The `publish` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PublishResult {
    /// Replaces the client's data.
    pub data: Option<RawJson>,
    /// Publish without keeping it in history.
    pub skip_history: bool,
    /// Tags for the publication (the filters' input).
    pub tags: BTreeMap<String, String>,
}

/// The `rpc` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RpcResult {
    /// The reply's data.
    pub data: Option<RawJson>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller<'static> {
        Caller {
            client: "c1",
            transport: "websocket",
            protocol: "json",
            encoding: "json",
            user: "",
        }
    }

    #[test]
    fn requests_have_the_proxy_protocol_shapes() {
        let data = RawJson::from_string(r#"{"x":1}"#.into()).expect("json");
        let body = serde_json::to_string(&SubscribeRequest {
            caller: Caller {
                user: "42",
                ..caller()
            },
            channel: "board:1",
            token: "",
            data: Some(&data),
        })
        .expect("encodes");
        assert_eq!(
            body,
            r#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","user":"42","channel":"board:1","data":{"x":1}}"#
        );
        let body = serde_json::to_string(&ConnectRequest {
            caller: caller(),
            name: "js",
            version: "",
            data: None,
            channels: vec![],
        })
        .expect("encodes");
        assert_eq!(
            body,
            r#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","name":"js"}"#
        );
    }

    #[test]
    fn replies_decode_with_unknown_fields_ignored() {
        let reply: Reply<ConnectResult> = serde_json::from_str(
            r#"{"result":{"user":"56","expire_at":1700000000,"info":{"name":"A"},"channels":["news"],"meta":{"k":1},"subs":{"room":{"info":{"r":1},"override":{"presence":{"value":true}}}}}}"#,
        )
        .expect("decodes");
        let result = reply.result.expect("result");
        assert_eq!(result.user, "56");
        assert_eq!(result.expire_at, 1_700_000_000);
        assert_eq!(result.channels, ["news"]);
        assert!(result.subs.contains_key("room"));
        let reply: Reply<RpcResult> =
            serde_json::from_str(r#"{"error":{"code":1000,"message":"nope","temporary":true}}"#)
                .expect("decodes");
        assert_eq!(
            reply.error,
            Some(AppError {
                code: 1000,
                message: "nope".into(),
                temporary: true
            })
        );
        let reply: Reply<RpcResult> =
            serde_json::from_str(r#"{"disconnect":{"code":4501,"reason":"banned"}}"#)
                .expect("decodes");
        assert_eq!(reply.disconnect.map(|d| d.code), Some(4501));
    }
}
