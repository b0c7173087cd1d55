//! Rate-limit settings: `[client.rate_limits]`, the namespaces' overrides, and the
//! `Rate` ("20/s", "600/m, burst 50") they are written in.

use herald_broker::Quota;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A rate as written in settings: `N/s`, `N/m` or `N/h`, optionally `, burst B` (how
/// many may come at once after a quiet spell; N by default). `0` (or an empty string)
/// means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    /// The limit, or `None` for none.
    quota: Option<Quota>,
    /// As written, to show it back the same way.
    count: u32,
    unit: RateUnit,
    burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum RateUnit {
    #[default]
    Second,
    Minute,
    Hour,
}

impl RateUnit {
    fn period(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
            Self::Hour => Duration::from_secs(3600),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "m",
            Self::Hour => "h",
        }
    }
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        quota: None,
        count: 0,
        unit: RateUnit::Second,
        burst: None,
    };

    /// `n` per second with a burst of `n` (0 = no limit).
    pub fn per_second(n: u32) -> Self {
        Self {
            quota: Quota::per_second(n),
            count: n,
            unit: RateUnit::Second,
            burst: None,
        }
    }

    /// The limit, or `None` when off.
    pub fn quota(&self) -> Option<Quota> {
        self.quota
    }
}

/// A rate that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a rate: write \"N/s\", \"N/m\" or \"N/h\", optionally \", burst B\" (\"0\" = no limit)"
)]
pub struct RateError(String);

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, RateError> {
        let bad = || RateError(text.to_owned());
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "0" || trimmed.eq_ignore_ascii_case("off") {
            return Ok(Self::OFF);
        }
        let (rate, burst) = match trimmed.split_once(',') {
            Some((rate, rest)) => {
                let b = rest
                    .trim()
                    .strip_prefix("burst")
                    .ok_or_else(bad)?
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| bad())?;
                (rate.trim(), Some(b))
            }
            None => (trimmed, None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let unit = match unit.trim() {
            "s" | "sec" | "second" => RateUnit::Second,
            "m" | "min" | "minute" => RateUnit::Minute,
            "h" | "hour" => RateUnit::Hour,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Ok(Self::OFF);
        }
        if burst == Some(0) {
            return Err(bad());
        }
        Ok(Self {
            quota: Quota::new(count, unit.period(), burst.unwrap_or(count)),
            count,
            unit,
            burst,
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = RateError;
    fn try_from(text: String) -> Result<Self, RateError> {
        text.parse()
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> String {
        rate.to_string()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "0/s", not "0": a bare 0 reads as a duration, and the binary's messages would
        // then call a bad rate a bad duration.
        if self.quota.is_none() {
            return f.write_str("0/s");
        }
        write!(f, "{}/{}", self.count, self.unit.suffix())?;
        if let Some(b) = self.burst {
            write!(f, ", burst {b}")?;
        }
        Ok(())
    }
}

/// `[client.rate_limits]`: limits on what one client may do, all off by default, so a
/// deployment that sets nothing behaves exactly as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Commands per connection (every command but pongs), reply 111 over it.
    pub commands: Rate,
    /// Publishes per connection (a namespace may override).
    pub publishes: Rate,
    /// Subscribes per connection (a namespace may override).
    pub subscribes: Rate,
    /// Publishes per user across every node, kept in the broker (Redis); anonymous
    /// clients are limited per connection only (a namespace may override).
    pub user_publishes: Rate,
    /// Count what would be refused (`herald_rate_limited_total{mode="dry_run"}`) but
    /// refuse nothing: for finding the right limits on live traffic.
    pub dry_run: bool,
    /// A connection refused this many times within `disconnect_window` is closed with
    /// 3013, which the SDKs answer by reconnecting after a backoff (0 = never).
    pub disconnect_after: u32,
    /// The window `disconnect_after` counts in.
    #[serde(with = "humantime_serde")]
    pub disconnect_window: Duration,
    /// Live connections per user across every node (0 = no limit); over it the connect
    /// command is answered with 111, which the SDKs retry with a growing backoff.
    pub user_connections: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            commands: Rate::OFF,
            publishes: Rate::OFF,
            subscribes: Rate::OFF,
            user_publishes: Rate::OFF,
            dry_run: false,
            disconnect_after: 50,
            disconnect_window: Duration::from_secs(10),
            user_connections: 0,
        }
    }
}

impl RateLimits {
    /// Every problem with these settings, as (key under `client.rate_limits`, message).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.disconnect_after > 0 && self.disconnect_window.is_zero() {
            out.push((
                "disconnect_window",
                "must be more than 0 when disconnect_after is set".to_owned(),
            ));
        }
        out
    }
}

/// `[namespaces.X.rate_limits]`: a namespace's own limits for its channels; an absent key
/// keeps the global one, `"0"` turns it off in this namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceRateLimits {
    /// Publishes per connection into this namespace's channels (their own bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishes: Option<Rate>,
    /// Subscribes per connection to this namespace's channels (their own bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribes: Option<Rate>,
    /// Publishes per user across every node into this namespace's channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_publishes: Option<Rate>,
    /// Dry run for this namespace's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

impl NamespaceRateLimits {
    /// Whether the namespace overrides anything.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_show_back() {
        for (text, shown, interval_ms, burst) in [
            ("20/s", "20/s", 50, 20),
            ("600/m, burst 50", "600/m, burst 50", 100, 50),
            (" 1/h ", "1/h", 3_600_000, 1),
        ] {
            let rate: Rate = text.parse().expect(text);
            assert_eq!(rate.to_string(), shown);
            let quota = rate.quota().expect("a limit");
            assert_eq!(
                quota.interval(),
                Duration::from_millis(interval_ms),
                "{text}"
            );
            assert_eq!(quota.burst(), burst, "{text}");
        }
        for off in ["0", "", "off", "0/s"] {
            assert_eq!(off.parse::<Rate>(), Ok(Rate::OFF), "{off:?}");
        }
        for bad in ["20", "20/d", "x/s", "5/s, burst 0", "5/s, 7", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let text = "commands = \"100/s\"\npublishes = \"10/s, burst 20\"\ndry_run = true\n";
        let limits: RateLimits = toml::from_str(text).expect("parses");
        assert_eq!(limits.commands, Rate::per_second(100));
        assert!(limits.dry_run);
        let again: RateLimits =
            toml::from_str(&toml::to_string(&limits).expect("serializes")).expect("parses");
        assert_eq!(again, limits);
        let err = toml::from_str::<RateLimits>("commands = \"lots\"").expect_err("bad rate");
        assert!(err.message().contains("is not a rate"), "{err}");
    }
}
