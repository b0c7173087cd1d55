//! The server HTTP API (`/api/*`, `X-API-Key`): publish, broadcast, history, presence,
//! info, channels, disconnect, unsubscribe and batch, in the same request and response
//! shapes as the Centrifugo server API, so its client libraries work unchanged.

use crate::channel::Channel;
use crate::hub::Outgoing;
use crate::node::Node;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_broker::{HistoryQuery, PublishRequest};
use herald_protocol::{
    ClientInfo, DisconnectCode, ErrorCode, Publication, RawJson, StreamPosition, UnsubscribeCode,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An API error: a protocol error code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The code (see [`ErrorCode`]).
    pub code: u32,
    /// What went wrong.
    pub message: String,
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code: code.code(),
            message: code.message().to_owned(),
        }
    }
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::BadRequest.code(),
            message: message.into(),
        }
    }
}

type ApiResult = Result<Value, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams {
    channel: String,
    data: Option<RawJson>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    skip_history: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastParams {
    channels: Vec<String>,
    data: Option<RawJson>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    skip_history: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    channel: String,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelParams {
    channel: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChannelsParams {
    #[serde(default)]
    pattern: String,
}

#[derive(Deserialize)]
struct DisconnectSpec {
    code: u16,
    #[serde(default)]
    #[allow(dead_code)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectParams {
    user: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeParams {
    user: String,
    channel: String,
    #[serde(default)]
    client: String,
}

#[derive(Deserialize)]
struct BatchParams {
    commands: Vec<BTreeMap<String, Value>>,
}

#[derive(Serialize)]
struct PublicationOut<'a> {
    data: &'a RawJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a ClientInfo>,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn publication_json(p: &Publication) -> Value {
    serde_json::to_value(PublicationOut {
        data: &p.data,
        info: p.info.as_ref(),
        offset: p.offset,
        tags: &p.tags,
    })
    .unwrap_or(Value::Null)
}

fn parse<T: for<'de> Deserialize<'de>>(params: Value) -> Result<T, ApiError> {
    serde_json::from_value(params)
        .map_err(|e| ApiError::bad_request(format!("invalid params: {e}")))
}

/// The API's methods, in the order `info` lists them.
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "history",
    "history_remove",
    "presence",
    "presence_stats",
    "info",
    "channels",
    "disconnect",
    "unsubscribe",
    "batch",
];

/// Runs one API method with JSON params.
pub async fn call(node: &Arc<Node>, method: &str, params: Value) -> ApiResult {
    match METHODS.iter().find(|m| **m == method) {
        Some(m) => node.metrics.api_calls.with_label_values(&[m]).inc(),
        None => {
            return Err(ApiError {
                code: ErrorCode::MethodNotFound.code(),
                message: format!("unknown method {method:?}"),
            });
        }
    }
    match method {
        "publish" => publish(node, parse(params)?).await,
        "broadcast" => broadcast(node, parse(params)?).await,
        "history" => history(node, parse(params)?).await,
        "history_remove" => {
            let p: ChannelParams = parse(params)?;
            Channel::resolve(&node.config, &p.channel)?;
            node.broker
                .remove_history(&p.channel)
                .await
                .map_err(|e| internal(node, "history_remove", &e))?;
            Ok(json!({}))
        }
        "presence" | "presence_stats" => {
            let p: ChannelParams = parse(params)?;
            let ch = Channel::resolve(&node.config, &p.channel)?;
            if !ch.ns.presence {
                return Err(ErrorCode::NotAvailable.into());
            }
            let infos = node.hub.presence(&p.channel);
            if method == "presence" {
                let map: BTreeMap<String, ClientInfo> =
                    infos.into_iter().map(|i| (i.client.clone(), i)).collect();
                Ok(json!({ "presence": map }))
            } else {
                let users: std::collections::HashSet<&str> =
                    infos.iter().map(|i| i.user.as_str()).collect();
                Ok(json!({ "num_clients": infos.len(), "num_users": users.len() }))
            }
        }
        "info" => Ok(info(node)),
        "channels" => {
            let p: ChannelsParams = if params.is_null() {
                ChannelsParams::default()
            } else {
                parse(params)?
            };
            let channels: BTreeMap<String, Value> = node
                .hub
                .channels()
                .into_iter()
                .filter(|(name, _)| p.pattern.is_empty() || glob_match(&p.pattern, name))
                .map(|(name, n)| (name, json!({ "num_clients": n })))
                .collect();
            Ok(json!({ "channels": channels }))
        }
        "disconnect" => {
            let p: DisconnectParams = parse(params)?;
            let code = match p.disconnect {
                None => DisconnectCode::ForceDisconnect,
                Some(spec) => DisconnectCode::from_code(spec.code).ok_or_else(|| {
                    ApiError::bad_request(format!("unknown disconnect code {}", spec.code))
                })?,
            };
            let client = (!p.client.is_empty()).then_some(p.client.as_str());
            for conn in node.hub.connections_of(&p.user, client) {
                conn.closer.close(code);
            }
            Ok(json!({}))
        }
        "unsubscribe" => {
            let p: UnsubscribeParams = parse(params)?;
            Channel::resolve(&node.config, &p.channel)?;
            let client = (!p.client.is_empty()).then_some(p.client.as_str());
            let channel: Arc<str> = Arc::from(p.channel.as_str());
            for conn in node.hub.connections_of(&p.user, client) {
                conn.offer(
                    Outgoing::Unsubscribe {
                        channel: channel.clone(),
                        code: UnsubscribeCode::Server,
                    },
                    &node.metrics,
                );
            }
            Ok(json!({}))
        }
        "batch" => {
            let p: BatchParams = parse(params)?;
            let mut replies = Vec::with_capacity(p.commands.len());
            for command in p.commands {
                let mut entries = command.into_iter();
                let reply = match (entries.next(), entries.next()) {
                    (Some((m, params)), None) if m != "batch" => {
                        match Box::pin(call(node, &m, params)).await {
                            Ok(result) => json!({ m: result }),
                            Err(e) => json!({ "error": e }),
                        }
                    }
                    _ => {
                        json!({ "error": ApiError::bad_request("each batch command names exactly one method (not batch)") })
                    }
                };
                replies.push(reply);
            }
            Ok(json!({ "replies": replies }))
        }
        _ => Err(ErrorCode::MethodNotFound.into()),
    }
}

fn internal(node: &Node, op: &str, e: &herald_broker::BrokerError) -> ApiError {
    node.metrics.broker_errors.with_label_values(&[op]).inc();
    tracing::warn!(error = %e, op, "broker operation failed");
    ErrorCode::Internal.into()
}

fn publish_request(
    ch: &Channel<'_>,
    data: RawJson,
    tags: BTreeMap<String, String>,
    idempotency_key: &str,
    skip_history: bool,
) -> PublishRequest {
    let mut req = PublishRequest::new(data);
    if !skip_history {
        req = req.with_history(ch.ns.history_size, ch.ns.history_ttl);
    }
    req.tags = tags;
    req.idempotency_key = (!idempotency_key.is_empty()).then(|| idempotency_key.to_owned());
    req
}

fn position_json(p: &StreamPosition) -> Value {
    let mut out = serde_json::Map::new();
    if p.offset > 0 {
        out.insert("offset".into(), json!(p.offset));
    }
    if !p.epoch.is_empty() {
        out.insert("epoch".into(), json!(p.epoch));
    }
    Value::Object(out)
}

async fn publish(node: &Arc<Node>, p: PublishParams) -> ApiResult {
    let ch = Channel::resolve(&node.config, &p.channel)?;
    let data = p
        .data
        .ok_or_else(|| ApiError::bad_request("data is required"))?;
    let req = publish_request(&ch, data, p.tags, &p.idempotency_key, p.skip_history);
    let timer = node
        .metrics
        .publish_duration
        .with_label_values(&["api"])
        .start_timer();
    let out = node.broker.publish(&p.channel, req).await;
    timer.observe_duration();
    let out = out.map_err(|e| internal(node, "publish", &e))?;
    Ok(position_json(&out.position))
}

async fn broadcast(node: &Arc<Node>, p: BroadcastParams) -> ApiResult {
    let data = p
        .data
        .ok_or_else(|| ApiError::bad_request("data is required"))?;
    if p.channels.is_empty() {
        return Err(ApiError::bad_request("channels is empty"));
    }
    let timer = node.metrics.broadcast_duration.start_timer();
    let mut responses = Vec::with_capacity(p.channels.len());
    for channel in &p.channels {
        let one = async {
            let ch = Channel::resolve(&node.config, channel)?;
            let key = if p.idempotency_key.is_empty() {
                String::new()
            } else {
                format!("{}:{channel}", p.idempotency_key)
            };
            let req = publish_request(&ch, data.clone(), p.tags.clone(), &key, p.skip_history);
            let out = node
                .broker
                .publish(channel, req)
                .await
                .map_err(|e| internal(node, "publish", &e))?;
            Ok::<_, ApiError>(position_json(&out.position))
        };
        responses.push(match one.await {
            Ok(result) => json!({ "result": result }),
            Err(e) => json!({ "error": e }),
        });
    }
    timer.observe_duration();
    Ok(json!({ "responses": responses }))
}

async fn history(node: &Arc<Node>, p: HistoryParams) -> ApiResult {
    let ch = Channel::resolve(&node.config, &p.channel)?;
    if !ch.ns.history_enabled() {
        return Err(ErrorCode::NotAvailable.into());
    }
    let size = ch.ns.history_size;
    let query = HistoryQuery {
        since_offset: p.since.as_ref().map(|s| s.offset),
        limit: Some(match p.limit {
            0 => 0,
            n if n < 0 => size,
            n => usize::try_from(n).unwrap_or(size).min(size),
        }),
        reverse: p.reverse,
    };
    let page = node
        .broker
        .history(&p.channel, query)
        .await
        .map_err(|e| internal(node, "history", &e))?;
    if let Some(since) = &p.since
        && !since.epoch.is_empty()
        && since.epoch != page.position.epoch
    {
        return Err(ErrorCode::UnrecoverablePosition.into());
    }
    let mut out = position_json(&page.position);
    if let Value::Object(map) = &mut out {
        map.insert(
            "publications".into(),
            Value::Array(page.publications.iter().map(publication_json).collect()),
        );
    }
    Ok(out)
}

fn info(node: &Node) -> Value {
    let (clients, users) = node.hub.counts();
    let channels = node.hub.channels();
    let subs: usize = channels.iter().map(|(_, n)| n).sum();
    json!({
        "nodes": [{
            "uid": node.uid,
            "name": node.name,
            "version": crate::node::VERSION,
            "num_clients": clients,
            "num_users": users,
            "num_channels": channels.len(),
            "num_subs": subs,
            "uptime": node.started.elapsed().as_secs(),
        }]
    })
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

fn authorized(node: &Node, headers: &HeaderMap) -> bool {
    if node.config.api.insecure {
        return true;
    }
    let key = node.config.api.key.expose();
    if key.is_empty() {
        return false;
    }
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "))
        });
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(node: &Node) -> Response {
    let message = if node.config.api.key.is_empty() && !node.config.api.insecure {
        "the server API is disabled: set api.key (HERALD_API_KEY or --api-key)"
    } else {
        "missing or wrong API key (send it in the X-API-Key header)"
    };
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({ "error": { "code": ErrorCode::Unauthorized.code(), "message": message } }),
        ),
    )
        .into_response()
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))
}

/// `POST /api/{method}`.
pub async fn method_handler(
    State(node): State<Arc<Node>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&node, &headers) {
        return unauthorized(&node);
    }
    let params = match body_json(&body) {
        Ok(p) => p,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": e }))).into_response();
        }
    };
    let out = match call(&node, &method, params).await {
        Ok(result) if method == "batch" => result,
        Ok(result) => json!({ "result": result }),
        Err(e) if e.code == ErrorCode::MethodNotFound.code() => {
            return (StatusCode::NOT_FOUND, axum::Json(json!({ "error": e }))).into_response();
        }
        Err(e) => json!({ "error": e }),
    };
    axum::Json(out).into_response()
}

/// `POST /api`: newline-separated `{"method": .., "params": ..}` commands, answered by
/// newline-separated `{"result": ..}` or `{"error": ..}` lines in the same order.
pub async fn pipeline_handler(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&node, &headers) {
        return unauthorized(&node);
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not UTF-8").into_response();
    };
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        #[derive(Deserialize)]
        struct Cmd {
            method: String,
            #[serde(default)]
            params: Value,
        }
        let reply = match serde_json::from_str::<Cmd>(line) {
            Err(e) => json!({ "error": ApiError::bad_request(format!("invalid command: {e}")) }),
            Ok(cmd) => match call(&node, &cmd.method, cmd.params).await {
                Ok(result) => json!({ "result": result }),
                Err(e) => json!({ "error": e }),
            },
        };
        lines.push(reply.to_string());
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        lines.join("\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("chat:*", "chat:1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abde"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
