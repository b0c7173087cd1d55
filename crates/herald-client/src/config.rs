//! The client's settings, its builder, and the token refresher callback type.

use crate::error::{BoxError, ConfigError};
use crate::{Client, ClientError};
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

/// Builds a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    pub(crate) fn new(url: String) -> Self {
        Self {
            config: Config {
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
            },
        }
    }

    /// The connection JWT sent in `connect`. Without one (and without a refresher) the
    /// client connects anonymously, which the server may or may not allow.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = token.into();
        self
    }

    /// Fetches a new connection token: before the current one expires (when the
    /// `connect` reply says `expires`), after a `connect` fails with 109 token expired,
    /// and before the first connect if no [`token`](Self::token) was set.
    pub fn token_refresher<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.config.token_refresher = Some(TokenRefresher::new(f));
        self
    }

    /// The client name sent in `connect` (default `herald-rust`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The base of the reconnect backoff window (default 500 ms).
    pub fn min_backoff(mut self, d: Duration) -> Self {
        self.config.min_backoff = d;
        self
    }

    /// The largest reconnect backoff window (default 20 s).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.config.max_backoff = d;
        self
    }

    /// Whether to reconnect after the connection is lost with a reconnect code
    /// (default `true`). With `false` any loss ends in
    /// [`ConnectionState::Disconnected`](crate::ConnectionState::Disconnected).
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.config.reconnect = reconnect;
        self
    }

    /// The timeout of each call (publish, history, ...), of waiting for the connection in
    /// [`Client::connect`], of each protocol command the SDK sends itself, and of each
    /// token refresher call (default 10 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// How many events a subscription buffers for a consumer that reads slowly before the
    /// SDK unsubscribes it and later resubscribes with recovery (default 4096, at least 16).
    pub fn subscription_buffer(mut self, events: usize) -> Self {
        self.config.subscription_buffer = events.max(16);
        self
    }

    /// The local address the connection's socket binds to before connecting (default:
    /// chosen by the operating system). For hosts with several addresses, and for load
    /// generators that spread connections over source addresses.
    pub fn local_address(mut self, ip: IpAddr) -> Self {
        self.config.local_address = Some(ip);
        self
    }

    /// Validates the settings and starts the (idle) connection task. Must be called
    /// inside a tokio runtime. The client does not connect until [`Client::connect`].
    pub fn build(self) -> Result<Client, ClientError> {
        let c = &self.config;
        if let Err(source) = c.url.as_str().into_client_request() {
            return Err(ClientError::Config(ConfigError::InvalidUrl {
                url: c.url.clone(),
                source,
            }));
        }
        if c.min_backoff.is_zero() || c.min_backoff > c.max_backoff {
            return Err(ClientError::Config(ConfigError::BackoffRange {
                min: c.min_backoff,
                max: c.max_backoff,
            }));
        }
        if c.timeout.is_zero() {
            return Err(ClientError::Config(ConfigError::ZeroTimeout));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ClientError::Config(ConfigError::NoRuntime))?;
        Ok(Client::start(self.config, &runtime))
    }
}
