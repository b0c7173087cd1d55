//! A node's whole configuration, composed from the sections each component owns: the
//! broker choice and log format (this binary's), `[redis]` (herald-redis) and the
//! gateway's settings at the top level. [`Layers`] reads it from defaults, a file, the
//! environment and flags.

mod env;
mod layers;

pub(crate) use env::env_reference;
pub(crate) use layers::{ConfigError, Layers};

use herald_gateway::Config;
use herald_redis::{RedisConfig, RedisConfigProblem};
use serde::{Deserialize, Serialize};

/// Everything `herald serve` needs: which broker, how to log, and each component's
/// section.
#[derive(Debug, Clone)]
pub(crate) struct HeraldConfig {
    /// Which message backbone to use.
    pub broker: BrokerKind,
    /// Log format.
    pub log_format: LogFormat,
    /// The Redis broker's settings (used when `broker = "redis"`).
    pub redis: RedisConfig,
    /// The gateway's settings, at the top level of the file.
    pub gateway: Config,
    /// Things worth telling the operator that are not errors (unknown `HERALD_*`
    /// variables, deprecated keys), to be logged once logging is up.
    pub warnings: Vec<String>,
}

impl Default for HeraldConfig {
    fn default() -> Self {
        let own = Own::default();
        Self {
            broker: own.broker,
            log_format: own.log_format,
            redis: own.redis,
            gateway: Config::default(),
            warnings: Vec::new(),
        }
    }
}

/// The message backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BrokerKind {
    /// Embedded, in-process: one node, no Redis.
    Memory,
    /// Redis pub/sub and streams: many nodes.
    Redis,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The top-level keys the binary owns; every other top-level key is the gateway's.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Own {
    broker: BrokerKind,
    log_format: LogFormat,
    redis: RedisConfig,
}

impl Default for Own {
    fn default() -> Self {
        Self {
            broker: BrokerKind::Memory,
            log_format: LogFormat::Human,
            // No default address: a node told to use Redis must be told which one.
            redis: RedisConfig {
                url: String::new(),
                ..RedisConfig::default()
            },
        }
    }
}

const OWN_KEYS: [&str; 3] = ["broker", "log_format", "redis"];

/// Where an old top-level key now lives in `[redis]`.
pub(crate) const DEPRECATED_KEYS: [(&str, &str); 3] = [
    ("redis_url", "url"),
    ("redis_prefix", "prefix"),
    ("redis_replay_window", "replay_window"),
];

impl HeraldConfig {
    /// The configuration as one TOML table, the shape a file has.
    pub(crate) fn to_table(&self) -> toml::Table {
        let mut table = toml::Table::try_from(&self.gateway).unwrap_or_default();
        let own = Own {
            broker: self.broker,
            log_format: self.log_format,
            redis: self.redis.clone(),
        };
        table.extend(toml::Table::try_from(own).unwrap_or_default());
        table
    }

    /// Reads a table of the shape [`HeraldConfig::to_table`] writes; the message of the
    /// first problem otherwise.
    pub(crate) fn from_table(mut table: toml::Table) -> Result<Self, String> {
        let mut own = toml::Table::new();
        for key in OWN_KEYS {
            if let Some(value) = table.remove(key) {
                own.insert(key.to_owned(), value);
            }
        }
        // The gateway's own message would list only its keys.
        let known = HeraldConfig::default().to_table();
        if let Some(key) = table.keys().find(|k| !known.contains_key(*k)) {
            let expected: Vec<String> = known.keys().map(|k| format!("`{k}`")).collect();
            return Err(format!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ));
        }
        let own: Own = toml::Value::Table(own)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_owned())?;
        let gateway: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_owned())?;
        Ok(Self {
            broker: own.broker,
            log_format: own.log_format,
            redis: own.redis,
            gateway,
            warnings: Vec::new(),
        })
    }

    /// Every semantic problem, as (dotted key, message), the gateway's then Redis's.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .gateway
            .problems()
            .into_iter()
            .map(|p| (p.at, p.message))
            .collect();
        if let Err(e) = self.redis.validate() {
            for problem in e.problems {
                let message = match &problem {
                    // Only a Redis node needs an address.
                    RedisConfigProblem::MissingUrl if self.broker != BrokerKind::Redis => continue,
                    RedisConfigProblem::MissingUrl => {
                        "required when broker = \"redis\" (url in [redis], formerly the \
                         top-level redis_url)"
                            .to_owned()
                    }
                    other => other.to_string(),
                };
                out.push((format!("redis.{}", problem.key()), message));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
