//! The WebSocket endpoints' opening handshake and socket. A node serves HTTP/1.1
//! WebSockets through Herald's own frame layer (`herald-websocket`): it holds no read or
//! write buffer while a connection is idle, and negotiates permessage-deflate with
//! clients that offer it when `client.websocket_compression` is on. WebSockets over
//! HTTP/2 go through the HTTP library's implementation. Either way the connection task
//! gets the same [`Message`]s.

use crate::config::ClientConfig;
use crate::node::Node;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use herald_websocket::{Config, Deflate, Role, WebSocket};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// An opening request that passed the handshake checks, in the form of the frame layer
/// that will serve it.
#[derive(Debug)]
pub(crate) enum Upgrade {
    /// The HTTP library's WebSocket.
    Library(WebSocketUpgrade),
    /// Herald's own frame layer.
    Herald(Handshake),
}

impl Upgrade {
    /// Checks the opening request; the refusal is the answer to send.
    pub(crate) async fn from_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Response> {
        if parts.version <= Version::HTTP_11 {
            Handshake::from_parts(parts, node.config.client.websocket_compression)
                .map(Upgrade::Herald)
                .map_err(IntoResponse::into_response)
        } else {
            WebSocketUpgrade::from_request_parts(parts, node)
                .await
                .map(Upgrade::Library)
                .map_err(IntoResponse::into_response)
        }
    }

    /// Chooses the Protobuf subprotocol if the client offered it, and says whether it did
    /// (it is answered only then).
    pub(crate) fn with_protobuf(self) -> (Self, bool) {
        let protobuf = herald_protocol::protobuf::SUBPROTOCOL;
        match self {
            Upgrade::Library(upgrade) => {
                let upgrade = upgrade.protocols([protobuf]);
                let chosen = upgrade.selected_protocol().is_some();
                (Upgrade::Library(upgrade), chosen)
            }
            Upgrade::Herald(mut handshake) => {
                handshake.protocol = handshake.offers_protocol(protobuf).then_some(protobuf);
                let chosen = handshake.protocol.is_some();
                (Upgrade::Herald(handshake), chosen)
            }
        }
    }

    /// Answers the request and runs `serve` on the socket once the connection is
    /// upgraded.
    pub(crate) fn accept<F, Fut>(
        self,
        client: &ClientConfig,
        metrics: &crate::metrics::Metrics,
        serve: F,
    ) -> Response
    where
        F: FnOnce(AnySocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self {
            Upgrade::Library(upgrade) => upgrade
                .read_buffer_size(client.read_buffer_bytes)
                .write_buffer_size(client.write_buffer_bytes)
                .max_message_size(client.max_frame_bytes)
                .max_frame_size(client.max_frame_bytes)
                .on_upgrade(move |socket| {
                    // As below: the connection is a task of its own.
                    tokio::spawn(serve(AnySocket::Library(Box::new(socket))));
                    std::future::ready(())
                }),
            Upgrade::Herald(handshake) => handshake.accept(client, metrics, move |socket| {
                serve(AnySocket::Herald(socket))
            }),
        }
    }
}

/// The socket the connection task gets from a WebSocket endpoint.
#[derive(Debug)]
// The common variant is inline on purpose: boxing it would add an allocation to every
// connection, where the rare one (HTTP/2) pays for its box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnySocket {
    /// The HTTP library's WebSocket (HTTP/2 only; boxed, as it is larger than Herald's
    /// and every connection's task would otherwise hold its size).
    Library(Box<axum::extract::ws::WebSocket>),
    /// Herald's own frame layer.
    Herald(Adapter<TokioIo<hyper::upgrade::Upgraded>>),
}

/// A valid HTTP/1.1 WebSocket opening request, not yet answered.
#[derive(Debug)]
pub(crate) struct Handshake {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` answer, when an offer was accepted.
    extensions: Option<&'static str>,
    /// The subprotocol chosen (one the client offered).
    protocol: Option<&'static str>,
}

impl Handshake {
    /// Checks the opening request (the same checks, statuses and order as the HTTP
    /// library's WebSocket upgrade) and, when `compression` is allowed, picks the answer
    /// to its extension offers.
    pub(crate) fn from_parts(
        parts: &mut Parts,
        compression: bool,
    ) -> Result<Self, (StatusCode, &'static str)> {
        if parts.method != Method::GET {
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket opening request must be a GET",
            ));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err((
                StatusCode::BAD_REQUEST,
                "the Connection header does not include 'upgrade'",
            ));
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err((
                StatusCode::BAD_REQUEST,
                "the Upgrade header does not include 'websocket'",
            ));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err((
                StatusCode::BAD_REQUEST,
                "the Sec-WebSocket-Key header is missing",
            ));
        };
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err((
                StatusCode::BAD_REQUEST,
                "the Sec-WebSocket-Version header is not 13",
            ));
        }
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err((
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        let protocols = values(&parts.headers, header::SEC_WEBSOCKET_PROTOCOL)
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .collect();
        let extensions = compression
            .then(|| {
                herald_websocket::negotiate(values(
                    &parts.headers,
                    header::SEC_WEBSOCKET_EXTENSIONS,
                ))
            })
            .flatten();
        Ok(Handshake {
            key,
            on_upgrade,
            protocols,
            extensions,
            protocol: None,
        })
    }

    /// Whether the client offered this subprotocol.
    fn offers_protocol(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p == protocol)
    }

    /// Answers 101 and runs `serve` on the upgraded connection.
    fn accept<F, Fut>(
        self,
        client: &ClientConfig,
        metrics: &crate::metrics::Metrics,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Adapter<TokioIo<hyper::upgrade::Upgraded>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let deflate = self.extensions.map(|_| Deflate {
            level: client.websocket_compression_level,
            min_bytes: client.websocket_compression_min_bytes,
        });
        if deflate.is_some() {
            metrics.websocket_compressed.inc();
        }
        let config = Config {
            role: Role::Server,
            max_message: client.max_frame_bytes,
            read_buffer: client.read_buffer_bytes,
            write_buffer: client.write_buffer_bytes,
            deflate,
        };
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocket::new(TokioIo::new(upgraded), config, &[]);
                    // A task of its own, not awaited here: this one ends, and the
                    // connection's task does not carry the upgrade's state (the
                    // settings, the callback, the upgrade future) for its whole life.
                    tokio::spawn(serve(Adapter(socket)));
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) =
            HeaderValue::from_str(&herald_websocket::accept_key(self.key.as_bytes()))
        {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        if let Some(answer) = self.extensions {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(answer),
            );
        }
        response
    }
}

/// Every value of a header that is text.
fn values(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Herald's WebSocket seen as the HTTP library's: the same [`Message`]s and errors
/// (the frame layer's errors boxed in `axum::Error`).
#[derive(Debug)]
pub(crate) struct Adapter<T>(WebSocket<T>);

fn to_axum(message: herald_websocket::Message) -> Result<Message, axum::Error> {
    Ok(match message {
        herald_websocket::Message::Text(text) => {
            Message::Text(Utf8Bytes::try_from(text).map_err(axum::Error::new)?)
        }
        herald_websocket::Message::Binary(data) => Message::Binary(data),
        herald_websocket::Message::Ping(data) => Message::Ping(data),
        herald_websocket::Message::Pong(data) => Message::Pong(data),
        herald_websocket::Message::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
            code: f.code,
            reason: Utf8Bytes::from(f.reason),
        })),
    })
}

fn from_axum(message: Message) -> herald_websocket::Message {
    match message {
        Message::Text(text) => herald_websocket::Message::Text(Bytes::from(text)),
        Message::Binary(data) => herald_websocket::Message::Binary(data),
        Message::Ping(data) => herald_websocket::Message::Ping(data),
        Message::Pong(data) => herald_websocket::Message::Pong(data),
        Message::Close(frame) => {
            herald_websocket::Message::Close(frame.map(|f| herald_websocket::CloseFrame {
                code: f.code,
                reason: f.reason.as_str().to_owned(),
            }))
        }
    }
}

impl<T> Stream for Adapter<T>
where
    WebSocket<T>: Stream<Item = Result<herald_websocket::Message, herald_websocket::Error>> + Unpin,
{
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|result| result.map_err(axum::Error::new).and_then(to_axum)))
    }
}

impl<T> Sink<Message> for Adapter<T>
where
    WebSocket<T>: Sink<herald_websocket::Message, Error = herald_websocket::Error> + Unpin,
{
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0)
            .poll_ready(cx)
            .map_err(axum::Error::new)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.0)
            .start_send(from_axum(item))
            .map_err(axum::Error::new)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0)
            .poll_flush(cx)
            .map_err(axum::Error::new)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0)
            .poll_close(cx)
            .map_err(axum::Error::new)
    }
}

impl Stream for AnySocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            AnySocket::Library(s) => Pin::new(s).poll_next(cx),
            AnySocket::Herald(s) => Pin::new(s).poll_next(cx),
        }
    }
}

impl Sink<Message> for AnySocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            AnySocket::Library(s) => Pin::new(s).poll_ready(cx),
            AnySocket::Herald(s) => Pin::new(s).poll_ready(cx),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        match self.get_mut() {
            AnySocket::Library(s) => Pin::new(s).start_send(item),
            AnySocket::Herald(s) => Pin::new(s).start_send(item),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            AnySocket::Library(s) => Pin::new(s).poll_flush(cx),
            AnySocket::Herald(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            AnySocket::Library(s) => Pin::new(s).poll_close(cx),
            AnySocket::Herald(s) => Pin::new(s).poll_close(cx),
        }
    }
}
