//! The transports a client can connect over besides WebSocket: HTTP-streaming and SSE
//! with commands posted to `/emulation` (bidirectional emulation, routed to the session's
//! node through the broker), and the unidirectional WebSocket, SSE and HTTP-streaming
//! endpoints for clients without an SDK. Each one feeds the same connection task as a
//! WebSocket does, through an adapter.

pub(crate) mod cors;
pub(crate) mod emulation;
pub(crate) mod gzip;
pub(crate) mod http;
pub(crate) mod resume;
pub(crate) mod stream;
pub(crate) mod uni;
pub(crate) mod websocket;

/// The largest request body an HTTP transport reads (a connect request, or a batch of
/// emulated commands).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// How one client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// A WebSocket speaking the bidirectional protocol.
    WebSocket,
    /// A streaming HTTP response, commands posted to `/emulation`.
    HttpStream,
    /// Server-sent events, commands posted to `/emulation`.
    Sse,
    /// A WebSocket carrying only pushes after the connect request.
    UniWebSocket,
    /// A streaming HTTP response of pushes.
    UniHttpStream,
    /// Server-sent events of pushes.
    UniSse,
}

impl TransportKind {
    /// The name used in logs and metrics (and by the SDKs).
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::HttpStream => "http_stream",
            TransportKind::Sse => "sse",
            TransportKind::UniWebSocket => "uni_websocket",
            TransportKind::UniHttpStream => "uni_http_stream",
            TransportKind::UniSse => "uni_sse",
        }
    }

    /// Whether the client sends commands after connecting (and answers pings).
    pub(crate) fn bidirectional(self) -> bool {
        matches!(
            self,
            TransportKind::WebSocket | TransportKind::HttpStream | TransportKind::Sse
        )
    }

    /// Whether the client's commands arrive through `/emulation`.
    pub(crate) fn emulated(self) -> bool {
        matches!(self, TransportKind::HttpStream | TransportKind::Sse)
    }
}

/// The transport of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transport {
    /// Which transport.
    pub kind: TransportKind,
    /// The session id given to the client (emulated and unidirectional transports),
    /// empty for WebSocket.
    pub session: String,
    /// Positions to recover from that override the connect request's own (an SSE
    /// client's `Last-Event-ID`, see [`resume`]).
    pub resume: resume::Positions,
    /// The encoding of its frames: Protobuf on WebSocket when asked for, JSON otherwise.
    pub encoding: herald_protocol::Encoding,
    /// The headers of the client's request that proxy calls carry (when a hook is on).
    pub forwarded: crate::proxy::Forwarded,
}

impl Transport {
    /// A bidirectional WebSocket in `encoding`.
    pub(crate) fn websocket(encoding: herald_protocol::Encoding) -> Self {
        Self {
            kind: TransportKind::WebSocket,
            session: String::new(),
            resume: resume::Positions::new(),
            encoding,
            forwarded: None,
        }
    }

    /// Any other transport, with a fresh session id.
    pub(crate) fn with_session(kind: TransportKind) -> Self {
        Self {
            kind,
            session: uuid::Uuid::new_v4().to_string(),
            resume: resume::Positions::new(),
            encoding: herald_protocol::Encoding::Json,
            forwarded: None,
        }
    }

    /// Where a channel's subscription starts: `wanted` (from the connect request),
    /// unless [`Transport::resume`] names a later position for it.
    pub(crate) fn start_of(
        &self,
        channel: &str,
        wanted: Option<&herald_protocol::SubscribeRequest>,
    ) -> (bool, u64, String) {
        if let Some(resume::Position(offset, epoch)) = self.resume.get(channel) {
            return (true, *offset, epoch.clone());
        }
        wanted.map_or((false, 0, String::new()), |s| {
            (s.recover, s.offset, s.epoch.clone())
        })
    }
}
