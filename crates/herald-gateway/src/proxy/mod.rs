//! Proxy hooks: Herald asks the application's own backend, over HTTP, whether to let a
//! client in (connect), keep it in (refresh), let it subscribe (subscribe, sub_refresh),
//! what to publish for it (publish), and what to answer its RPC calls (rpc).
//!
//! Every hook is optional. A call has a deadline (its hook's `timeout`, which also
//! covers waiting for one of the node's `max_in_flight` slots), and a backend that is
//! slow, down or answers nonsense is a *failed call*: the client gets error 100, marked
//! temporary, and its SDK retries with backoff. A failed connect call never lets
//! anyone in.
//!
//! The backend sees the headers of the client's HTTP request that
//! `proxy.forward_headers` names (cookies and `Authorization` by default) and nothing
//! else: a header the client made up, such as `X-User-Id`, never reaches it unless
//! the operator lists it. The `user` of every request after connect is the identity
//! Herald established, never one the client sent.

pub(crate) mod wire;

use crate::config::Secret;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use wire::{AppDisconnect, AppError, Reply};

/// Proxy calls made, by hook and outcome (`ok`, `error`, `disconnect`, `timeout`,
/// `unreachable`, `http_error`, `invalid`).
pub(crate) const PROXY_CALLS: &str = "herald_proxy_calls_total";
/// Proxy call duration, by hook (including the wait for a slot).
pub(crate) const PROXY_DURATION: &str = "herald_proxy_call_duration_seconds";
/// Proxy calls in flight on this node.
pub(crate) const PROXY_IN_FLIGHT: &str = "herald_proxy_calls_in_flight";

/// The largest reply body Herald reads from a backend.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// The hooks, settings under `[proxy]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Authenticates clients that connect without a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<HookConfig>,
    /// Extends (or ends) a connection the connect hook let in, when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<HookConfig>,
    /// Authorizes subscriptions without a token, in namespaces with `subscribe_proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<HookConfig>,
    /// Validates or rewrites client publications, in namespaces with `publish_proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<HookConfig>,
    /// Extends (or ends) a subscription the subscribe hook authorized, when it expires,
    /// in namespaces with `sub_refresh_proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<HookConfig>,
    /// Answers client RPC calls (any method but Herald's own `ping`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<HookConfig>,
    /// Headers of the client's HTTP request passed on to the backend (names, any case).
    pub forward_headers: Vec<String>,
    /// Headers sent with every call, such as a shared secret the backend checks.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub static_headers: BTreeMap<String, Secret>,
    /// Calls in flight at once on this node, all hooks together; a call that cannot get
    /// a slot within its timeout fails.
    pub max_in_flight: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect: None,
            refresh: None,
            subscribe: None,
            publish: None,
            sub_refresh: None,
            rpc: None,
            forward_headers: vec!["cookie".into(), "authorization".into()],
            static_headers: BTreeMap::new(),
            max_in_flight: 512,
        }
    }
}

/// One hook's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Where to POST (http:// or https://); required.
    pub url: String,
    /// How long a call may take, from asking for a slot to the end of the reply.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Headers no proxy call may carry from the client: they describe the client's own
/// connection, not who the client is, and some would break the call.
const NEVER_FORWARDED: [&str; 11] = [
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
];

impl ProxyConfig {
    /// The hooks by name, for checks and start-up logs.
    pub fn hooks(&self) -> [(Hook, Option<&HookConfig>); 6] {
        [
            (Hook::Connect, self.connect.as_ref()),
            (Hook::Refresh, self.refresh.as_ref()),
            (Hook::Subscribe, self.subscribe.as_ref()),
            (Hook::Publish, self.publish.as_ref()),
            (Hook::SubRefresh, self.sub_refresh.as_ref()),
            (Hook::Rpc, self.rpc.as_ref()),
        ]
    }

    /// Whether any hook is set.
    pub fn any(&self) -> bool {
        self.hooks().iter().any(|(_, h)| h.is_some())
    }

    /// Every problem with these settings, as (key under `proxy.`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (hook, config) in self.hooks() {
            let Some(config) = config else { continue };
            let at = hook.name().to_owned();
            match url::Url::parse(&config.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ if config.url.is_empty() => out.push((
                    format!("{at}.url"),
                    "must be set to the hook's http:// or https:// URL".into(),
                )),
                _ => out.push((
                    format!("{at}.url"),
                    format!("{:?} is not an http:// or https:// URL", config.url),
                )),
            }
            if config.timeout.is_zero() || config.timeout > Duration::from_secs(60) {
                out.push((
                    format!("{at}.timeout"),
                    "must be more than 0 and at most 60s".into(),
                ));
            }
        }
        for name in &self.forward_headers {
            let lower = name.to_ascii_lowercase();
            if HeaderName::from_bytes(lower.as_bytes()).is_err() {
                out.push((
                    "forward_headers".into(),
                    format!("{name:?} is not a header name"),
                ));
            } else if NEVER_FORWARDED.contains(&lower.as_str())
                || lower.starts_with("sec-websocket")
            {
                out.push((
                    "forward_headers".into(),
                    format!("{name:?} describes the client's connection and is never forwarded"),
                ));
            }
        }
        for (name, value) in &self.static_headers {
            if HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).is_err()
                || HeaderValue::from_str(value.expose()).is_err()
            {
                out.push((
                    "static_headers".into(),
                    format!("{name:?} is not a valid header (name or value)"),
                ));
            }
        }
        if self.max_in_flight == 0 {
            out.push(("max_in_flight".into(), "must be at least 1".into()));
        }
        out
    }
}

/// Which hook a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `connect`.
    Connect,
    /// `refresh`.
    Refresh,
    /// `subscribe`.
    Subscribe,
    /// `publish`.
    Publish,
    /// `sub_refresh`.
    SubRefresh,
    /// `rpc`.
    Rpc,
}

impl Hook {
    /// The hook's name in settings, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Refresh => "refresh",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
            Hook::SubRefresh => "sub_refresh",
            Hook::Rpc => "rpc",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The client's request headers the backend may see, captured once per connection.
pub(crate) type Forwarded = Option<Arc<HeaderMap>>;

/// What the backend answered.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    /// Go ahead, with this result.
    Result(T),
    /// Refuse with this error (the client sees it).
    Error(herald_protocol::Error),
    /// Close the connection with this code and reason.
    Disconnect(u16, String),
}

/// A call that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallFailed {
    /// No slot or no reply within the hook's timeout.
    #[error("timed out")]
    Timeout,
    /// The request could not be sent or its reply read.
    #[error("backend unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The backend answered with a status other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The reply is not one of the protocol's shapes, or is too large.
    #[error("invalid reply: {0}")]
    Invalid(String),
}

impl CallFailed {
    fn label(&self) -> &'static str {
        match self {
            CallFailed::Timeout => "timeout",
            CallFailed::Unreachable(_) => "unreachable",
            CallFailed::Status(_) => "http_error",
            CallFailed::Invalid(_) => "invalid",
        }
    }
}

/// A node's proxy client: one HTTP connection pool, the slots, the metrics.
#[derive(Debug)]
pub(crate) struct Proxy {
    http: reqwest::Client,
    hooks: [Option<(reqwest::Url, Duration)>; 6],
    forward: Vec<HeaderName>,
    static_headers: HeaderMap,
    slots: tokio::sync::Semaphore,
    calls: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    /// When a failed call was last logged, per hook (milliseconds since `started`):
    /// a backend that is down would otherwise write a line per client.
    last_warned: [AtomicU64; 6],
    started: Instant,
}

/// The proxy client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    /// The HTTP client could not be built.
    #[error("cannot build the proxy HTTP client")]
    Client(#[source] reqwest::Error),
    /// A setting is invalid (the configuration check reports it first).
    #[error("invalid proxy setting: {0}")]
    Setting(String),
    /// The metrics could not be created or registered.
    #[error("cannot register the proxy metrics")]
    Metrics(#[source] prometheus::Error),
}

impl Proxy {
    /// The client for `config`, its metrics registered in `registry`.
    pub(crate) fn new(config: &ProxyConfig, registry: &Registry) -> Result<Self, ProxySetupError> {
        let http = reqwest::Client::builder()
            // The backend is the operator's; a redirect would send calls elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(ProxySetupError::Client)?;
        let mut hooks: [Option<(reqwest::Url, Duration)>; 6] = Default::default();
        for (hook, c) in config.hooks() {
            if let Some(c) = c {
                let url = reqwest::Url::parse(&c.url).map_err(|e| {
                    ProxySetupError::Setting(format!("proxy.{}.url: {e}", hook.name()))
                })?;
                hooks[hook.index()] = Some((url, c.timeout));
            }
        }
        let forward = config
            .forward_headers
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                    .map_err(|e| ProxySetupError::Setting(format!("proxy.forward_headers: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut static_headers = HeaderMap::new();
        for (name, value) in &config.static_headers {
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| ProxySetupError::Setting(format!("proxy.static_headers: {e}")))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|e| ProxySetupError::Setting(format!("proxy.static_headers: {e}")))?;
            value.set_sensitive(true);
            static_headers.insert(name, value);
        }
        let calls = IntCounterVec::new(
            Opts::new(PROXY_CALLS, "Proxy hook calls, by hook and outcome"),
            &["hook", "outcome"],
        )
        .map_err(ProxySetupError::Metrics)?;
        let duration = HistogramVec::new(
            HistogramOpts::new(PROXY_DURATION, "Proxy hook call duration, by hook").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["hook"],
        )
        .map_err(ProxySetupError::Metrics)?;
        let in_flight = IntGauge::new(PROXY_IN_FLIGHT, "Proxy hook calls in flight")
            .map_err(ProxySetupError::Metrics)?;
        if config.any() {
            registry
                .register(Box::new(calls.clone()))
                .map_err(ProxySetupError::Metrics)?;
            registry
                .register(Box::new(duration.clone()))
                .map_err(ProxySetupError::Metrics)?;
            registry
                .register(Box::new(in_flight.clone()))
                .map_err(ProxySetupError::Metrics)?;
        }
        Ok(Self {
            http,
            hooks,
            forward,
            static_headers,
            slots: tokio::sync::Semaphore::new(config.max_in_flight.max(1)),
            calls,
            duration,
            in_flight,
            last_warned: Default::default(),
            started: Instant::now(),
        })
    }

    /// Whether `hook` is configured.
    pub(crate) fn has(&self, hook: Hook) -> bool {
        self.hooks[hook.index()].is_some()
    }

    /// Whether any hook is configured (then connections keep their forwarded headers).
    pub(crate) fn enabled(&self) -> bool {
        self.hooks.iter().any(Option::is_some)
    }

    /// The headers of a client's request that calls for its connection carry.
    pub(crate) fn forwarded(&self, headers: &HeaderMap) -> Forwarded {
        if !self.enabled() {
            return None;
        }
        let mut out = HeaderMap::new();
        for name in &self.forward {
            for value in headers.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        Some(Arc::new(out))
    }

    /// Calls `hook` with `body`. `Err` is a failed call; the caller answers it with a
    /// temporary error (or retries later, for the refresh hooks).
    pub(crate) async fn call<Req: Serialize, Res: DeserializeOwned>(
        &self,
        hook: Hook,
        forwarded: &Forwarded,
        body: &Req,
    ) -> Result<Answer<Res>, CallFailed> {
        let Some((url, timeout)) = &self.hooks[hook.index()] else {
            return Err(CallFailed::Invalid("hook not configured".into()));
        };
        let started = Instant::now();
        let outcome = match tokio::time::timeout(*timeout, self.send(url, forwarded, body)).await {
            Ok(r) => r.and_then(|bytes| decode::<Res>(&bytes)),
            Err(_) => Err(CallFailed::Timeout),
        };
        self.duration
            .with_label_values(&[hook.name()])
            .observe(started.elapsed().as_secs_f64());
        let label = match &outcome {
            Ok(Answer::Result(_)) => "ok",
            Ok(Answer::Error(_)) => "error",
            Ok(Answer::Disconnect(..)) => "disconnect",
            Err(e) => e.label(),
        };
        self.calls.with_label_values(&[hook.name(), label]).inc();
        if let Err(e) = &outcome {
            self.warn(hook, e);
        }
        outcome
    }

    async fn send<Req: Serialize>(
        &self,
        url: &reqwest::Url,
        forwarded: &Forwarded,
        body: &Req,
    ) -> Result<Vec<u8>, CallFailed> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| CallFailed::Timeout)?;
        self.in_flight.inc();
        let _in_flight = Gauge(&self.in_flight);
        let body = serde_json::to_vec(body).map_err(|e| CallFailed::Invalid(e.to_string()))?;
        let mut headers = forwarded.as_deref().cloned().unwrap_or_default();
        for (name, value) in &self.static_headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut response = self
            .http
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(CallFailed::Unreachable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(CallFailed::Status(response.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(CallFailed::Unreachable)? {
            if bytes.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(CallFailed::Invalid(format!(
                    "reply larger than {MAX_REPLY_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    fn warn(&self, hook: Hook, e: &CallFailed) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = &self.last_warned[hook.index()];
        let previous = last.load(Ordering::Relaxed);
        if (previous == 0 || now.saturating_sub(previous) >= 10_000)
            && last
                .compare_exchange(previous, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(hook = hook.name(), error = %herald_broker::Chain(e), "proxy call failed (more failures of this hook within 10s are counted in herald_proxy_calls_total, not logged)");
        } else {
            tracing::debug!(hook = hook.name(), error = %herald_broker::Chain(e), "proxy call failed");
        }
    }
}

/// Decrements the in-flight gauge however the call ends (a timeout drops the future).
struct Gauge<'a>(&'a IntGauge);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads a reply body into an answer, checking the backend's codes.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Answer<T>, CallFailed> {
    let reply: Reply<T> =
        serde_json::from_slice(bytes).map_err(|e| CallFailed::Invalid(e.to_string()))?;
    match reply {
        Reply {
            disconnect: Some(AppDisconnect { code, reason }),
            ..
        } => {
            // The application's own close codes: 4000–4499 reconnect, 4500–4999 do not.
            let code = u16::try_from(code)
                .ok()
                .filter(|c| (4000..=4999).contains(c))
                .ok_or_else(|| {
                    CallFailed::Invalid(format!("disconnect code {code} is outside 4000–4999"))
                })?;
            Ok(Answer::Disconnect(code, truncate(reason, 123)))
        }
        Reply {
            error:
                Some(AppError {
                    code,
                    message,
                    temporary,
                }),
            ..
        } => {
            // Herald's own codes (100–112) mean what they mean everywhere; the
            // application's are 400–1999.
            if !(100..=1999).contains(&code) {
                return Err(CallFailed::Invalid(format!(
                    "error code {code} is outside 100–1999"
                )));
            }
            Ok(Answer::Error(herald_protocol::Error {
                code,
                message: truncate(message, 256),
                temporary,
            }))
        }
        Reply {
            result: Some(result),
            ..
        } => Ok(Answer::Result(result)),
        Reply { .. } => Err(CallFailed::Invalid(
            "the reply has no result, error or disconnect".into(),
        )),
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let ok: Answer<wire::RpcResult> =
            decode(br#"{"result":{"data":{"a":1}}}"#).expect("result");
        assert!(matches!(ok, Answer::Result(r) if r.data.is_some()));
        let err: Answer<wire::RpcResult> =
            decode(br#"{"error":{"code":1001,"message":"no","temporary":false}}"#).expect("error");
        assert!(matches!(err, Answer::Error(e) if e.code == 1001 && !e.temporary));
        let bye: Answer<wire::RpcResult> =
            decode(br#"{"disconnect":{"code":4500,"reason":"banned"}}"#).expect("disconnect");
        assert!(matches!(bye, Answer::Disconnect(4500, r) if r == "banned"));
        for bad in [
            &br#"{"disconnect":{"code":3000,"reason":"x"}}"#[..],
            br#"{"error":{"code":5000}}"#,
            br#"{}"#,
            b"not json",
            br#"{"result":{"data":{"broken"}}}"#,
        ] {
            assert!(
                matches!(decode::<wire::RpcResult>(bad), Err(CallFailed::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reasons_are_cut_on_character_boundaries() {
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }

    #[test]
    fn settings_are_checked() {
        let config: ProxyConfig = toml::from_str(
            r#"
forward_headers = ["Cookie", "upgrade", "Sec-WebSocket-Key", "bad header"]
max_in_flight = 0
[connect]
url = "ftp://backend/connect"
[rpc]
url = "http://backend/rpc"
timeout = "0s"
"#,
        )
        .expect("well-typed");
        let at: Vec<String> = config.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            at,
            [
                "connect.url",
                "rpc.timeout",
                "forward_headers",
                "forward_headers",
                "forward_headers",
                "max_in_flight"
            ]
        );
        assert!(ProxyConfig::default().problems().is_empty());
    }

    #[test]
    fn only_listed_headers_are_forwarded() {
        let config = ProxyConfig {
            connect: Some(HookConfig {
                url: "http://127.0.0.1:9/connect".into(),
                timeout: Duration::from_secs(1),
            }),
            ..ProxyConfig::default()
        };
        let proxy = Proxy::new(&config, &Registry::new()).expect("builds");
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("session=abc"));
        headers.insert("x-user-id", HeaderValue::from_static("admin"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        let forwarded = proxy.forwarded(&headers).expect("proxy on");
        assert_eq!(forwarded.len(), 2);
        assert!(forwarded.get("x-user-id").is_none());
        let off = Proxy::new(&ProxyConfig::default(), &Registry::new()).expect("builds");
        assert!(off.forwarded(&headers).is_none());
    }
}
