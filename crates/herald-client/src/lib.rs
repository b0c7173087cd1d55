//! Herald client SDK: a Rust client for the Centrifuge client protocol v2 (JSON), as
//! spoken by Herald.
//!
//! A [`Client`] owns one WebSocket connection, run by a background tokio task that
//! reconnects with full-jitter exponential backoff, answers server pings, refreshes
//! tokens, and resubscribes every [`Subscription`] with recovery after each reconnect.
//! A subscription tracks the offset and epoch of the last publication it delivered, so
//! the application sees every publication once and in order; when that is impossible
//! (the server lost the history) it is told so through
//! [`SubscriptionEvent::Subscribed`] with `was_recovering: true, recovered: false`.
//!
//! ```no_run
//! use herald_client::{Client, SubscribeOptions, SubscriptionEvent};
//!
//! # async fn run() -> Result<(), herald_client::ClientError> {
//! let client = Client::builder("ws://127.0.0.1:8000/connection/websocket")
//!     .token("<connection JWT>")
//!     .build()?;
//! client.connect().await?;
//!
//! let mut sub = client
//!     .subscribe("chat:lobby", SubscribeOptions::default())
//!     .await?;
//! while let Some(event) = sub.next().await {
//!     match event {
//!         SubscriptionEvent::Subscribed { recovered, was_recovering, .. } => {
//!             if was_recovering && !recovered {
//!                 // Publications were lost while away: reload state from the source.
//!             }
//!         }
//!         SubscriptionEvent::Publication(publication) => {
//!             println!("{} {}", publication.offset, publication.data);
//!         }
//!         SubscriptionEvent::Unsubscribed { code, reason } => {
//!             eprintln!("unsubscribed: {code} {reason}");
//!         }
//!         SubscriptionEvent::Error { code, message } => eprintln!("error {code}: {message}"),
//!         _ => {}
//!     }
//! }
//! client.disconnect().await;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod calls;
mod client;
mod config;
mod error;
mod event;
mod net;
mod subscription;
mod task;
mod tracker;

pub use client::{Client, ClientBuilder, HistoryOptions};
pub use config::{SubscribeOptions, TokenFuture, TokenRefresher};
pub use error::{BoxError, ClientError, ConfigError, ProtocolError};
pub use event::{
    ConnectionEvent, ConnectionState, SubscriptionEvent, connecting_code, disconnected_code,
    subscription_error_code, unsubscribed_code,
};
pub use herald_protocol::{
    Audience, EntityAction, EntityEvent, Publication, RawJson, StreamPosition,
};
pub use net::local_socket;
pub use subscription::Subscription;
