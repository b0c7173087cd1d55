//! The errors of the Redis backbone: why it could not start, and how a Redis failure
//! becomes a [`BrokerError`] (its cause chain is logged with [`herald_broker::Chain`]).

use crate::FUNCTION_VERSION;
use fred::error::{Error as RedisError, ErrorKind};
use herald_broker::{BrokerError, Chain};
use std::path::PathBuf;
use std::time::Duration;

/// The broker could not start. Every `url` here has its password redacted.
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    /// The URL is not one of the Redis schemes Herald accepts.
    #[error(
        "invalid Redis URL {url:?}: use redis://, rediss://, redis-cluster:// or rediss-cluster://"
    )]
    Scheme {
        /// The URL.
        url: String,
    },
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// A file named by a `[redis]` setting cannot be read.
    #[error("cannot read redis.{key} {path:?}")]
    File {
        /// The setting.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file is not usable PEM.
    #[error("redis.{key} {path:?} holds no usable PEM")]
    Pem {
        /// The setting.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificates or key were refused by the TLS library (a key that does not
    /// match its certificate, a malformed CA).
    #[error("the Redis TLS settings cannot be used")]
    Tls(#[source] rustls::Error),
    /// `rediss://` without `tls_ca_file`, and the system has no usable roots.
    #[error(
        "no system certificate authorities for rediss:// ({why}); set redis.tls_ca_file or install ca-certificates"
    )]
    NoSystemRoots {
        /// What the system store reported.
        why: String,
    },
    /// Redis did not answer in time.
    #[error("cannot reach Redis at {url} within {timeout:?}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake with Redis failed: an unknown CA, a name that does not match
    /// the certificate, a client certificate the server wanted, or a server without TLS.
    #[error(
        "TLS handshake with Redis at {url} failed (check redis.tls_ca_file, redis.tls_server_name and, if the server requires one, redis.tls_cert_file and tls_key_file)"
    )]
    Handshake {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// Redis refused the user name or password (`WRONGPASS`, `NOAUTH`).
    #[error(
        "Redis at {url} refused authentication (check the user and password: the URL, redis.username, redis.password_file)"
    )]
    Auth {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// The ACL user may not run a command or touch a key Herald needs (`NOPERM`).
    #[error(
        "the Redis user at {url} lacks a permission Herald needs (see the ACL rule in docs/operations.md)"
    )]
    Permission {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// Nothing accepts connections at the URL.
    #[error(
        "nothing answers at {url}: the connection was refused (is Redis running there? check redis.url or --redis-url)"
    )]
    Refused {
        /// The URL.
        url: String,
    },
    /// Redis refused the connection or a start-up command.
    #[error("Redis at {url} failed during start-up: {detail}")]
    Redis {
        /// The URL.
        url: String,
        /// Why, in words (not the client library's debug text).
        detail: String,
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

impl RedisStartError {
    /// Names what failed when Redis refused the start: TLS, the credentials, a
    /// permission, or anything else.
    pub(crate) fn from_redis(url: String, source: RedisError) -> Self {
        let details = source.details();
        if matches!(source.kind(), ErrorKind::Auth)
            || details.starts_with("WRONGPASS")
            || details.starts_with("NOAUTH")
        {
            Self::Auth { url, source }
        } else if details.starts_with("NOPERM") {
            Self::Permission { url, source }
        } else if matches!(source.kind(), ErrorKind::Tls) || is_tls_failure(details) {
            Self::Handshake { url, source }
        } else if details.contains("ConnectionRefused") || details.contains("Connection refused") {
            Self::Refused { url }
        } else {
            Self::Redis {
                url,
                detail: readable(details),
            }
        }
    }
}

/// The message inside an I/O error's debug text (`Os { code: 113, kind: HostUnreachable,
/// message: "No route to host" }` reads "No route to host"), or the text as it is.
fn readable(details: &str) -> String {
    details
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| details.to_owned(), |(message, _)| message.to_owned())
}

/// rustls reports handshake failures as I/O errors carrying its own error, shown by
/// name (`InvalidCertificate(UnknownIssuer)`, `AlertReceived(CertificateRequired)`) or by
/// message.
fn is_tls_failure(details: &str) -> bool {
    [
        "InvalidCertificate",
        "AlertReceived",
        "NoCertificatesPresented",
        "PeerIncompatible",
        "PeerMisbehaved",
        "InvalidMessage",
        "HandshakeNotComplete",
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
        "peer misbehaved",
        "received corrupt message",
        "tls handshake eof",
    ]
    .iter()
    .any(|m| details.contains(m))
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
    fn start_errors_name_what_failed() {
        let url = || "rediss://u:***@r:6380".to_owned();
        for (kind, details, expected) in [
            (
                ErrorKind::Auth,
                "WRONGPASS invalid username-password pair",
                "refused authentication",
            ),
            (
                ErrorKind::Unknown,
                "NOPERM User herald has no permissions to run the 'fcall' command",
                "lacks a permission",
            ),
            (
                ErrorKind::IO,
                "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
                "TLS handshake",
            ),
            (
                ErrorKind::IO,
                "Custom { kind: InvalidData, error: AlertReceived(CertificateRequired) }",
                "TLS handshake",
            ),
            (
                ErrorKind::Unknown,
                "ERR unknown command 'FUNCTION'",
                "failed during start-up",
            ),
        ] {
            let e = RedisStartError::from_redis(url(), RedisError::new(kind, details));
            let line = Chain(&e).to_string();
            assert!(line.contains(expected), "{line}");
            assert!(line.contains(details), "{line}");
        }
        // Refused, and other I/O errors, in words rather than debug text.
        let refused = RedisError::new(
            ErrorKind::IO,
            r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#,
        );
        let line = Chain(&RedisStartError::from_redis(url(), refused)).to_string();
        assert!(
            line.contains("nothing answers at") && !line.contains("Os {"),
            "{line}"
        );
        let other = RedisError::new(
            ErrorKind::IO,
            r#"Os { code: 113, kind: HostUnreachable, message: "No route to host" }"#,
        );
        let line = Chain(&RedisStartError::from_redis(url(), other)).to_string();
        assert!(
            line.ends_with("failed during start-up: No route to host"),
            "{line}"
        );
    }

    #[test]
    fn a_timeout_stays_a_timeout() {
        let e = unavailable(RedisError::new(ErrorKind::Timeout, "late"));
        assert!(matches!(e, BrokerError::Timeout));
    }
}
