//! The HTTP endpoints of the streaming transports: HTTP-streaming and SSE (bidirectional
//! through `/emulation`, and unidirectional), and the unidirectional WebSocket. Each one
//! admits the client as the WebSocket endpoint does, then hands a session to the same
//! connection task.

use super::stream::{Format, StreamSocket};
use super::uni::{UniWebSocket, connect_command};
use super::{MAX_BODY_BYTES, Transport, TransportKind};
use crate::admission::SocketPermit;
use crate::node::Node;
use crate::transport::websocket::Upgrade;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;

/// Response body chunks buffered per stream before the connection task waits: its own
/// queue, counted and cut off when a client stops reading, holds the rest.
const BODY_CHUNKS: usize = 8;

/// Why a transport request is refused before a session starts.
#[derive(Debug)]
pub(crate) enum Refused {
    /// This status, with this text.
    Status(StatusCode, &'static str),
    /// An admission rule refused the client.
    Admission(crate::admission::Refusal),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Status(code, text) => (code, text).into_response(),
            Refused::Admission(refusal) => refusal.into_response(),
        }
    }
}

/// Reads a request body of at most [`MAX_BODY_BYTES`]: 413 when larger, 400 when it
/// cannot be read.
pub(crate) async fn read_body(body: Body) -> Result<Bytes, Refused> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Refused::Status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than 64 KiB",
                )
            } else {
                Refused::Status(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
            }
        })
}

/// Lets a new client in, as the WebSocket endpoint does: not while draining, and within
/// the admission limits (the Origin rule is checked by [`super::cors::cors`]).
fn admit(node: &Node, parts: &Parts) -> Result<SocketPermit, Refused> {
    if node.draining() {
        return Err(Refused::Status(StatusCode::SERVICE_UNAVAILABLE, "draining"));
    }
    let admission = &node.admission;
    let ip = crate::server::peer(parts).map(|p| admission.client_ip(p, &parts.headers));
    admission.admit_socket(ip).map_err(Refused::Admission)
}

/// The body as UTF-8 text, or 400.
fn text(body: &Bytes) -> Result<String, Refused> {
    String::from_utf8(body.to_vec())
        .map_err(|_| Refused::Status(StatusCode::BAD_REQUEST, "the request body is not UTF-8"))
}

/// Refuses a Protobuf body: the streaming transports speak JSON.
fn json_only(parts: &Parts) -> Result<(), Refused> {
    let protobuf = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/octet-stream"));
    if protobuf {
        return Err(Refused::Status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the Protobuf protocol is served over WebSocket only; this transport speaks JSON",
        ));
    }
    Ok(())
}

/// Whether the request's `Accept-Encoding` accepts gzip.
fn accepts_gzip(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(super::gzip::accepted)
}

/// The `cf_connect` query parameter, decoded.
fn cf_connect(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "cf_connect")
        .map(|(_, v)| v.into_owned())
}

/// Starts a session on a streaming response: `first` is what the connection task reads
/// first (the connect command).
fn open_stream(
    node: &Arc<Node>,
    transport: Transport,
    format: Format,
    first: String,
    permit: SocketPermit,
    accepts_gzip: bool,
) -> Response {
    let kind = transport.kind;
    let (commands, inbound) = mpsc::channel(super::emulation::SESSION_QUEUE);
    // The queue is empty and has room.
    let _ = commands.try_send(first);
    let (out, mut body) = mpsc::channel::<Bytes>(BODY_CHUNKS);
    let (guard, keep_open) = if kind.emulated() {
        (
            Some(node.emulation.register(&transport.session, commands)),
            None,
        )
    } else {
        (None, Some(commands))
    };
    let events = format.events();
    if events {
        // Puts the headers on the wire at once, before the first event.
        let _ = out.try_send(Bytes::from_static(b"\r\n"));
    }
    let socket = StreamSocket::new(inbound, keep_open, out, format);
    let task_node = node.clone();
    node.tasks
        .spawn(crate::connection::serve(socket, task_node, transport).map(move |()| drop(guard)));
    let gzip = node.config.client.stream_gzip && accepts_gzip;
    let mut compressor = gzip.then(super::gzip::Gzip::new);
    let stream = futures_util::stream::poll_fn(move |cx| {
        // The admission slot lives as long as the response, not only the session: a
        // client that stopped reading keeps its connection (and what is buffered for
        // it) until it goes, and is counted until then.
        let _held = &permit;
        let Some(compressor) = compressor.as_mut() else {
            return body
                .poll_recv(cx)
                .map(|chunk| chunk.map(Ok::<_, Infallible>));
        };
        match body.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(compressor.chunk(&chunk)))),
            // The trailer once, then the end.
            Poll::Ready(None) => {
                let end = compressor.finish();
                Poll::Ready((!end.is_empty()).then_some(Ok(end)))
            }
            Poll::Pending => Poll::Pending,
        }
    });
    let content_type = if events {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    // Proxies that buffer responses (nginx) pass this one through as it is written.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// The request's connect data: the `cf_connect` parameter of a GET, or a POST's body.
async fn connect_data(parts: &Parts, body: Body) -> Result<Option<String>, Refused> {
    if parts.method == Method::GET {
        return Ok(cf_connect(parts));
    }
    json_only(parts)?;
    let body = read_body(body).await?;
    text(&body).map(Some)
}

/// Admits the client and opens its stream, or answers why not.
fn start(
    node: &Arc<Node>,
    parts: &Parts,
    mut transport: Transport,
    format: Format,
    first: String,
) -> Response {
    transport.forwarded = node.proxy.forwarded(&parts.headers);
    match admit(node, parts) {
        Ok(permit) => open_stream(node, transport, format, first, permit, accepts_gzip(parts)),
        Err(r) => r.into_response(),
    }
}

/// `POST /connection/http_stream`: the body holds the connect command; the response
/// streams replies and pushes, one JSON object per line.
pub(crate) async fn http_stream(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(r) = json_only(&parts) {
        return r.into_response();
    }
    match read_body(body).await.and_then(|b| text(&b)) {
        Ok(first) => {
            let transport = Transport::with_session(TransportKind::HttpStream);
            start(&node, &parts, transport, Format::Lines, first)
        }
        Err(r) => r.into_response(),
    }
}

/// `GET /connection/sse?cf_connect=…` (or a POST with the commands as the body): the
/// response streams replies and pushes as server-sent events.
pub(crate) async fn sse(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match connect_data(&parts, body).await {
        Ok(Some(first)) if !first.trim().is_empty() => {
            let transport = Transport::with_session(TransportKind::Sse);
            start(&node, &parts, transport, Format::Events, first)
        }
        Ok(_) => (
            StatusCode::BAD_REQUEST,
            "the connect command is missing: pass it as the cf_connect query parameter (or as a POST body)",
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

/// A unidirectional stream: the request (GET `cf_connect`, or a POST body; absent means
/// an empty request) is a bare connect request.
async fn uni_stream(
    node: &Arc<Node>,
    request: Request,
    kind: TransportKind,
    format: Format,
) -> Response {
    let (parts, body) = request.into_parts();
    let connect = match connect_data(&parts, body).await {
        Ok(r) => connect_command(&r.unwrap_or_default()),
        Err(r) => return r.into_response(),
    };
    let mut transport = Transport::with_session(kind);
    if format == Format::UniEvents {
        // After a drop the browser reconnects with the same URL, and the last event id
        // it saw: the positions it names are newer than the URL's.
        transport.resume = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(super::resume::decode)
            .unwrap_or_default();
    }
    start(node, &parts, transport, format, connect)
}

/// `POST /connection/uni_http_stream`: the body is a connect request; the response
/// streams pushes, one JSON object per line.
pub(crate) async fn uni_http_stream(State(node): State<Arc<Node>>, request: Request) -> Response {
    uni_stream(
        &node,
        request,
        TransportKind::UniHttpStream,
        Format::UniLines,
    )
    .await
}

/// `GET /connection/uni_sse?cf_connect=…` (absent: an empty connect request) or a POST
/// with the request as the body: the response streams pushes as server-sent events,
/// each publication with an id that resumes it (see [`super::resume`]).
pub(crate) async fn uni_sse(State(node): State<Arc<Node>>, request: Request) -> Response {
    uni_stream(&node, request, TransportKind::UniSse, Format::UniEvents).await
}

/// `GET /connection/uni_websocket`: the first message (or `cf_connect`) is the connect
/// request; each push then comes as a text message of its own.
pub(crate) async fn uni_websocket(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match Upgrade::from_parts(&mut parts, &node).await {
        Ok(u) => u,
        Err(refusal) => return refusal,
    };
    let permit = match admit(&node, &parts) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let connect = cf_connect(&parts);
    let forwarded = node.proxy.forwarded(&parts.headers);
    let tracker_token = node.tasks.token();
    let client = node.config.client.clone();
    let metrics = node.metrics.clone();
    upgrade.accept(&client, &metrics, move |socket| {
        let socket = UniWebSocket::new(socket, connect);
        let mut transport = Transport::with_session(TransportKind::UniWebSocket);
        transport.forwarded = forwarded;
        // The permit and the tracker's token last as long as the connection.
        crate::connection::serve(socket, node, transport).map(move |()| {
            drop(permit);
            drop(tracker_token);
        })
    })
}
