//! The errors of the Redis backbone: why it could not start, and how a Redis failure
//! becomes a [`BrokerError`] (its cause chain is logged with [`herald_broker::Chain`]).

use crate::FUNCTION_VERSION;
use fred::error::{Error as RedisError, ErrorKind};
use herald_broker::{BrokerError, Chain};
use std::time::Duration;

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// Redis did not answer in time.
    #[error("cannot reach Redis at {url} within {timeout:?}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Redis refused the connection or a start-up command.
    #[error("Redis at {url} failed during start-up")]
    Redis {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// The server is older than 7.0 (no functions, no sharded pub/sub).
    #[error("Redis {found} is too old: Herald needs Redis 7.0 or newer")]
    TooOld {
        /// The version found.
        found: String,
    },
    /// The loaded function library is not one this gateway can use.
    #[error(
        "Redis holds Herald function library version {found:?}, this gateway needs {FUNCTION_VERSION:?}"
    )]
    FunctionVersion {
        /// The version found.
        found: String,
    },
    /// Metrics could not be created.
    #[error("metrics could not be created")]
    Metrics(#[source] prometheus::Error),
}

/// A Redis failure as the broker reports it. The gateway logs a [`BrokerError`] by its
/// own message, so the Redis cause is logged here, where it is known.
pub(crate) fn unavailable(e: RedisError) -> BrokerError {
    tracing::debug!(error = %Chain(&e), "Redis command failed");
    if matches!(e.kind(), ErrorKind::Timeout) {
        BrokerError::Timeout
    } else {
        BrokerError::Unavailable(Box::new(e))
    }
}

/// Redis answered something the broker cannot read.
pub(crate) fn protocol(message: &str) -> BrokerError {
    BrokerError::Protocol(message.to_owned().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_every_cause() {
        let redis = RedisError::new(ErrorKind::IO, "connection refused");
        let e = BrokerError::Unavailable(Box::new(redis));
        let line = Chain(&e).to_string();
        assert!(line.starts_with("broker unavailable: "), "{line}");
        assert!(line.contains("connection refused"), "{line}");
    }

    #[test]
    fn a_timeout_stays_a_timeout() {
        let e = unavailable(RedisError::new(ErrorKind::Timeout, "late"));
        assert!(matches!(e, BrokerError::Timeout));
    }
}
