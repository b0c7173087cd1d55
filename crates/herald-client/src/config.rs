//! The client's settings (defaults and validation), a subscription's options, and the
//! token refresher callback type.

use crate::error::{BoxError, ConfigError};
use herald_protocol::StreamPosition;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The future a [`TokenRefresher`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

/// An async callback that returns a fresh token (a connection JWT or a subscription JWT),
/// typically by asking the application's backend. Cheap to clone.
#[derive(Clone)]
pub struct TokenRefresher(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenRefresher {
    /// Wraps an async closure: `TokenRefresher::new(|| async { Ok::<_, MyError>(token) })`.
    pub fn new<F, Fut, E>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self(Arc::new(move || {
            let fut = f();
            Box::pin(async move { fut.await.map_err(Into::into) })
        }))
    }

    pub(crate) fn call(&self) -> TokenFuture {
        (self.0)()
    }
}

impl fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRefresher")
    }
}

/// Validated settings shared by the handle and the connection task.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) token_refresher: Option<TokenRefresher>,
    pub(crate) name: String,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) reconnect: bool,
    pub(crate) timeout: Duration,
    pub(crate) subscription_buffer: usize,
    pub(crate) local_address: Option<IpAddr>,
}

impl Config {
    /// The defaults, for the endpoint `url`.
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            token: String::new(),
            token_refresher: None,
            name: "herald-rust".to_owned(),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            reconnect: true,
            timeout: Duration::from_secs(10),
            subscription_buffer: 4096,
            local_address: None,
        }
    }

    /// The first setting that cannot work, if any.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Err(source) = self.url.as_str().into_client_request() {
            return Err(ConfigError::InvalidUrl {
                url: self.url.clone(),
                source,
            });
        }
        if self.min_backoff.is_zero() || self.min_backoff > self.max_backoff {
            return Err(ConfigError::BackoffRange {
                min: self.min_backoff,
                max: self.max_backoff,
            });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(())
    }
}

/// How to subscribe; `SubscribeOptions::default()` is a plain subscription from "now".
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Start after this position: the first subscribe already asks the server to recover
    /// the publications after it (e.g. a position the application stored earlier).
    pub since: Option<StreamPosition>,
    /// A subscription JWT (required for channels starting with `$`).
    pub token: Option<String>,
    /// Fetches subscription tokens: when there is none, when the server says the token
    /// expired (error 109, unsubscribe 2501), and before it expires (`sub_refresh`).
    pub token_refresher: Option<TokenRefresher>,
    /// Ask the server to fail the subscribe with error 112 rather than succeed without
    /// recovering. The error is surfaced as
    /// [`SubscriptionEvent::Error`](crate::SubscriptionEvent::Error) and the
    /// subscription ends.
    pub reject_unrecovered: bool,
}
