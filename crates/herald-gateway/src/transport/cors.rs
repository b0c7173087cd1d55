//! The Origin rule and CORS for the transport endpoints: a browser page on an allowed
//! origin may open streams and post commands from another origin, with cookies.

use crate::node::Node;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Applies the Origin rule (as the WebSocket endpoint does, also to requests without an
/// `Origin`, which the rule decides on), answers preflights, and marks the answers to
/// an allowed origin.
pub(crate) async fn cors(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let (parts, body) = request.into_parts();
    let ip = crate::server::peer(&parts).map(|p| node.admission.client_ip(p, &parts.headers));
    if let Err(refusal) = node.admission.check_origin(&parts.headers, ip) {
        return refusal.into_response();
    }
    let mut response = if parts.method == Method::OPTIONS {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        // The origin is allowed: whatever headers its page sends may come.
        if let Some(requested) = parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("300"),
        );
        preflight
    } else {
        next.run(Request::from_parts(parts, body)).await
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// The handler behind `OPTIONS` routes; [`cors`] answers them before it runs.
pub(crate) async fn preflight() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
