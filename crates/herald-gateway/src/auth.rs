//! Token verification: connection and subscription JWTs, with keys chosen by algorithm
//! family so that one kind of key can never verify a token signed for another.

use crate::config::TokenConfig;
use herald_protocol::RawJson;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::collections::HashSet;

/// Claims of a connection token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectionClaims {
    /// The user id ("" = anonymous).
    #[serde(default)]
    pub sub: String,
    /// Expiry (seconds since the epoch).
    #[serde(default)]
    pub exp: Option<u64>,
    /// Public user info, sent to others in presence and join/leave.
    #[serde(default)]
    pub info: Option<RawJson>,
    /// Server-side subscriptions.
    #[serde(default)]
    pub channels: Vec<String>,
    /// When the connection expires, if different from `exp` (0 = never).
    #[serde(default)]
    pub expire_at: Option<u64>,
}

impl ConnectionClaims {
    /// When the connection must be refreshed (seconds since the epoch), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        match self.expire_at {
            Some(0) => None,
            Some(t) => Some(t),
            None => self.exp,
        }
    }
}

/// Claims of a subscription token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubscriptionClaims {
    /// The user the token was issued for; must be the connection's user.
    #[serde(default)]
    pub sub: String,
    /// The channel the token grants.
    pub channel: String,
    /// Expiry (seconds since the epoch).
    #[serde(default)]
    pub exp: Option<u64>,
    /// Channel info for this subscriber.
    #[serde(default)]
    pub info: Option<RawJson>,
    /// When the subscription expires, if different from `exp` (0 = never).
    #[serde(default)]
    pub expire_at: Option<u64>,
}

impl SubscriptionClaims {
    /// When the subscription must be refreshed (seconds since the epoch), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        match self.expire_at {
            Some(0) => None,
            Some(t) => Some(t),
            None => self.exp,
        }
    }
}

/// A token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is well-formed and signed but expired: the client should fetch a new one.
    #[error("token expired")]
    Expired,
    /// The token's algorithm has no configured key (this is also how `alg: none` and
    /// algorithm confusion are refused).
    #[error("no key configured for algorithm {0}")]
    NoKeyForAlgorithm(String),
    /// Signature, format or claims are wrong.
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// A key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a PEM public key of the expected type.
    #[error("{path} is not a PEM {kind} public key")]
    Parse {
        /// The file.
        path: String,
        /// RSA or EC.
        kind: &'static str,
        /// Why.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Verifies tokens with the configured keys.
#[derive(Clone)]
pub struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    audience: String,
    issuer: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("hmac", &self.hmac.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ec", &self.ec.is_some())
            .finish()
    }
}

fn read_pem(
    path: &str,
    kind: &'static str,
    parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
) -> Result<Option<DecodingKey>, KeyError> {
    if path.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&pem).map(Some).map_err(|source| KeyError::Parse {
        path: path.to_owned(),
        kind,
        source,
    })
}

impl TokenVerifier {
    /// Loads the keys named in the configuration.
    pub fn from_config(config: &TokenConfig) -> Result<Self, KeyError> {
        Ok(Self {
            hmac: (!config.hmac_secret.is_empty())
                .then(|| DecodingKey::from_secret(config.hmac_secret.expose().as_bytes())),
            rsa: read_pem(&config.rsa_public_key, "RSA", DecodingKey::from_rsa_pem)?,
            ec: read_pem(&config.ec_public_key, "EC", DecodingKey::from_ec_pem)?,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
        })
    }

    fn check<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let header = decode_header(token).map_err(TokenError::Invalid)?;
        let alg = header.alg;
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.hmac.as_ref(),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.rsa.as_ref(),
            Algorithm::ES256 | Algorithm::ES384 => self.ec.as_ref(),
            _ => None,
        }
        .ok_or_else(|| TokenError::NoKeyForAlgorithm(format!("{alg:?}")))?;
        let mut validation = Validation::new(alg);
        // Tokens without `exp` never expire; `exp` and `nbf` are checked when present.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&[&self.issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match decode::<T>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(e) => Err(TokenError::Invalid(e)),
        }
    }

    /// Verifies a connection token.
    pub fn verify_connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        self.check(token)
    }

    /// Verifies a subscription token.
    pub fn verify_subscription(&self, token: &str) -> Result<SubscriptionClaims, TokenError> {
        self.check(token)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token's expiry (Unix seconds) as a deadline on the node's clock, and the seconds
/// left (what replies announce as `ttl`).
pub fn expiry(at: Option<u64>) -> (Option<tokio::time::Instant>, u32) {
    match at {
        None => (None, 0),
        Some(at) => {
            let left = at.saturating_sub(unix_now());
            (
                Some(tokio::time::Instant::now() + std::time::Duration::from_secs(left)),
                u32::try_from(left).unwrap_or(u32::MAX),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "test-secret-0123456789abcdef0123";

    fn verifier(audience: &str, issuer: &str) -> TokenVerifier {
        TokenVerifier::from_config(&TokenConfig {
            hmac_secret: Secret(SECRET.into()),
            audience: audience.into(),
            issuer: issuer.into(),
            ..TokenConfig::default()
        })
        .expect("keys")
    }

    fn hs(alg: Algorithm, claims: &serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn accepts_every_hmac_algorithm() {
        let v = verifier("", "");
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let claims = v
                .verify_connection(&hs(
                    alg,
                    &json!({"sub": "42", "exp": unix_now() + 60, "info": {"name": "Ann"}}),
                ))
                .expect("valid");
            assert_eq!(claims.sub, "42");
            assert_eq!(claims.info.expect("info").get(), r#"{"name":"Ann"}"#);
        }
        let forever = v
            .verify_connection(&hs(Algorithm::HS256, &json!({"sub": "1"})))
            .expect("no exp");
        assert_eq!(forever.expires_at(), None);
    }

    #[test]
    fn rejects_expired_not_yet_valid_and_tampered() {
        let v = verifier("", "");
        let expired = hs(
            Algorithm::HS256,
            &json!({"sub": "1", "exp": unix_now() - 5}),
        );
        assert!(matches!(
            v.verify_connection(&expired),
            Err(TokenError::Expired)
        ));
        let future = hs(
            Algorithm::HS256,
            &json!({"sub": "1", "nbf": unix_now() + 600}),
        );
        assert!(matches!(
            v.verify_connection(&future),
            Err(TokenError::Invalid(_))
        ));
        let mut tampered = hs(Algorithm::HS256, &json!({"sub": "1"}));
        tampered.pop();
        tampered.push('A');
        assert!(v.verify_connection(&tampered).is_err());
        assert!(v.verify_connection("not a jwt").is_err());
    }

    #[test]
    fn rejects_alg_none_and_unconfigured_families() {
        let v = verifier("", "");
        // {"alg":"none","typ":"JWT"} . {"sub":"1"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
        assert!(v.verify_connection(none).is_err());
        // An RS256 header with an HMAC signature made from the secret: algorithm
        // confusion. No RSA key is configured, so it is refused before any check.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "1"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
        .replacen(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9",
            1,
        );
        assert!(matches!(
            v.verify_connection(&confused),
            Err(TokenError::NoKeyForAlgorithm(_))
        ));
    }

    #[test]
    fn checks_audience_and_issuer_when_configured() {
        let v = verifier("herald", "auth.example");
        let good = hs(
            Algorithm::HS256,
            &json!({"sub": "1", "aud": "herald", "iss": "auth.example"}),
        );
        assert!(v.verify_connection(&good).is_ok());
        for bad in [
            json!({"sub": "1", "aud": "other", "iss": "auth.example"}),
            json!({"sub": "1", "aud": "herald", "iss": "evil"}),
            json!({"sub": "1"}),
        ] {
            assert!(v.verify_connection(&hs(Algorithm::HS256, &bad)).is_err());
        }
    }

    #[test]
    fn subscription_tokens_need_a_channel() {
        let v = verifier("", "");
        let ok = v
            .verify_subscription(&hs(
                Algorithm::HS256,
                &json!({"sub": "1", "channel": "$secret"}),
            ))
            .expect("valid");
        assert_eq!(ok.channel, "$secret");
        assert!(
            v.verify_subscription(&hs(Algorithm::HS256, &json!({"sub": "1"})))
                .is_err()
        );
    }

    #[test]
    fn missing_key_file_is_a_clear_error() {
        let err = TokenVerifier::from_config(&TokenConfig {
            rsa_public_key: "/nonexistent/key.pem".into(),
            ..TokenConfig::default()
        })
        .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/key.pem"));
    }
}
