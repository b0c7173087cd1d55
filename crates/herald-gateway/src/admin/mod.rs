//! The admin page (`/admin`): the cluster's nodes, its channels, a live tail of one
//! channel, a publish form and the recent disconnects, for the people who run Herald.
//!
//! It is off unless `admin.enabled`. A login with `admin.password` gives a session
//! cookie: a short JWT signed with `admin.secret`, so that it works on every node of the
//! cluster, `HttpOnly`, `SameSite=Strict` and limited to `/admin`. The page then calls
//! the server API through `/admin/api/<method>` (which also wants the `X-Herald-Admin`
//! header, so no other site can make a browser send such a request), and follows a
//! channel through `/admin/tail` (with the same header), a stream of server-sent events
//! fed by the node's hub.
//! The API key never reaches the browser. Page, script and styles are served by the
//! node; the page loads nothing from elsewhere (its content security policy says so).

use crate::hub::{ConnHandle, Outgoing, Subscriber};
use crate::node::Node;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// The session cookie's name.
const COOKIE: &str = "herald_admin";
/// The header every API call from the page carries: a page of another site cannot send
/// it without a CORS preflight, which `/admin` never grants.
const CALL_HEADER: &str = "x-herald-admin";
/// The audience of session tokens, so no other token signed with the same secret opens
/// the page.
const AUDIENCE: &str = "herald-admin";
/// Live tails one node serves at once.
const MAX_TAILS: usize = 16;
/// Publications a tail may have queued before it is ended as too slow.
const TAIL_QUEUE: usize = 256;
/// Failed logins a node accepts per minute from one address; beyond that the address
/// waits out the minute, so guessing a 12-character password takes lifetimes, and a
/// guesser locks out only itself.
const FAILED_LOGINS_PER_MINUTE: u32 = 20;
/// Addresses whose failures a node remembers; past this, the stale ones go first.
const FAILED_LOGIN_ADDRESSES: usize = 4096;
/// A comment line that keeps an idle tail's connection open through proxies.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The admin page's state on one node.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    tails: Arc<AtomicUsize>,
    /// Per client address: when its first failure of the current minute was, and how
    /// many there were.
    failed_logins: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl AdminState {
    /// Whether `ip` may try a password now (its minute's failures are not spent).
    fn login_allowed(&self, ip: IpAddr) -> bool {
        let failed = self.failed_logins.lock();
        let within = |(since, n): &(Instant, u32)| {
            since.elapsed() >= MINUTE || *n < FAILED_LOGINS_PER_MINUTE
        };
        match failed.get(&ip) {
            Some(entry) => within(entry),
            // An address not kept shares the allowance of all those not kept.
            None if failed.len() >= FAILED_LOGIN_ADDRESSES => {
                failed.get(&IpAddr::from([0u8; 4])).is_none_or(within)
            }
            None => true,
        }
    }

    /// Counts a failed login from `ip`.
    fn login_failed(&self, ip: IpAddr) {
        let mut failed = self.failed_logins.lock();
        if failed.len() >= FAILED_LOGIN_ADDRESSES {
            failed.retain(|_, (since, _)| since.elapsed() < MINUTE);
        }
        // Thousands of addresses failing within one minute: the unspecified address
        // stands for every one not kept.
        let ip = if failed.len() >= FAILED_LOGIN_ADDRESSES && !failed.contains_key(&ip) {
            IpAddr::from([0u8; 4])
        } else {
            ip
        };
        let entry = failed.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= MINUTE {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// Whether the page is on: enabled, and with a password and secret of the lengths the
/// configuration check asks for (a node embedded without that check stays closed
/// rather than open to an empty password).
fn enabled(node: &Node) -> bool {
    let admin = &node.config.admin;
    admin.enabled && admin.password_long_enough() && admin.secret_long_enough()
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    exp: u64,
}

/// The routes under `/admin`. When the page is off they answer 404 with how to turn
/// it on.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/admin.js", get(script))
        .route("/admin/admin.css", get(style))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/api/{method}", post(api))
        .route("/admin/tail", get(tail))
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                secure(response.headers_mut());
                response
            },
        ))
}

/// Headers on every admin response: nothing from elsewhere, no framing, no caching.
fn secure(headers: &mut HeaderMap) {
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": { "message": message } }))).into_response()
}

fn off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "the admin page is off: set admin.enabled, admin.password and admin.secret (HERALD_ADMIN_ENABLED=true, HERALD_ADMIN_PASSWORD, HERALD_ADMIN_SECRET)",
    )
}

fn asset(node: &Node, content_type: &'static str, body: &'static str) -> Response {
    if !enabled(node) {
        return off();
    }
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page(State(node): State<Arc<Node>>) -> Response {
    asset(&node, "text/html; charset=utf-8", PAGE)
}

async fn script(State(node): State<Arc<Node>>) -> Response {
    asset(&node, "text/javascript; charset=utf-8", SCRIPT)
}

async fn style(State(node): State<Arc<Node>>) -> Response {
    asset(&node, "text/css; charset=utf-8", STYLE)
}

/// A session token for `ttl`.
fn session_token(secret: &str, ttl: Duration) -> Option<String> {
    let claims = Claims {
        sub: "admin".into(),
        aud: AUDIENCE.into(),
        exp: crate::auth::unix_now() + ttl.as_secs(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .ok()
}

/// Whether the request carries a valid session cookie.
fn signed_in(node: &Node, headers: &HeaderMap) -> bool {
    let Some(token) = cookie(headers, COOKIE) else {
        return false;
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(node.config.admin.secret.expose().as_bytes()),
        &validation,
    )
    .is_ok_and(|t| t.claims.sub == "admin")
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Secure` when the page was reached over HTTPS (directly or through a proxy that says
/// so), so that a plain `http://localhost` node still works.
fn cookie_attributes(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if https {
        "; Path=/admin; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/admin; HttpOnly; SameSite=Strict"
    }
}

fn from_page(headers: &HeaderMap) -> bool {
    headers.contains_key(CALL_HEADER)
}

#[derive(Deserialize)]
struct Login {
    password: String,
}

/// The largest login body read.
const LOGIN_BODY_BYTES: usize = 4096;

async fn login(State(node): State<Arc<Node>>, request: axum::extract::Request) -> Response {
    let admin = &node.config.admin;
    if !enabled(&node) {
        return off();
    }
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if !from_page(headers) {
        return error(StatusCode::FORBIDDEN, "send the X-Herald-Admin header");
    }
    let ip = crate::server::peer(&parts).map_or(IpAddr::from([127, 0, 0, 1]), |peer| {
        node.admission.client_ip(peer, headers)
    });
    if !node.admin.login_allowed(ip) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address: wait a minute",
        );
    }
    let Ok(body) = axum::body::to_bytes(body, LOGIN_BODY_BYTES).await else {
        return error(StatusCode::BAD_REQUEST, r#"send {"password": "…"}"#);
    };
    let Ok(Login { password }) = serde_json::from_slice::<Login>(&body) else {
        return error(StatusCode::BAD_REQUEST, r#"send {"password": "…"}"#);
    };
    if !crate::api::secret_matches(&password, admin.password.expose()) {
        node.admin.login_failed(ip);
        tracing::warn!(%ip, "admin login failed");
        // A wrong guess costs the guesser a moment too.
        tokio::time::sleep(Duration::from_millis(250)).await;
        return error(StatusCode::UNAUTHORIZED, "wrong password");
    }
    let Some(token) = session_token(admin.secret.expose(), admin.session_ttl) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot make a session");
    };
    tracing::info!(%ip, "admin login");
    let cookie = format!(
        "{COOKIE}={token}; Max-Age={}{}",
        admin.session_ttl.as_secs(),
        cookie_attributes(headers)
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if !enabled(&node) {
        return off();
    }
    if !from_page(&headers) {
        return error(StatusCode::FORBIDDEN, "send the X-Herald-Admin header");
    }
    let cookie = format!("{COOKIE}=; Max-Age=0{}", cookie_attributes(&headers));
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Why a request may not use the page's API, if it may not.
fn refused(node: &Node, headers: &HeaderMap, call: bool) -> Option<Response> {
    if !enabled(node) {
        return Some(off());
    }
    if call && !from_page(headers) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "send the X-Herald-Admin header",
        ));
    }
    if !signed_in(node, headers) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "not signed in, or the session ended",
        ));
    }
    None
}

/// `POST /admin/api/<method>`: the server API, for a signed-in page.
async fn api(
    State(node): State<Arc<Node>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = refused(&node, &headers, true) {
        return refusal;
    }
    crate::api::answer(&node, &method, &body).await
}

#[derive(Deserialize)]
struct TailQuery {
    channel: String,
}

/// Ends a tail's subscription and frees its place however the stream ends.
struct TailGuard {
    node: Arc<Node>,
    channel: String,
    conn: crate::hub::ConnId,
    tails: Arc<AtomicUsize>,
}

impl Drop for TailGuard {
    fn drop(&mut self) {
        self.tails.fetch_sub(1, Ordering::AcqRel);
        let node = self.node.clone();
        let channel = std::mem::take(&mut self.channel);
        let conn = self.conn;
        node.background
            .clone()
            .spawn(async move { node.hub.unsubscribe(&channel, conn).await });
    }
}

struct Tail {
    rx: crate::queue::Receiver<Outgoing>,
    closer: Arc<crate::hub::Closer>,
    shutdown: tokio_util::sync::CancellationToken,
    keepalive: tokio::time::Interval,
    ended: bool,
    _guard: TailGuard,
}

fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Tail {
    /// The next piece of the event stream, `None` after the end.
    async fn next(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let reason = loop {
            tokio::select! {
                item = self.rx.recv() => match item {
                    // Frames hold one JSON push each; the page reads `push.pub`.
                    Some(Outgoing::Publication(p)) => return Some(event("publication", &p.frame)),
                    Some(Outgoing::Push(_)) => {}
                    Some(Outgoing::Unsubscribe(order)) => break format!("unsubscribed ({:?})", order.code),
                    None => return None,
                },
                () = self.shutdown.cancelled() => {
                    break "the node is shutting down; follow again to reach another node".to_owned();
                }
                () = self.closer.requested() => {
                    break "the tail fell behind the channel and was stopped".to_owned();
                }
                _ = self.keepalive.tick() => return Some(Bytes::from_static(b": keepalive\n\n")),
            }
        };
        // The one `end` event: the stream ends after it.
        self.ended = true;
        let why = json!({ "reason": reason });
        Some(event("end", why.to_string().as_bytes()))
    }
}

/// `GET /admin/tail?channel=…`: the channel's publications as they arrive on this node,
/// as server-sent events (`publication`, then `end` if the node stops the tail).
async fn tail(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    query: Result<Query<TailQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refusal) = refused(&node, &headers, true) {
        return refusal;
    }
    let Ok(Query(TailQuery { channel })) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "name a channel: /admin/tail?channel=…",
        );
    };
    if let Err(e) = crate::api::resolve(&node, &channel) {
        return error(StatusCode::BAD_REQUEST, &e.message);
    }
    let tails = node.admin.tails.clone();
    if tails.fetch_add(1, Ordering::AcqRel) >= MAX_TAILS {
        tails.fetch_sub(1, Ordering::AcqRel);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node already serves its most live tails (16); close one",
        );
    }
    let id = node.next_conn_id();
    let client: Arc<str> = format!("admin-tail-{id}").into();
    let (tx, rx) = crate::queue::channel(TAIL_QUEUE);
    let closer = Arc::new(crate::hub::Closer::default());
    let handle = ConnHandle {
        id,
        client: client.clone(),
        user: Arc::from(""),
        tx,
        closer: closer.clone(),
    };
    let guard = TailGuard {
        node: node.clone(),
        channel: channel.clone(),
        conn: id,
        tails,
    };
    let subscriber = Subscriber {
        conn: handle,
        info: herald_protocol::ClientInfo {
            client: client.to_string(),
            ..Default::default()
        },
        join_leave: false,
        presence: false,
        delta: false,
    };
    if let Err(e) = node.hub.subscribe(&channel, subscriber).await {
        tracing::warn!(error = %herald_broker::Chain(&e), "admin tail not subscribed");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker did not take the subscription; try again",
        );
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Tail {
        rx,
        closer,
        shutdown: node.shutdown.clone(),
        keepalive,
        ended: false,
        _guard: guard,
    };
    let opening = event("open", json!({ "channel": channel }).to_string().as_bytes());
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(opening) })
            .chain(futures_util::stream::unfold(state, |mut tail| async move {
                let next = tail.next().await?;
                Some((Ok(next), tail))
            }));
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herald_admin=tok.en.x; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("tok.en.x"));
        assert_eq!(cookie(&headers, "herald"), None);
    }

    #[test]
    fn failed_logins_are_limited_per_minute_and_address() {
        let state = AdminState::default();
        let (guesser, admin) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..FAILED_LOGINS_PER_MINUTE {
            assert!(state.login_allowed(guesser));
            state.login_failed(guesser);
        }
        assert!(!state.login_allowed(guesser));
        assert!(
            state.login_allowed(admin),
            "a guesser locks out only itself"
        );
    }

    #[test]
    fn failing_addresses_are_bounded() {
        let state = AdminState::default();
        for i in 0..(FAILED_LOGIN_ADDRESSES as u32 + 100) {
            state.login_failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(state.failed_logins.lock().len() <= FAILED_LOGIN_ADDRESSES + 1);
        assert!(!state.login_allowed(IpAddr::from([0u8; 4])));
        assert!(
            !state.login_allowed(IpAddr::from([192, 168, 9, 9])),
            "a new address shares the spent allowance of those not kept"
        );
    }

    #[test]
    fn session_tokens_need_the_secret_and_the_audience() {
        let secret = "s".repeat(32);
        let token = session_token(&secret, Duration::from_secs(60)).expect("token");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        let decoded = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        );
        assert!(decoded.is_ok());
        let other = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret("t".repeat(32).as_bytes()),
            &validation,
        );
        assert!(other.is_err());
    }
}
