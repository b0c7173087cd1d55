//! The Redis broker's settings: the `[redis]` section of a node's configuration, its
//! defaults, and the checks that run before the broker connects.

use crate::access::{RedisUrl, redact_url, valid_server_name};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// How the broker reaches and uses Redis.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port`, or `redis-cluster://host:port?node=host:port&node=...`;
    /// `rediss://` and `rediss-cluster://` for TLS; `user:password@` before the host
    /// for an ACL user (percent-encoded).
    pub url: String,
    /// The ACL user name, when the URL has none (empty: the URL's, else `default`).
    pub username: String,
    /// A file holding the password (one trailing newline is ignored), so that the
    /// password stays out of the URL and the environment; empty: the URL's, if any.
    pub password_file: String,
    /// PEM file of the certificate authorities that sign the Redis server certificates.
    /// It replaces the system roots: a private CA is then the only one trusted. Empty:
    /// the system roots.
    pub tls_ca_file: String,
    /// PEM client certificate (chain) for Redis servers that require one
    /// (`tls-auth-clients yes`); set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// The name checked against every Redis server certificate instead of the host
    /// connected to (for Cluster nodes announced by IP whose certificates name a host).
    pub tls_server_name: String,
    /// Prefix of every key and pub/sub channel, so several deployments can share a Redis.
    pub prefix: String,
    /// How long a channel's epoch and top offset live after its last publication.
    #[serde(with = "humantime_serde")]
    pub meta_ttl: Duration,
    /// How long an idempotency key's result is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// Give up connecting at start after this long.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A command that gets no answer within this fails (and its connection is recycled).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Dispatch workers; a channel always goes to the same one, which keeps its order.
    pub workers: usize,
    /// How often idle channels' top offsets are compared with what the node delivered.
    #[serde(with = "humantime_serde")]
    pub top_check_interval: Duration,
    /// How often the pub/sub connection is probed.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A probe with no echo for this long marks pub/sub unhealthy and reconnects it.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Publications per subscribed channel kept in memory, so that subscribers
    /// recovering a recent position (a reconnect storm) are answered without Redis.
    pub replay_window: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: String::new(),
            password_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: String::new(),
            prefix: "herald".into(),
            meta_ttl: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            workers: 4,
            top_check_interval: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(4),
            replay_window: 256,
        }
    }
}

// The URL may hold a password: it is shown redacted.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The largest replay window per channel: each entry holds a whole publication, and a
/// node keeps one window for every channel it is subscribed to.
pub const MAX_REPLAY_WINDOW: usize = 100_000;

/// Dispatch workers beyond this only add idle tasks: channels are spread by hash.
pub const MAX_WORKERS: usize = 1024;

/// One thing wrong with a [`RedisConfig`]; [`RedisConfigProblem::key`] names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigProblem {
    /// No URL is set.
    #[error("must be set")]
    MissingUrl,
    /// The URL is not one of the four Redis schemes, or does not parse (the URL itself
    /// is not repeated: it may hold a password).
    #[error(
        "must be a URL starting with redis://, rediss://, redis-cluster:// or rediss-cluster://"
    )]
    UnknownScheme,
    /// A user name both in the URL and in `username`.
    #[error("the url also names a user; set it in one place")]
    UsernameTwice,
    /// A password both in the URL and in `password_file`.
    #[error("the url also holds a password; set it in one place")]
    PasswordTwice,
    /// A file setting names no readable file.
    #[error("file {path:?} does not exist")]
    NoFile {
        /// The setting.
        key: &'static str,
        /// The path as given.
        path: String,
    },
    /// A TLS setting with a URL that does not use TLS: it would be silently ignored.
    #[error("applies only to rediss:// and rediss-cluster:// URLs")]
    TlsWithoutRediss {
        /// The setting.
        key: &'static str,
    },
    /// Only one of `tls_cert_file` and `tls_key_file`.
    #[error("tls_cert_file and tls_key_file are set together or not at all")]
    ClientCertHalf {
        /// The one that is missing.
        key: &'static str,
    },
    /// `tls_server_name` is neither a DNS name nor an IP address.
    #[error("must be a DNS name or an IP address")]
    ServerName,
    /// The prefix is empty or has characters that do not belong in a key.
    #[error("must be non-empty: letters, digits, '_', '-', '.', ':'")]
    BadPrefix,
    /// `workers` is outside 1..=[`MAX_WORKERS`].
    #[error("must be between 1 and {MAX_WORKERS}")]
    Workers,
    /// A duration setting below its minimum.
    #[error("must be at least {min:?}")]
    TooShort {
        /// The setting.
        key: &'static str,
        /// Its smallest allowed value.
        min: Duration,
    },
    /// The probe would declare pub/sub dead before the next probe could answer.
    #[error("must be more than probe_interval")]
    ProbeTimeout,
    /// `replay_window` is above [`MAX_REPLAY_WINDOW`].
    #[error("must be at most {MAX_REPLAY_WINDOW}")]
    ReplayWindow,
}

impl RedisConfigProblem {
    /// The setting the problem is about, as a key of the `[redis]` section.
    pub fn key(&self) -> &'static str {
        match self {
            Self::MissingUrl | Self::UnknownScheme => "url",
            Self::UsernameTwice => "username",
            Self::PasswordTwice => "password_file",
            Self::NoFile { key, .. }
            | Self::TlsWithoutRediss { key }
            | Self::ClientCertHalf { key } => key,
            Self::ServerName => "tls_server_name",
            Self::BadPrefix => "prefix",
            Self::Workers => "workers",
            Self::TooShort { key, .. } => key,
            Self::ProbeTimeout => "probe_timeout",
            Self::ReplayWindow => "replay_window",
        }
    }
}

/// Everything wrong with a [`RedisConfig`], found in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis settings: {}", describe(.problems))]
pub struct RedisConfigError {
    /// The problems, in the order of the settings.
    pub problems: Vec<RedisConfigProblem>,
}

fn describe(problems: &[RedisConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {p}", p.key()))
        .collect::<Vec<_>>()
        .join("; ")
}

impl RedisConfig {
    /// Checks every setting and reports every problem at once.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RedisConfigError { problems })
        }
    }

    /// Credentials and TLS: each file exists, nothing is set twice, and no TLS setting
    /// is ignored.
    fn access_problems(&self, url: Option<&RedisUrl>, out: &mut Vec<RedisConfigProblem>) {
        if let Some(url) = url {
            if url.has_username && !self.username.is_empty() {
                out.push(RedisConfigProblem::UsernameTwice);
            }
            if url.has_password && !self.password_file.is_empty() {
                out.push(RedisConfigProblem::PasswordTwice);
            }
        }
        let tls = url.is_none_or(|u| u.tls);
        for (key, path) in [
            ("password_file", &self.password_file),
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ] {
            if path.is_empty() {
                continue;
            }
            if key != "password_file" && !tls {
                out.push(RedisConfigProblem::TlsWithoutRediss { key });
            } else if !Path::new(path).is_file() {
                out.push(RedisConfigProblem::NoFile {
                    key,
                    path: path.clone(),
                });
            }
        }
        match (self.tls_cert_file.is_empty(), self.tls_key_file.is_empty()) {
            (false, true) => out.push(RedisConfigProblem::ClientCertHalf {
                key: "tls_key_file",
            }),
            (true, false) => out.push(RedisConfigProblem::ClientCertHalf {
                key: "tls_cert_file",
            }),
            _ => {}
        }
        if !self.tls_server_name.is_empty() {
            if !tls {
                out.push(RedisConfigProblem::TlsWithoutRediss {
                    key: "tls_server_name",
                });
            } else if !valid_server_name(&self.tls_server_name) {
                out.push(RedisConfigProblem::ServerName);
            }
        }
    }

    fn problems(&self) -> Vec<RedisConfigProblem> {
        let mut out = Vec::new();
        let url = RedisUrl::parse(&self.url);
        if self.url.is_empty() {
            out.push(RedisConfigProblem::MissingUrl);
        } else if url.is_none() {
            out.push(RedisConfigProblem::UnknownScheme);
        }
        self.access_problems(url.as_ref(), &mut out);
        if self.prefix.is_empty()
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            out.push(RedisConfigProblem::BadPrefix);
        }
        // Redis expiries are whole seconds.
        let second = Duration::from_secs(1);
        let millis = Duration::from_millis(10);
        for (key, value, min) in [
            ("meta_ttl", self.meta_ttl, second),
            ("idempotency_ttl", self.idempotency_ttl, second),
            ("connect_timeout", self.connect_timeout, millis),
            ("command_timeout", self.command_timeout, millis),
        ] {
            if value < min {
                out.push(RedisConfigProblem::TooShort { key, min });
            }
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            out.push(RedisConfigProblem::Workers);
        }
        for (key, value) in [
            ("top_check_interval", self.top_check_interval),
            ("probe_interval", self.probe_interval),
        ] {
            if value < millis {
                out.push(RedisConfigProblem::TooShort { key, min: millis });
            }
        }
        if self.probe_timeout <= self.probe_interval {
            out.push(RedisConfigProblem::ProbeTimeout);
        }
        if self.replay_window > MAX_REPLAY_WINDOW {
            out.push(RedisConfigProblem::ReplayWindow);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(RedisConfig::default().validate(), Ok(()));
        let cluster = RedisConfig {
            url: "redis-cluster://a:7000?node=b:7001".into(),
            ..RedisConfig::default()
        };
        assert_eq!(cluster.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = RedisConfig {
            url: String::new(),
            prefix: "a b".into(),
            meta_ttl: Duration::ZERO,
            workers: 0,
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            replay_window: MAX_REPLAY_WINDOW + 1,
            ..RedisConfig::default()
        };
        let err = config.validate().expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(RedisConfigProblem::key).collect();
        assert_eq!(
            keys,
            [
                "url",
                "prefix",
                "meta_ttl",
                "workers",
                "probe_timeout",
                "replay_window"
            ]
        );
        assert!(
            err.to_string().contains("workers: must be between 1"),
            "{err}"
        );
    }

    #[test]
    fn urls_are_checked_without_being_repeated() {
        for (url, problem) in [
            (
                "http://:secret@redis:6379",
                RedisConfigProblem::UnknownScheme,
            ),
            ("rediss://:secret@", RedisConfigProblem::UnknownScheme),
        ] {
            let config = RedisConfig {
                url: url.into(),
                ..RedisConfig::default()
            };
            let err = config.validate().expect_err(url);
            assert_eq!(err.problems, [problem]);
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn tls_and_acl_urls_are_accepted() {
        for url in [
            "rediss://redis:6380",
            "rediss://herald:p%40ss@redis:6380/0",
            "redis://:secret@redis:6379",
            "rediss-cluster://a:7000?node=b:7001",
        ] {
            let config = RedisConfig {
                url: url.into(),
                ..RedisConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{url}");
        }
    }

    #[test]
    fn credentials_and_tls_settings_are_checked_together() {
        let file = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
        std::fs::write(&file, "x").expect("temp file");
        let existing = file.display().to_string();
        let twice = RedisConfig {
            url: "rediss://herald:secret@redis:6380".into(),
            username: "herald".into(),
            password_file: existing.clone(),
            tls_cert_file: existing.clone(),
            tls_server_name: "not a name".into(),
            ..RedisConfig::default()
        };
        let err = twice.validate().expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(RedisConfigProblem::key).collect();
        assert_eq!(
            keys,
            [
                "username",
                "password_file",
                "tls_key_file",
                "tls_server_name"
            ]
        );
        assert!(!err.to_string().contains("secret"), "{err}");

        let plain = RedisConfig {
            url: "redis://redis:6379".into(),
            password_file: "/nonexistent/herald-password".into(),
            tls_ca_file: existing,
            tls_server_name: "redis.internal".into(),
            ..RedisConfig::default()
        };
        let err = plain.validate().expect_err("invalid");
        assert_eq!(
            err.problems,
            [
                RedisConfigProblem::NoFile {
                    key: "password_file",
                    path: "/nonexistent/herald-password".into()
                },
                RedisConfigProblem::TlsWithoutRediss { key: "tls_ca_file" },
                RedisConfigProblem::TlsWithoutRediss {
                    key: "tls_server_name"
                },
            ]
        );
        assert!(
            err.to_string()
                .contains("password_file: file \"/nonexistent/herald-password\""),
            "{err}"
        );
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn debug_hides_the_password() {
        let config = RedisConfig {
            url: "rediss://herald:secret@redis:6380".into(),
            ..RedisConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("rediss://herald:***@redis:6380"), "{shown}");
    }

    #[test]
    fn durations_read_as_text() {
        let config: RedisConfig = serde_json::from_value(serde_json::json!({
            "url": "redis://r:6379",
            "probe_timeout": "2500ms",
            "meta_ttl": "7d",
        }))
        .expect("valid");
        assert_eq!(config.probe_timeout, Duration::from_millis(2500));
        assert_eq!(config.meta_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.workers, RedisConfig::default().workers);
        let unknown = serde_json::from_value::<RedisConfig>(serde_json::json!({"wokers": 2}));
        assert!(unknown.is_err());
    }
}
