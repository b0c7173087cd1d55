//! Token verification: connection and subscription JWTs, with keys chosen by algorithm
//! family so that one kind of key can never verify a token signed for another, and the
//! time claims (`exp`, `nbf`, `iat`) checked here, integer or not.

use crate::config::TokenConfig;
use crate::jwks::{JwkKey, Jwks, JwksSetupError, Miss};
use herald_protocol::RawJson;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Header, Validation, decode, decode_header,
};
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::sync::Arc;

/// The latest NumericDate accepted (9999-12-31T23:59:59Z): anything later is a bug or
/// an attack, not a date.
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A NumericDate (RFC 7519 §2): seconds since the epoch, integer or not, as many
/// backends write `time.time() + 3600`. Negative, non-finite and absurdly late values are
/// refused.
fn numeric_date(value: &serde_json::Number, round: fn(f64) -> f64) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return (n <= MAX_NUMERIC_DATE).then_some(n);
    }
    let f = value.as_f64()?;
    #[allow(clippy::cast_precision_loss)]
    let max = MAX_NUMERIC_DATE as f64;
    if !(f.is_finite() && (0.0..=max).contains(&f)) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(round(f) as u64)
}

fn date_with<'de, D: Deserializer<'de>>(
    d: D,
    round: fn(f64) -> f64,
) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => numeric_date(&n, round)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("not a valid NumericDate")),
    }
}

/// A deadline (`exp`, `expire_at`, `iat`): a fraction is dropped, so a token never
/// lives longer than it says.
fn date_floor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    date_with(d, f64::floor)
}

/// A start (`nbf`): a fraction rounds up, so a token is never valid early.
fn date_ceil<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    date_with(d, f64::ceil)
}

/// Claims with an expiry and a start, which [`TokenVerifier`] checks.
trait TimeClaims {
    fn exp(&self) -> Option<u64>;
    fn nbf(&self) -> Option<u64>;
}

/// Claims of a connection token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectionClaims {
    /// The user id ("" = anonymous).
    #[serde(default)]
    pub sub: String,
    /// Expiry (seconds since the epoch; a fraction is dropped).
    #[serde(default, deserialize_with = "date_floor")]
    pub exp: Option<u64>,
    /// Not valid before (seconds since the epoch; a fraction rounds up).
    #[serde(default, deserialize_with = "date_ceil")]
    pub nbf: Option<u64>,
    /// Issued at (seconds since the epoch); only its form is checked.
    #[serde(default, deserialize_with = "date_floor")]
    pub iat: Option<u64>,
    /// Public user info, sent to others in presence and join/leave.
    #[serde(default)]
    pub info: Option<RawJson>,
    /// Server-side subscriptions.
    #[serde(default)]
    pub channels: Vec<String>,
    /// When the connection expires, if different from `exp` (0 = never).
    #[serde(default, deserialize_with = "date_floor")]
    pub expire_at: Option<u64>,
    /// A tag filter every subscription of the connection applies, which the client
    /// cannot change (see [`herald_protocol::filter`]).
    #[serde(default)]
    pub tags_filter: Option<herald_protocol::FilterNode>,
    /// The connection's origin id: its publications carry it, and it never receives
    /// publications that carry it (those its user's backend marks with it too).
    #[serde(default)]
    pub origin: Option<String>,
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

impl TimeClaims for ConnectionClaims {
    fn exp(&self) -> Option<u64> {
        self.exp
    }
    fn nbf(&self) -> Option<u64> {
        self.nbf
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
    /// Expiry (seconds since the epoch; a fraction is dropped).
    #[serde(default, deserialize_with = "date_floor")]
    pub exp: Option<u64>,
    /// Not valid before (seconds since the epoch; a fraction rounds up).
    #[serde(default, deserialize_with = "date_ceil")]
    pub nbf: Option<u64>,
    /// Issued at (seconds since the epoch); only its form is checked.
    #[serde(default, deserialize_with = "date_floor")]
    pub iat: Option<u64>,
    /// Channel info for this subscriber.
    #[serde(default)]
    pub info: Option<RawJson>,
    /// When the subscription expires, if different from `exp` (0 = never).
    #[serde(default, deserialize_with = "date_floor")]
    pub expire_at: Option<u64>,
    /// A tag filter the subscription applies, which the client cannot change.
    #[serde(default)]
    pub tags_filter: Option<herald_protocol::FilterNode>,
    /// At most one publication per key per interval for this subscription.
    #[serde(default)]
    pub conflation: Option<crate::conflation::ConflationConfig>,
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

impl TimeClaims for SubscriptionClaims {
    fn exp(&self) -> Option<u64> {
        self.exp
    }
    fn nbf(&self) -> Option<u64> {
        self.nbf
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
    /// The token names a `kid` the key set does not have, even after fetching it again.
    #[error("no key with the token's kid in the JWKS")]
    UnknownKey,
    /// The token has no `kid`, and the key set does not have exactly one key for its
    /// algorithm; or the key with its `kid` is for another algorithm.
    #[error("no JWKS key fits the token ({0})")]
    NoFittingKey(&'static str),
    /// The JWKS could not be fetched (yet), or not again for an unknown `kid` so soon:
    /// the client should try again later.
    #[error("the JWKS key set is not available")]
    KeysUnavailable,
    /// The header lists critical extensions (`crit`), which Herald does not implement
    /// (RFC 7515 §4.1.11: such a token must be refused).
    #[error("critical header extensions are not supported")]
    Critical,
    /// The token is not valid yet (`nbf`).
    #[error("token not valid yet")]
    NotYetValid,
    /// Signature, format or claims are wrong.
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

impl TokenError {
    /// Whether the client should simply try again later (a reply error 100, which the
    /// SDKs retry) rather than be refused for good.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::KeysUnavailable)
    }
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
    /// The HMAC secret file could not be read.
    #[error(transparent)]
    SecretFile(#[from] crate::config::SecretFileError),
    /// The JWKS client could not be set up.
    #[error(transparent)]
    Jwks(#[from] JwksSetupError),
}

/// Verifies tokens with the configured keys.
#[derive(Clone)]
pub struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    audience: String,
    issuer: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("hmac", &self.hmac.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ec", &self.ec.is_some())
            .field("jwks", &self.jwks)
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

/// The key a token is checked with.
enum KeyRef<'a> {
    Configured(&'a DecodingKey),
    Fetched(Arc<JwkKey>),
}

impl KeyRef<'_> {
    fn key(&self) -> &DecodingKey {
        match self {
            Self::Configured(k) => k,
            Self::Fetched(k) => &k.key,
        }
    }
}

impl TokenVerifier {
    /// Loads the keys named in the configuration (the JWKS, if any, is empty until
    /// the node's JWKS refresh task fetches it).
    pub fn from_config(config: &TokenConfig) -> Result<Self, KeyError> {
        let secret = if config.hmac_secret_file.is_empty() {
            config.hmac_secret.clone()
        } else {
            crate::config::read_secret_file("token.hmac_secret_file", &config.hmac_secret_file)?
        };
        let jwks = if config.jwks_url.is_empty() {
            None
        } else {
            Some(Arc::new(Jwks::new(config)?))
        };
        Ok(Self {
            hmac: (!secret.is_empty())
                .then(|| DecodingKey::from_secret(secret.expose().as_bytes())),
            rsa: read_pem(&config.rsa_public_key, "RSA", DecodingKey::from_rsa_pem)?,
            ec: read_pem(&config.ec_public_key, "EC", DecodingKey::from_ec_pem)?,
            jwks,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
        })
    }

    /// The JWKS cache, when `token.jwks_url` is set: the node runs its refresh task.
    pub(crate) fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    fn key_for(&self, header: &Header) -> Result<KeyRef<'_>, TokenError> {
        let alg = header.alg;
        let no_key = || TokenError::NoKeyForAlgorithm(format!("{alg:?}"));
        let configured = match alg.family() {
            AlgorithmFamily::Hmac => {
                // HMAC keys never come from a JWKS: a shared secret fetched over the
                // network is not one.
                return self
                    .hmac
                    .as_ref()
                    .map(KeyRef::Configured)
                    .ok_or_else(no_key);
            }
            AlgorithmFamily::Rsa => self.rsa.as_ref(),
            AlgorithmFamily::Ec if matches!(alg, Algorithm::ES256 | Algorithm::ES384) => {
                self.ec.as_ref()
            }
            _ => return Err(no_key()),
        };
        let Some(jwks) = &self.jwks else {
            return configured.map(KeyRef::Configured).ok_or_else(no_key);
        };
        // A configured PEM key serves tokens without a `kid`; a `kid` always means the
        // JWKS.
        if let (None, Some(key)) = (&header.kid, configured) {
            return Ok(KeyRef::Configured(key));
        }
        match jwks.lookup(header.kid.as_deref(), alg) {
            Ok(key) => Ok(KeyRef::Fetched(key)),
            Err(Miss::NotLoaded) => Err(TokenError::KeysUnavailable),
            Err(Miss::UnknownKid) => Err(TokenError::UnknownKey),
            Err(Miss::Ambiguous) => Err(TokenError::NoFittingKey(
                "no kid, and not exactly one key for its algorithm",
            )),
            Err(Miss::WrongAlgorithm) => Err(TokenError::NoFittingKey(
                "the key with its kid is for another algorithm",
            )),
        }
    }

    /// Checks a token against the keys at hand, without waiting for anything.
    fn check<T: serde::de::DeserializeOwned + TimeClaims>(
        &self,
        token: &str,
    ) -> Result<T, TokenError> {
        let header = decode_header(token).map_err(TokenError::Invalid)?;
        // Herald understands no extension, so any `crit`, even an empty list (which RFC
        // 7515 forbids producers to send), refuses the token.
        if header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        let key = self.key_for(&header)?;
        let mut validation = Validation::new(header.alg);
        // Tokens without `exp` never expire. The time claims are checked below from the
        // claims' own parse, which takes non-integer NumericDates.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
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
        let claims = decode::<T>(token, key.key(), &validation)
            .map_err(TokenError::Invalid)?
            .claims;
        let now = unix_now();
        // The same rule as jsonwebtoken's: valid through the second `exp` names.
        if claims.exp().is_some_and(|exp| exp < now) {
            return Err(TokenError::Expired);
        }
        if claims.nbf().is_some_and(|nbf| nbf > now) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Checks a token; when its key may be in a newer key set, fetches the JWKS again
    /// (at most once per `token.jwks_min_refresh_interval`, one fetch for all callers)
    /// and checks once more. With the key cached this does not wait.
    async fn verify<T: serde::de::DeserializeOwned + TimeClaims>(
        &self,
        token: &str,
    ) -> Result<T, TokenError> {
        let Some(jwks) = &self.jwks else {
            return self.check(token);
        };
        let seen = jwks.generation();
        match self.check(token) {
            Err(TokenError::UnknownKey | TokenError::KeysUnavailable) => {
                jwks.refresh_on_miss(seen).await;
                if jwks.generation() == seen {
                    // No newer key set: whether the kid exists cannot be told yet.
                    return Err(TokenError::KeysUnavailable);
                }
                self.check(token)
            }
            other => other,
        }
    }

    /// Verifies a connection token.
    pub async fn verify_connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        self.verify(token).await
    }

    /// Verifies a subscription token.
    pub async fn verify_subscription(&self, token: &str) -> Result<SubscriptionClaims, TokenError> {
        self.verify(token).await
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
                .check::<ConnectionClaims>(&hs(
                    alg,
                    &json!({"sub": "42", "exp": unix_now() + 60, "info": {"name": "Ann"}}),
                ))
                .expect("valid");
            assert_eq!(claims.sub, "42");
            assert_eq!(claims.info.expect("info").get(), r#"{"name":"Ann"}"#);
        }
        let forever = v
            .check::<ConnectionClaims>(&hs(Algorithm::HS256, &json!({"sub": "1"})))
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
            v.check::<ConnectionClaims>(&expired),
            Err(TokenError::Expired)
        ));
        let future = hs(
            Algorithm::HS256,
            &json!({"sub": "1", "nbf": unix_now() + 600}),
        );
        assert!(matches!(
            v.check::<ConnectionClaims>(&future),
            Err(TokenError::NotYetValid)
        ));
        let mut tampered = hs(Algorithm::HS256, &json!({"sub": "1"}));
        tampered.pop();
        tampered.push('A');
        assert!(v.check::<ConnectionClaims>(&tampered).is_err());
        assert!(v.check::<ConnectionClaims>("not a jwt").is_err());
    }

    #[test]
    fn rejects_alg_none_and_unconfigured_families() {
        let v = verifier("", "");
        // {"alg":"none","typ":"JWT"} . {"sub":"1"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
        assert!(v.check::<ConnectionClaims>(none).is_err());
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
            v.check::<ConnectionClaims>(&confused),
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
        assert!(v.check::<ConnectionClaims>(&good).is_ok());
        for bad in [
            json!({"sub": "1", "aud": "other", "iss": "auth.example"}),
            json!({"sub": "1", "aud": "herald", "iss": "evil"}),
            json!({"sub": "1"}),
        ] {
            assert!(
                v.check::<ConnectionClaims>(&hs(Algorithm::HS256, &bad))
                    .is_err()
            );
        }
    }

    #[test]
    fn subscription_tokens_need_a_channel() {
        let v = verifier("", "");
        let ok = v
            .check::<SubscriptionClaims>(&hs(
                Algorithm::HS256,
                &json!({"sub": "1", "channel": "$secret"}),
            ))
            .expect("valid");
        assert_eq!(ok.channel, "$secret");
        assert!(
            v.check::<SubscriptionClaims>(&hs(Algorithm::HS256, &json!({"sub": "1"})))
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

    #[test]
    fn non_integer_numeric_dates_are_accepted() {
        let v = verifier("", "");
        let now = unix_now() as f64;
        let claims = v
            .check::<ConnectionClaims>(&hs(
                Algorithm::HS256,
                &json!({"sub": "1", "exp": now + 3600.75, "iat": now + 0.5, "nbf": now - 10.25}),
            ))
            .expect("float exp, iat and nbf");
        // The fraction of a deadline is dropped: never later than the token says.
        assert_eq!(claims.exp, Some(unix_now() + 3600));
        assert_eq!(claims.nbf, Some(unix_now() - 10));
        let sub = v
            .check::<SubscriptionClaims>(&hs(
                Algorithm::HS256,
                &json!({"sub": "1", "channel": "c", "exp": now + 60.5}),
            ))
            .expect("float exp in a subscription token");
        assert_eq!(sub.expires_at(), Some(unix_now() + 60));
    }

    #[test]
    fn a_float_exp_in_the_past_is_expired_not_invalid() {
        let v = verifier("", "");
        let past = unix_now() as f64 - 5.5;
        assert!(matches!(
            v.check::<ConnectionClaims>(&hs(Algorithm::HS256, &json!({"sub": "1", "exp": past}))),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            v.check::<SubscriptionClaims>(&hs(
                Algorithm::HS256,
                &json!({"sub": "1", "channel": "c", "exp": past})
            )),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn a_float_nbf_in_the_future_is_not_yet_valid() {
        let v = verifier("", "");
        // Rounded up: 0.25 s ahead is still ahead.
        let soon = unix_now() as f64 + 0.25;
        assert!(matches!(
            v.check::<ConnectionClaims>(&hs(Algorithm::HS256, &json!({"sub": "1", "nbf": soon}))),
            Err(TokenError::NotYetValid)
        ));
    }

    #[test]
    fn impossible_numeric_dates_are_refused_cleanly() {
        let v = verifier("", "");
        for (claim, value) in [
            ("exp", json!(-1)),
            ("exp", json!(-0.5)),
            ("exp", json!(1e300)),
            ("exp", json!(u64::MAX)),
            ("exp", json!(253_402_300_800_u64)),
            ("exp", json!("1700000000")),
            ("exp", json!(true)),
            ("nbf", json!(-100)),
            ("nbf", json!(1e20)),
            ("iat", json!(-3.5)),
            ("iat", json!([1])),
            ("expire_at", json!(-1)),
        ] {
            let mut claims = json!({"sub": "1", "channel": "c"});
            claims[claim] = value.clone();
            let token = hs(Algorithm::HS256, &claims);
            assert!(
                matches!(
                    v.check::<ConnectionClaims>(&token),
                    Err(TokenError::Invalid(_))
                ),
                "{claim}: {value}"
            );
            assert!(
                matches!(
                    v.check::<SubscriptionClaims>(&token),
                    Err(TokenError::Invalid(_))
                ),
                "{claim}: {value}"
            );
        }
        // JSON has no NaN or infinity; a number too large for f64 is not JSON either.
        let raw = format!(
            "{}.{}.",
            "eyJhbGciOiJIUzI1NiJ9",
            base64url(br#"{"sub":"1","exp":1e400}"#)
        );
        assert!(v.check::<ConnectionClaims>(&raw).is_err());
    }

    fn base64url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let v = verifier("", "");
        for crit in [
            vec!["exp".to_owned()],
            vec!["x-herald-unknown".to_owned()],
            vec![],
        ] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(crit.clone());
            let token = encode(
                &header,
                &json!({"sub": "1"}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .expect("encode");
            assert!(
                matches!(
                    v.check::<ConnectionClaims>(&token),
                    Err(TokenError::Critical)
                ),
                "crit {crit:?}"
            );
        }
    }

    #[test]
    fn hmac_secret_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("herald-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).expect("write");
        let v = TokenVerifier::from_config(&TokenConfig {
            hmac_secret_file: path.display().to_string(),
            ..TokenConfig::default()
        })
        .expect("keys");
        // The trailing newline is not part of the secret.
        assert!(
            v.check::<ConnectionClaims>(&hs(Algorithm::HS256, &json!({"sub": "1"})))
                .is_ok()
        );
        let missing = dir.join("missing");
        let err = TokenVerifier::from_config(&TokenConfig {
            hmac_secret_file: missing.display().to_string(),
            ..TokenConfig::default()
        })
        .expect_err("missing");
        assert!(err.to_string().contains(&missing.display().to_string()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
