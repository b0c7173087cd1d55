//! The server HTTP API (`/api/*`, `X-API-Key`): publish, broadcast, history, presence,
//! info, channels, disconnect, unsubscribe and batch, in the same request and response
//! shapes as the Centrifugo server API, so its client libraries work unchanged; and
//! Herald's own `publish_entity` (see [`herald_protocol::entity`]).
//!
//! Payloads are never parsed into generic JSON values: parameters are decoded straight
//! from the body into typed structs holding [`RawJson`], and results are encoded from
//! typed structs, so publication data reaches subscribers and history readers byte for
//! byte (big numbers, key order and all).

use crate::channel::Channel;
use crate::node::Node;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_broker::PublishRequest;
use herald_protocol::{
    Audience, ClientInfo, EntityError, EntityEvent, ErrorCode, Publication, RawJson,
    StreamPosition, channel_idempotency_key,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Checks the `Origin` of an API request (the same rule as WebSocket upgrades: 403 when
/// refused) and lets the browser read the answer of an allowed one. Requests without
/// `Origin` pass unchanged.
pub(crate) async fn cors(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let ip = crate::server::peer(&parts).map(|p| node.admission.client_ip(p, &parts.headers));
    if let Err(refusal) = node.admission.check_origin(&parts.headers, ip) {
        return refusal.into_response();
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Answers a CORS preflight (only an allowed origin gets this far, see [`cors`]) with
/// what the API needs: `POST`, and the key and body headers.
pub(crate) async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "X-API-Key, Authorization, Content-Type",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "300"),
        ],
    )
        .into_response()
}

/// An API error: a protocol error code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ApiError {
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

impl From<EntityError> for ApiError {
    fn from(e: EntityError) -> Self {
        Self {
            code: e.code().code(),
            message: e.to_string(),
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

/// An encoded result.
type Raw = Box<RawValue>;
type ApiResult = Result<Raw, ApiError>;

/// `{"result": ..}` or `{"error": ..}`.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ApiError>,
}

impl Envelope<'_> {
    fn of(outcome: &Result<Raw, ApiError>) -> Envelope<'_> {
        match outcome {
            Ok(r) => Envelope {
                result: Some(r),
                error: None,
            },
            Err(e) => Envelope {
                result: None,
                error: Some(e),
            },
        }
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> ApiResult {
    serde_json::value::to_raw_value(value).map_err(|e| {
        tracing::error!(error = %e, "cannot encode an API result");
        ApiError::from(ErrorCode::Internal)
    })
}

fn parse<T: DeserializeOwned>(params: &str) -> Result<T, ApiError> {
    serde_json::from_str(params).map_err(|e| {
        // A position only helps in a body of several lines.
        let detail = if params.contains('\n') {
            e.to_string()
        } else {
            let text = e.to_string();
            text.split(" at line ").next().unwrap_or(&text).to_owned()
        };
        ApiError::bad_request(format!("invalid params: {detail}"))
    })
}

/// What a method's params look like, for the message when they are missing or wrong.
fn usage(method: &str) -> Option<&'static str> {
    Some(match method {
        "publish" => r#"{"channel": "news", "data": {"text": "hi"}}"#,
        "broadcast" => r#"{"channels": ["news", "alerts"], "data": {"text": "hi"}}"#,
        "publish_entity" => {
            r#"{"event": {"type": "tasks", "id": "42", "action": "updated", "payload": {...}}}"#
        }
        "history" => r#"{"channel": "news", "limit": 10}"#,
        "history_remove" | "presence" | "presence_stats" => r#"{"channel": "news"}"#,
        "disconnect" => r#"{"user": "42"}"#,
        "unsubscribe" => r#"{"user": "42", "channel": "news"}"#,
        "batch" => r#"{"commands": [{"publish": {"channel": "news", "data": 1}}]}"#,
        _ => return None,
    })
}

/// Resolves a channel for the API, saying exactly what is wrong with a name the node
/// cannot use.
pub(crate) fn resolve<'a>(node: &'a Node, name: &'a str) -> Result<Channel<'a>, ApiError> {
    Channel::resolve(&node.config, name).map_err(|code| ApiError {
        code: code.code(),
        message: crate::channel::explain(name, code),
    })
}

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
    /// The state's version: one not newer than the channel's newest (in the same
    /// `version_epoch`) is dropped.
    #[serde(default)]
    version: u64,
    #[serde(default)]
    version_epoch: String,
    /// The publisher's origin id: subscribers with this origin do not receive it.
    #[serde(default)]
    origin: String,
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
    #[serde(default)]
    origin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishEntityParams {
    event: Option<RawJson>,
    #[serde(default = "public_only")]
    audiences: Vec<Audience>,
    #[serde(default)]
    idempotency_key: String,
}

fn public_only() -> Vec<Audience> {
    vec![Audience::Public]
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
#[serde(deny_unknown_fields)]
struct DisconnectSpec {
    code: u16,
    #[serde(default)]
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
    commands: Vec<BTreeMap<String, Raw>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct PositionOut<'a> {
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    epoch: &'a str,
}

impl<'a> From<&'a StreamPosition> for PositionOut<'a> {
    fn from(p: &'a StreamPosition) -> Self {
        Self {
            offset: p.offset,
            epoch: &p.epoch,
        }
    }
}

#[derive(Serialize)]
struct HistoryOut<'a> {
    publications: &'a [Publication],
    #[serde(flatten)]
    position: PositionOut<'a>,
}

/// One channel's outcome in a `publish_entity` reply: the channel, then a `result` or an
/// `error` as in `broadcast`.
#[derive(Serialize)]
struct ChannelOutcome<'a> {
    channel: &'a str,
    #[serde(flatten)]
    outcome: Envelope<'a>,
}

#[derive(Serialize)]
struct Empty {}

/// The server API's methods (`POST /api/{method}`), in the order `info` lists them.
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "publish_entity",
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

/// Runs one API method with its JSON params (the request body).
pub(crate) async fn call(node: &Arc<Node>, method: &str, params: &str) -> ApiResult {
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
        "publish_entity" => publish_entity(node, parse(params)?).await,
        "history" => history(node, parse(params)?).await,
        "history_remove" => {
            let p: ChannelParams = parse(params)?;
            resolve(node, &p.channel)?;
            node.broker
                .remove_history(&p.channel)
                .await
                .map_err(|e| internal(node, "history_remove", &e))?;
            encode(&Empty {})
        }
        "presence" | "presence_stats" => {
            let p: ChannelParams = parse(params)?;
            let ch = resolve(node, &p.channel)?;
            if !ch.ns.presence {
                return Err(ErrorCode::NotAvailable.into());
            }
            let infos = node
                .broker
                .presence(&p.channel)
                .await
                .map_err(|e| internal(node, "presence", &e))?;
            if method == "presence" {
                let presence: BTreeMap<&str, &ClientInfo> =
                    infos.iter().map(|i| (i.client.as_str(), i)).collect();
                encode(&json!({ "presence": presence }))
            } else {
                let (clients, users) = crate::reads::presence_stats(&infos);
                encode(&json!({ "num_clients": clients, "num_users": users }))
            }
        }
        "info" => encode(&json!({ "nodes": node.cluster.nodes(node).await })),
        "channels" => {
            let p: ChannelsParams = parse(params)?;
            let survey = node.cluster.channels(&p.pattern).await;
            let channels: BTreeMap<String, serde_json::Value> = survey
                .channels
                .into_iter()
                .map(|(name, n)| (name, json!({ "num_clients": n })))
                .collect();
            let mut out = json!({ "channels": channels });
            // Herald's own fields, only when the list is not the whole truth.
            if !survey.missing.is_empty() {
                out["missing_nodes"] = json!(survey.missing);
            }
            if survey.truncated {
                out["truncated"] = json!(true);
            }
            encode(&out)
        }
        "disconnect" => disconnect(node, parse(params)?).await,
        "unsubscribe" => {
            let p: UnsubscribeParams = parse(params)?;
            resolve(node, &p.channel)?;
            // The user's connections may be on any node of the cluster.
            node.cluster
                .unsubscribe_everywhere(&p.user, &p.client, &p.channel)
                .await;
            encode(&Empty {})
        }
        "batch" => {
            let p: BatchParams = parse(params)?;
            let mut replies: Vec<Raw> = Vec::with_capacity(p.commands.len());
            for command in p.commands {
                let mut entries = command.into_iter();
                let reply = match (entries.next(), entries.next()) {
                    (Some((m, params)), None) if m != "batch" => {
                        match Box::pin(call(node, &m, params.get())).await {
                            Ok(result) => encode(&BTreeMap::from([(m.as_str(), &*result)]))?,
                            Err(e) => encode(&Envelope {
                                result: None,
                                error: Some(&e),
                            })?,
                        }
                    }
                    _ => encode(&Envelope {
                        result: None,
                        error: Some(&ApiError::bad_request(
                            "each batch command names exactly one method (not batch)",
                        )),
                    })?,
                };
                replies.push(reply);
            }
            encode(&json!({ "replies": replies }))
        }
        _ => Err(ErrorCode::MethodNotFound.into()),
    }
}

fn internal(node: &Node, op: &str, e: &herald_broker::BrokerError) -> ApiError {
    node.metrics.broker_errors.with_label_values(&[op]).inc();
    tracing::warn!(error = %herald_broker::Chain(e), op, "broker operation failed");
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

/// Checks a publication's tags and origin: tag keys starting with NUL are Herald's
/// own, and an origin is at most 256 bytes without control characters.
fn check_marks(tags: &BTreeMap<String, String>, origin: &str) -> Result<(), ApiError> {
    if tags.keys().any(|k| k.starts_with('\0')) {
        return Err(ApiError::bad_request("a tag key must not start with NUL"));
    }
    if origin.len() > crate::connection::MAX_ORIGIN_BYTES || origin.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "origin must be at most 256 bytes, without control characters",
        ));
    }
    Ok(())
}

async fn publish(node: &Arc<Node>, p: PublishParams) -> ApiResult {
    let ch = resolve(node, &p.channel)?;
    let data = p
        .data
        .ok_or_else(|| ApiError::bad_request("data is required"))?;
    check_marks(&p.tags, &p.origin)?;
    let mut req = publish_request(&ch, data, p.tags, &p.idempotency_key, p.skip_history);
    req.version = p.version;
    req.version_epoch = p.version_epoch;
    req.origin = p.origin;
    let timer = node
        .metrics
        .publish_duration
        .with_label_values(&["api"])
        .start_timer();
    let out = node.broker.publish(&p.channel, req).await;
    timer.observe_duration();
    let out = out.map_err(|e| internal(node, "publish", &e))?;
    // Suppressed: nothing was published; the reply holds the channel's position.
    encode(&PublishOut {
        position: PositionOut::from(&out.position),
        suppressed: out.suppressed,
    })
}

#[derive(Serialize)]
struct PublishOut<'a> {
    #[serde(flatten)]
    position: PositionOut<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    suppressed: bool,
}

async fn broadcast(node: &Arc<Node>, p: BroadcastParams) -> ApiResult {
    let data = p
        .data
        .ok_or_else(|| ApiError::bad_request("data is required"))?;
    if p.channels.is_empty() {
        return Err(ApiError::bad_request("channels is empty"));
    }
    check_marks(&p.tags, &p.origin)?;
    let timer = node.metrics.broadcast_duration.start_timer();
    let mut responses: Vec<Raw> = Vec::with_capacity(p.channels.len());
    for channel in &p.channels {
        let one = fan_out_one(
            node,
            channel,
            &data,
            &p.tags,
            &p.idempotency_key,
            p.skip_history,
            &p.origin,
        );
        responses.push(encode(&Envelope::of(&one.await))?);
    }
    timer.observe_duration();
    encode(&json!({ "responses": responses }))
}

/// One channel of a fan-out publish (`broadcast`, `publish_entity`), keyed per channel.
async fn fan_out_one(
    node: &Arc<Node>,
    channel: &str,
    data: &RawJson,
    tags: &BTreeMap<String, String>,
    idempotency_key: &str,
    skip_history: bool,
    origin: &str,
) -> ApiResult {
    let ch = resolve(node, channel)?;
    let key = channel_idempotency_key(idempotency_key, channel).unwrap_or_default();
    let mut req = publish_request(&ch, data.clone(), tags.clone(), &key, skip_history);
    req.origin = origin.to_owned();
    let out = node
        .broker
        .publish(channel, req)
        .await
        .map_err(|e| internal(node, "publish", &e))?;
    encode(&PositionOut::from(&out.position))
}

/// Publishes a validated entity event, unchanged, to the three scopes of each audience.
async fn publish_entity(node: &Arc<Node>, p: PublishEntityParams) -> ApiResult {
    let data = p
        .event
        .ok_or_else(|| ApiError::bad_request("event is required"))?;
    let channels = EntityEvent::from_json(data.get())?.channels(&p.audiences)?;
    // Every channel is in one namespace: if it is missing, refuse before publishing any.
    for channel in &channels {
        resolve(node, channel)?;
    }
    let timer = node.metrics.broadcast_duration.start_timer();
    let no_tags = BTreeMap::new();
    let mut responses: Vec<Raw> = Vec::with_capacity(channels.len());
    for channel in &channels {
        let one = fan_out_one(
            node,
            channel,
            &data,
            &no_tags,
            &p.idempotency_key,
            false,
            "",
        )
        .await;
        responses.push(encode(&ChannelOutcome {
            channel,
            outcome: Envelope::of(&one),
        })?);
    }
    timer.observe_duration();
    encode(&json!({ "responses": responses }))
}

async fn history(node: &Arc<Node>, p: HistoryParams) -> ApiResult {
    let ch = resolve(node, &p.channel)?;
    if !ch.ns.history_enabled() {
        return Err(ErrorCode::NotAvailable.into());
    }
    let query = crate::reads::history_query(ch.ns, p.since.as_ref(), p.limit, p.reverse);
    let page = node
        .broker
        .history(&p.channel, query)
        .await
        .map_err(|e| internal(node, "history", &e))?;
    crate::reads::check_since_epoch(p.since.as_ref(), &page.position.epoch)?;
    encode(&HistoryOut {
        publications: &page.publications,
        position: PositionOut::from(&page.position),
    })
}

async fn disconnect(node: &Node, p: DisconnectParams) -> ApiResult {
    let (code, reason) = match p.disconnect {
        None => {
            let c = herald_protocol::DisconnectCode::ForceDisconnect;
            (c.code(), c.reason().to_owned())
        }
        Some(spec) => {
            // 3000–3999 are the protocol's codes, 4000–4999 the application's own.
            if !(3000..=4999).contains(&spec.code) {
                return Err(ApiError::bad_request(format!(
                    "disconnect code {} is outside 3000–4999",
                    spec.code
                )));
            }
            if spec.reason.len() > 123 {
                return Err(ApiError::bad_request(
                    "disconnect reason is longer than 123 bytes",
                ));
            }
            let reason = if spec.reason.is_empty() {
                herald_protocol::DisconnectCode::from_code(spec.code)
                    .map_or("disconnect", |c| c.reason())
                    .to_owned()
            } else {
                spec.reason
            };
            (spec.code, reason)
        }
    };
    // The user's connections may be on any node of the cluster.
    node.cluster
        .disconnect_everywhere(&p.user, &p.client, code, &reason)
        .await;
    encode(&Empty {})
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
    given.is_some_and(|g| secret_matches(g, key))
}

/// Compares a given secret (an API key, the admin password) with the configured one in
/// time that does not depend on where they differ (`subtle`, whose comparison the
/// optimiser cannot shortcut). Only the length can leak, and a secret's length is no
/// secret worth keeping.
pub(crate) fn secret_matches(given: &str, key: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(key.as_bytes()))
}

fn unauthorized(node: &Node) -> Response {
    let message = if node.config.api.key.is_empty() && !node.config.api.insecure {
        "the server API is disabled: set api.key (HERALD_API_KEY or --api-key)"
    } else {
        "missing or wrong API key (send it in the X-API-Key header)"
    };
    let body = json!({ "error": { "code": ErrorCode::Unauthorized.code(), "message": message } });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn envelope_response(status: StatusCode, outcome: &Result<Raw, ApiError>) -> Response {
    let body = serde_json::to_string(&Envelope::of(outcome)).unwrap_or_default();
    json_response(status, body)
}

/// The params text of a body: an empty body means `{}`.
fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Ok("{}");
    }
    // Syntax errors are a 400 (not JSON at all); shape errors are reported per method.
    serde_json::from_str::<&RawValue>(text)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    Ok(text)
}

/// `POST /api/{method}`.
pub(crate) async fn method_handler(
    State(node): State<Arc<Node>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&node, &headers) {
        return unauthorized(&node);
    }
    answer(&node, &method, &body).await
}

/// Calls one method with a JSON body and answers it as `POST /api/<method>` does, for a
/// caller already authorized (by the API key, or by an admin session).
pub(crate) async fn answer(node: &Arc<Node>, method: &str, body: &Bytes) -> Response {
    let params = match body_text(body) {
        Ok(p) => p,
        Err(e) => return envelope_response(StatusCode::BAD_REQUEST, &Err(e)),
    };
    let empty = body.iter().all(u8::is_ascii_whitespace);
    let started = tokio::time::Instant::now();
    let mut outcome = call(node, method, params).await;
    match &outcome {
        // Successful calls at debug: a busy publisher makes thousands a second.
        Ok(_) => tracing::debug!(
            method,
            ms = started.elapsed().as_millis() as u64,
            "api call"
        ),
        Err(e) => tracing::info!(
            method,
            ms = started.elapsed().as_millis() as u64,
            code = e.code,
            error = e.message,
            "api call refused"
        ),
    }
    if let Err(e) = &mut outcome
        && e.code == ErrorCode::BadRequest.code()
        && (e.message.starts_with("invalid params") || e.message.ends_with("is required"))
        && let Some(usage) = usage(method)
    {
        e.message = if empty {
            format!("the body is empty: {method} takes params such as {usage}")
        } else {
            format!("{}; {method} takes params such as {usage}", e.message)
        };
    }
    match outcome {
        // A batch reply is `{"replies": ..}` itself, not wrapped in a result.
        Ok(raw) if method == "batch" => json_response(StatusCode::OK, raw.get().to_owned()),
        Err(e) if e.code == ErrorCode::MethodNotFound.code() => {
            envelope_response(StatusCode::NOT_FOUND, &Err(e))
        }
        // A request that cannot succeed as written (malformed params, a channel name
        // no node accepts): 400, like a body that is not JSON. Refusals of a
        // well-formed request (unknown channel, no history) stay 200 with the error.
        Err(e) if e.code == ErrorCode::BadRequest.code() => {
            envelope_response(StatusCode::BAD_REQUEST, &Err(e))
        }
        outcome => envelope_response(StatusCode::OK, &outcome),
    }
}

/// `POST /api`: newline-separated `{"method": .., "params": ..}` commands, answered by
/// newline-separated `{"result": ..}` or `{"error": ..}` lines in the same order.
pub(crate) async fn pipeline_handler(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct Cmd {
        method: String,
        #[serde(default)]
        params: Option<Raw>,
    }
    if !authorized(&node, &headers) {
        return unauthorized(&node);
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return envelope_response(
            StatusCode::BAD_REQUEST,
            &Err(ApiError::bad_request("body is not UTF-8")),
        );
    };
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let outcome = match serde_json::from_str::<Cmd>(line) {
            Err(e) => Err(ApiError::bad_request(format!("invalid command: {e}"))),
            Ok(cmd) => {
                let params = cmd.params.as_deref().map_or("{}", RawValue::get);
                call(&node, &cmd.method, params).await
            }
        };
        lines.push(serde_json::to_string(&Envelope::of(&outcome)).unwrap_or_default());
    }
    json_response(StatusCode::OK, lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::secret_matches;

    #[test]
    fn api_keys_match_only_exactly() {
        let key = "0123456789abcdef";
        assert!(secret_matches(key, key));
        assert!(!secret_matches("0123456789abcdeF", key));
        assert!(!secret_matches("1123456789abcdef", key));
        assert!(!secret_matches("0123456789abcde", key));
        assert!(!secret_matches("0123456789abcdef0", key));
        assert!(!secret_matches("", key));
    }
}
