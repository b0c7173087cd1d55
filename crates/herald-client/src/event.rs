//! What the application observes: connection state, connection events and subscription events.

use crate::error::ClientError;
use herald_protocol::{Publication, StreamPosition};
use std::sync::Arc;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Not connected and not trying to: before [`Client::connect`](crate::Client::connect),
    /// after [`Client::disconnect`](crate::Client::disconnect), or after a terminal close.
    Disconnected,
    /// Opening the socket, waiting for the `connect` reply, or backing off between attempts.
    Connecting,
    /// Authenticated: commands flow.
    Connected,
}

/// A change in the connection, broadcast to every [`Client::events`](crate::Client::events)
/// receiver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The client started (re)connecting. `code` is a close code from the server
    /// (3000–3499, 4000–4499) or one of [`connecting_code`].
    Connecting {
        /// Why.
        code: u16,
        /// A short reason.
        reason: String,
    },
    /// The `connect` reply arrived.
    Connected {
        /// The client id the server assigned.
        client_id: String,
    },
    /// The client stopped and will not reconnect by itself. `code` is a terminal close
    /// code from the server (3500–3999, 4500–4999), a `connect` reply error code, or one
    /// of [`disconnected_code`].
    Disconnected {
        /// Why.
        code: u16,
        /// A short reason.
        reason: String,
    },
    /// Something failed without changing the state (a connect attempt, a token refresh).
    Error(Arc<ClientError>),
    /// The next connect attempt starts after this backoff (sent after
    /// [`ConnectionEvent::Connecting`] when the client waits before trying again).
    Retrying {
        /// How long until the next attempt.
        delay: std::time::Duration,
    },
}

/// Client-side codes of [`ConnectionEvent::Connecting`]; server close codes start at 3000.
pub mod connecting_code {
    /// [`Client::connect`](crate::Client::connect) was called.
    pub const CONNECT_CALLED: u16 = 0;
    /// The socket closed or failed without a close code from the server.
    pub const TRANSPORT_CLOSED: u16 = 1;
    /// No server ping arrived in time.
    pub const NO_PING: u16 = 2;
    /// A command (connect, subscribe, refresh) got no reply in time.
    pub const COMMAND_TIMEOUT: u16 = 3;
    /// The server sent a frame that is not the protocol.
    pub const BAD_PROTOCOL: u16 = 4;
}

/// Client-side codes of [`ConnectionEvent::Disconnected`]; server close codes start at 3500.
pub mod disconnected_code {
    /// [`Client::disconnect`](crate::Client::disconnect) was called.
    pub const DISCONNECT_CALLED: u16 = 0;
    /// The token expired and no token refresher is configured.
    pub const UNAUTHORIZED: u16 = 1;
    /// The connection was lost and reconnecting is turned off.
    pub const NO_RECONNECT: u16 = 2;
    /// Every [`Client`](crate::Client) handle and subscription was dropped.
    pub const CLIENT_DROPPED: u16 = 3;
}

/// What a [`Subscription`](crate::Subscription) yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// The server accepted a subscribe (the first one, or a resubscribe after a reconnect,
    /// a gap or an overflow). Recovered publications follow this event, in order.
    Subscribed {
        /// The missed publications were recovered: nothing was lost.
        recovered: bool,
        /// The client asked to recover. `was_recovering && !recovered` means publications
        /// were lost and the application should reload its state.
        was_recovering: bool,
        /// The position the subscription is at once the recovered publications that follow
        /// this event have been delivered.
        position: StreamPosition,
        /// The channel keeps history, so later interruptions can be recovered.
        recoverable: bool,
    },
    /// A publication, delivered once and in offset order.
    Publication(Publication),
    /// The subscription ended for good; the stream ends after this event.
    Unsubscribed {
        /// The server's unsubscribe code (below 2500), or [`unsubscribed_code`].
        code: u32,
        /// A short reason.
        reason: String,
    },
    /// Something went wrong. After an error the subscription either retries by itself
    /// (temporary errors) or ends (the stream then yields `None`).
    Error {
        /// A reply error code from the server (e.g. 103 permission denied, 112
        /// unrecoverable position) or one of [`subscription_error_code`].
        code: u32,
        /// A human-readable message.
        message: String,
    },
}

/// Client-side codes of [`SubscriptionEvent::Unsubscribed`].
pub mod unsubscribed_code {
    /// [`Subscription::unsubscribe`](crate::Subscription::unsubscribe) was called.
    pub const UNSUBSCRIBE_CALLED: u32 = 0;
    /// The subscription token expired and no token refresher is configured.
    pub const UNAUTHORIZED: u32 = 1;
}

/// Client-side codes of [`SubscriptionEvent::Error`]; server error codes start at 100.
pub mod subscription_error_code {
    /// The subscription's token refresher failed; the SDK retries later.
    pub const TOKEN: u32 = 1;
}
