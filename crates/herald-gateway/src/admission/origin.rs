//! The Origin rule: which browser pages may open connections and call the server API.
//!
//! A browser sends `Origin` with every WebSocket upgrade and every cross-site request, and
//! lets any page open a WebSocket to any host: without this check a page on another site
//! can act with a user's cookies on Herald (cross-site WebSocket hijacking).

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};

/// Why a configured origin pattern is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OriginError {
    /// Not `scheme://host[:port]`, `*.domain`, `null` or `*`.
    #[error("expected scheme://host[:port], host, *.domain, null or *")]
    Malformed,
    /// The port is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    Port,
}

/// Scheme, host and port of an origin, lowercased, with the scheme's default port left
/// out (`https://a.example:443` and `https://a.example` are the same origin).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (IPv6 hosts in brackets) and lowercases the host.
fn split_authority(authority: &str) -> Result<(String, Option<u16>), OriginError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(OriginError::Malformed)?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(OriginError::Malformed);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(OriginError::Malformed)?),
        };
        (format!("[{inner}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')));
    if !host_ok {
        return Err(OriginError::Malformed);
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or(OriginError::Port)?,
        ),
    };
    Ok((host.to_ascii_lowercase(), port))
}

impl Parsed {
    /// `scheme://host[:port]`, or with `scheme_optional`, also a bare `host[:port]`.
    fn parse(text: &str, scheme_optional: bool) -> Result<Self, OriginError> {
        let (scheme, authority) = match text.split_once("://") {
            Some((s, a)) => {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
                    return Err(OriginError::Malformed);
                }
                (Some(s.to_ascii_lowercase()), a)
            }
            None if scheme_optional => (None, text),
            None => return Err(OriginError::Malformed),
        };
        let (host, port) = split_authority(authority)?;
        let port = port.filter(|&p| scheme.as_deref().and_then(default_port) != Some(p));
        Ok(Self { scheme, host, port })
    }
}

/// One entry of `client.allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginPattern {
    /// `*`: any origin.
    Any,
    /// `null`: pages that browsers give no origin (sandboxed frames, `file:` pages).
    Null,
    /// One origin; without a scheme, any scheme.
    Exact {
        /// The scheme, or `None` for any.
        scheme: Option<String>,
        /// The host, lowercase.
        host: String,
        /// The port, `None` for the scheme's default.
        port: Option<u16>,
    },
    /// `*.example.com`: any subdomain of a domain (not the domain itself).
    Subdomains {
        /// The scheme, or `None` for any.
        scheme: Option<String>,
        /// `.example.com`, lowercase.
        suffix: String,
        /// The port, `None` for the scheme's default.
        port: Option<u16>,
    },
}

impl OriginPattern {
    /// Parses one `client.allowed_origins` entry.
    pub(crate) fn parse(text: &str) -> Result<Self, OriginError> {
        let text = text.trim();
        match text {
            "*" => return Ok(Self::Any),
            "null" => return Ok(Self::Null),
            _ => {}
        }
        let p = Parsed::parse(text, true)?;
        if let Some(rest) = p.host.strip_prefix('*') {
            if !rest.starts_with('.') || rest.len() < 2 || rest.contains('*') {
                return Err(OriginError::Malformed);
            }
            return Ok(Self::Subdomains {
                scheme: p.scheme,
                suffix: rest.to_owned(),
                port: p.port,
            });
        }
        if p.host.contains('*') {
            return Err(OriginError::Malformed);
        }
        Ok(Self::Exact {
            scheme: p.scheme,
            host: p.host,
            port: p.port,
        })
    }

    fn matches(&self, origin: &Parsed) -> bool {
        // A pattern without a scheme leaves the port check to the origin's own scheme.
        let same = |scheme: &Option<String>, port: &Option<u16>| {
            scheme
                .as_ref()
                .is_none_or(|s| Some(s) == origin.scheme.as_ref())
                && *port == origin.port
        };
        match self {
            Self::Any => true,
            Self::Null => false,
            Self::Exact { scheme, host, port } => same(scheme, port) && *host == origin.host,
            Self::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                same(scheme, port)
                    && origin.host.len() > suffix.len()
                    && origin.host.ends_with(suffix.as_str())
            }
        }
    }
}

/// The configured origins, checked against a request's `Origin` and `Host`.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginRule {
    patterns: Vec<OriginPattern>,
}

impl OriginRule {
    /// A rule that allows the request's own host and `patterns`.
    pub(crate) fn new(patterns: Vec<OriginPattern>) -> Self {
        Self { patterns }
    }

    /// Whether a request with these headers may go on. No `Origin` (a client that is not
    /// a browser) is allowed; so is an origin whose host and port are the request's
    /// `Host`, whatever its scheme (a TLS-terminating proxy changes the scheme but not
    /// the host); other origins only when a pattern allows them.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        if self.patterns.contains(&OriginPattern::Any) {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim();
        if origin == "null" {
            return self.patterns.contains(&OriginPattern::Null);
        }
        let Ok(parsed) = Parsed::parse(origin, false) else {
            return false;
        };
        if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok())
            && let Ok((host, port)) = split_authority(host.trim())
        {
            let default = parsed.scheme.as_deref().and_then(default_port);
            if host == parsed.host && port.filter(|&p| Some(p) != default) == parsed.port {
                return true;
            }
        }
        self.patterns.iter().any(|p| p.matches(&parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::{OriginError, OriginPattern, OriginRule};
    use axum::http::{HeaderMap, HeaderValue};

    fn rule(patterns: &[&str]) -> OriginRule {
        OriginRule::new(
            patterns
                .iter()
                .map(|p| OriginPattern::parse(p).expect("a pattern"))
                .collect(),
        )
    }

    fn headers(origin: Option<&str>, host: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert("origin", HeaderValue::from_str(o).expect("header"));
        }
        if let Some(o) = host {
            h.insert("host", HeaderValue::from_str(o).expect("header"));
        }
        h
    }

    fn allows(rule: &OriginRule, origin: &str, host: &str) -> bool {
        rule.allows(&headers(Some(origin), Some(host)))
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let r = rule(&["https://app.example.com", "http://localhost:3000"]);
        assert!(allows(&r, "https://app.example.com", "herald.example.com"));
        assert!(allows(
            &r,
            "https://APP.example.com:443",
            "herald.example.com"
        ));
        assert!(allows(&r, "http://localhost:3000", "herald.example.com"));
        assert!(!allows(&r, "http://app.example.com", "herald.example.com"));
        assert!(!allows(
            &r,
            "https://app.example.com:8443",
            "herald.example.com"
        ));
        assert!(!allows(&r, "http://localhost:3001", "herald.example.com"));
        assert!(!allows(&r, "http://localhost", "herald.example.com"));
        assert!(!allows(&r, "https://evil.example", "herald.example.com"));
    }

    #[test]
    fn subdomain_patterns_match_subdomains_only() {
        let r = rule(&["*.example.com"]);
        assert!(allows(&r, "https://app.example.com", "h"));
        assert!(allows(&r, "http://a.b.example.com", "h"));
        assert!(!allows(&r, "https://example.com", "h"));
        assert!(!allows(&r, "https://evil-example.com", "h"));
        assert!(!allows(&r, "https://example.com.evil.example", "h"));
        assert!(!allows(&r, "https://app.example.com:8443", "h"));
        let r = rule(&["https://*.example.com:8443"]);
        assert!(allows(&r, "https://app.example.com:8443", "h"));
        assert!(!allows(&r, "http://app.example.com:8443", "h"));
        assert!(!allows(&r, "https://app.example.com", "h"));
    }

    #[test]
    fn the_default_allows_the_requests_own_host_on_any_scheme() {
        let r = rule(&[]);
        assert!(allows(
            &r,
            "https://herald.example.com",
            "herald.example.com"
        ));
        assert!(allows(
            &r,
            "http://herald.example.com",
            "herald.example.com"
        ));
        assert!(allows(
            &r,
            "https://herald.example.com",
            "herald.example.com:443"
        ));
        assert!(allows(&r, "http://127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(allows(&r, "https://127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(!allows(&r, "http://127.0.0.1:8001", "127.0.0.1:8000"));
        assert!(!allows(&r, "http://127.0.0.1", "127.0.0.1:8000"));
        assert!(!allows(&r, "http://127.0.0.1:8000", "127.0.0.1"));
        assert!(!allows(&r, "https://evil.example", "herald.example.com"));
        assert!(!allows(
            &r,
            "https://herald.example.com.evil.example",
            "herald.example.com"
        ));
        // No Origin: not a browser, nothing to hijack.
        assert!(r.allows(&headers(None, Some("herald.example.com"))));
        assert!(r.allows(&headers(None, None)));
        // An Origin and no Host: nothing to compare with.
        assert!(!r.allows(&headers(Some("http://a"), None)));
    }

    #[test]
    fn ipv6_hosts_compare_with_their_brackets_and_ports() {
        let r = rule(&[]);
        assert!(allows(&r, "http://[::1]:8000", "[::1]:8000"));
        assert!(allows(&r, "http://[::1]", "[::1]"));
        assert!(!allows(&r, "http://[::1]:8001", "[::1]:8000"));
        assert!(!allows(&r, "http://[::2]:8000", "[::1]:8000"));
        let r = rule(&["http://[fd00::1]:3000"]);
        assert!(allows(&r, "http://[fd00::1]:3000", "h"));
        assert!(!allows(&r, "http://[fd00::1]", "h"));
    }

    #[test]
    fn null_and_garbage_origins_are_refused_unless_listed() {
        let r = rule(&[]);
        assert!(!allows(&r, "null", "null"));
        assert!(!allows(&r, "not an origin", "h"));
        assert!(!allows(&r, "https://", "h"));
        assert!(!allows(&r, "https://a.example:99999", "a.example:99999"));
        let mut h = HeaderMap::new();
        h.insert(
            "origin",
            HeaderValue::from_bytes(b"https://\xff").expect("header"),
        );
        h.insert("host", HeaderValue::from_static("h"));
        assert!(!r.allows(&h));
        assert!(allows(&rule(&["null"]), "null", "h"));
        assert!(allows(&rule(&["*"]), "https://evil.example", "h"));
        assert!(allows(&rule(&["*"]), "null", "h"));
    }

    #[test]
    fn bad_patterns_are_reported() {
        for bad in [
            "",
            "https://",
            "*",
            "*example.com",
            "a.*.com",
            "https://a:0",
        ] {
            if bad == "*" {
                continue;
            }
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(OriginPattern::parse("http://a:x"), Err(OriginError::Port));
        assert_eq!(OriginPattern::parse("*"), Ok(OriginPattern::Any));
        assert!(OriginPattern::parse("app.example.com").is_ok());
    }
}
