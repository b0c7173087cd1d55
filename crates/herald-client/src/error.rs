//! The SDK's error type: what a call, a subscription or the connection can fail with.

use herald_protocol::FrameError;
use std::time::Duration;

/// A boxed error from application code (a token refresher).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No reply (or no connection) within the call's timeout.
    #[error("timed out")]
    Timeout,
    /// The client is not connected and not trying to connect (never connected, or
    /// [`Client::disconnect`](crate::Client::disconnect) was called), or it was shut down.
    #[error("client is closed")]
    Closed,
    /// The connection dropped after the command was written and before its reply came,
    /// so the server may or may not have applied it.
    #[error("connection lost before the reply arrived")]
    Interrupted,
    /// The server ended the connection for good (a terminal close code such as 3500
    /// invalid token, or a non-temporary `connect` error).
    #[error("disconnected by the server: {code} {reason}")]
    Disconnected {
        /// The close code or reply error code.
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The server answered with an error reply.
    #[error("server error {code}: {message}")]
    Server {
        /// The reply error code (see [`herald_protocol::ErrorCode`]).
        code: u32,
        /// The server's message.
        message: String,
        /// The server says the same request may succeed later.
        temporary: bool,
    },
    /// A local subscription to this channel already exists on this client.
    #[error("already subscribed to channel {channel:?}")]
    AlreadySubscribed {
        /// The channel.
        channel: String,
    },
    /// The WebSocket transport failed.
    #[error("websocket transport error")]
    Transport(#[source] tokio_tungstenite::tungstenite::Error),
    /// The server sent something that is not the protocol.
    #[error("protocol error")]
    Protocol(#[source] ProtocolError),
    /// The token refresher failed or did not answer in time.
    #[error("token refresher failed")]
    Token(#[source] BoxError),
    /// The builder's settings are unusable.
    #[error("invalid client configuration")]
    Config(#[source] ConfigError),
}

impl ClientError {
    pub(crate) fn from_wire(e: herald_protocol::Error) -> Self {
        Self::Server {
            code: e.code,
            message: e.message,
            temporary: e.temporary,
        }
    }
}

/// The server's bytes could not be understood as protocol messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A text frame did not decode.
    #[error("malformed frame")]
    Frame(#[source] FrameError),
    /// The JSON protocol never uses binary frames.
    #[error("unexpected binary frame")]
    BinaryFrame,
    /// A command could not be encoded (only possible with unserializable data).
    #[error("could not encode a command")]
    Encode(#[source] serde_json::Error),
    /// The `connect` reply carried no `connect` result.
    #[error("connect reply without a connect result")]
    MissingConnectResult,
}

/// A [`ClientBuilder`](crate::ClientBuilder) setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The endpoint is not a WebSocket URL.
    #[error("invalid websocket url {url:?}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was rejected.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// `min_backoff` is zero or larger than `max_backoff`.
    #[error("backoff range {min:?}..{max:?} is empty or starts at zero")]
    BackoffRange {
        /// The minimum.
        min: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The call timeout is zero.
    #[error("the call timeout must be positive")]
    ZeroTimeout,
    /// `build()` was called outside a tokio runtime, where the connection task cannot run.
    #[error("no tokio runtime: build the client from inside a tokio runtime")]
    NoRuntime,
}
