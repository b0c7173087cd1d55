//! The Herald gateway: a WebSocket fan-out server speaking the Centrifuge client
//! protocol, with a server HTTP API, health and metrics.
//!
//! The library never binds its own port or reads signals: the caller passes a listener
//! and a [`CancellationToken`](tokio_util::sync::CancellationToken) to [`run`], which
//! makes the whole server testable in-process.

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod api;
pub mod auth;
pub mod channel;
pub(crate) mod cluster;
pub mod config;
pub mod conflation;
pub(crate) mod connection;
pub(crate) mod delta;
pub(crate) mod home;
pub(crate) mod hub;
pub mod jwks;
pub(crate) mod metrics;
pub mod node;
pub mod proxy;
pub(crate) mod queue;
pub mod rate_limits;
pub(crate) mod reads;
pub mod server;
#[cfg(test)]
mod testing;
pub(crate) mod transport;

pub use api::METHODS as API_METHODS;
pub use config::{Config, ConfigError, ConfigProblem};
pub use server::{StartError, build, router, run, serve};

/// Runs `f` when dropped: clean-up that must happen however a future ends (finished,
/// failed, or dropped while it waits).
pub(crate) fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
