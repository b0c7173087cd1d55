//! The Redis broker's settings: the `[redis]` section of a node's configuration, its
//! defaults, and the checks that run before the broker connects.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the broker reaches and uses Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port`, or `redis-cluster://host:port?node=host:port&node=...`.
    pub url: String,
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
    /// A `rediss://` URL: refused rather than silently connecting in plain text.
    #[error(
        "TLS to Redis (rediss://) is not supported yet; use redis:// or redis-cluster:// \
         on a trusted network, or a TLS sidecar"
    )]
    TlsUnsupported,
    /// The URL is neither `redis://` nor `redis-cluster://` (the URL itself is not
    /// repeated: it may hold a password).
    #[error("must start with redis:// or redis-cluster://")]
    UnknownScheme,
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
            Self::MissingUrl | Self::TlsUnsupported | Self::UnknownScheme => "url",
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

    fn problems(&self) -> Vec<RedisConfigProblem> {
        let mut out = Vec::new();
        if self.url.is_empty() {
            out.push(RedisConfigProblem::MissingUrl);
        } else if self.url.starts_with("rediss") {
            out.push(RedisConfigProblem::TlsUnsupported);
        } else if !(self.url.starts_with("redis://") || self.url.starts_with("redis-cluster://")) {
            out.push(RedisConfigProblem::UnknownScheme);
        }
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
                "rediss://:secret@redis:6380",
                RedisConfigProblem::TlsUnsupported,
            ),
            (
                "rediss-cluster://a:7000",
                RedisConfigProblem::TlsUnsupported,
            ),
            (
                "http://:secret@redis:6379",
                RedisConfigProblem::UnknownScheme,
            ),
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
