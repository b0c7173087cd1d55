//! Keys from a JWKS endpoint (`token.jwks_url`): fetched in the background, cached by
//! `kid`, and fetched again for a token with an unknown `kid` at most once per
//! `token.jwks_min_refresh_interval`, by one task however many connects ask.

use crate::config::TokenConfig;
use crate::metrics::JWKS_FETCHES;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use prometheus::{IntCounterVec, Opts};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One usable verification key from the key set.
#[derive(Clone)]
pub(crate) struct JwkKey {
    /// The key's `alg`, when the document names one: then only that algorithm.
    alg: Option<Algorithm>,
    /// RSA keys verify RS*/PS*; EC keys the one algorithm of their curve.
    family: AlgorithmFamily,
    /// For EC keys, the algorithm their curve signs with.
    curve_alg: Option<Algorithm>,
    /// The key.
    pub(crate) key: DecodingKey,
}

impl JwkKey {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        match self.alg {
            Some(a) => a == alg,
            None => alg.family() == self.family && self.curve_alg.is_none_or(|c| c == alg),
        }
    }
}

/// The keys of one fetched document.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<JwkKey>>,
    /// Every usable key, for tokens without a `kid`.
    all: Vec<Arc<JwkKey>>,
}

/// Why a key could not be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No key set has been fetched yet.
    NotLoaded,
    /// The set has no key with this `kid`.
    UnknownKid,
    /// The token has no `kid` and the set does not have exactly one key for its
    /// algorithm.
    Ambiguous,
    /// The key with this `kid` is not for the token's algorithm.
    WrongAlgorithm,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The request failed or timed out.
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    /// The server answered with an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The document is larger than `token.jwks_max_bytes`.
    #[error("document larger than {0} bytes")]
    TooLarge(usize),
    /// The document is not a JWKS.
    #[error("not a JWKS document")]
    Parse(#[source] serde_json::Error),
    /// The document has no RSA or EC signing key Herald can use.
    #[error("no usable RSA or EC signing key in the document")]
    NoKeys,
}

impl FetchError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Request(e) if e.is_timeout() => "timeout",
            Self::Request(_) => "unreachable",
            Self::Status(_) => "http_error",
            Self::TooLarge(_) => "too_large",
            Self::Parse(_) | Self::NoKeys => "invalid",
        }
    }
}

/// The JWKS key cache of one node.
pub(crate) struct Jwks {
    url: String,
    client: reqwest::Client,
    max_bytes: usize,
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    keys: parking_lot::RwLock<Option<Arc<KeySet>>>,
    /// Counts successful fetches, so a caller can tell whether a fetch happened after it
    /// looked.
    generation: AtomicU64,
    /// Held while fetching: concurrent callers wait for the one fetch.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    fetches: IntCounterVec,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// The JWKS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JwksSetupError {
    /// The HTTP client (its TLS roots, say) could not be built.
    #[error("cannot set up the JWKS HTTP client")]
    Client(#[source] reqwest::Error),
    /// `token.jwks_ca_file` could not be read.
    #[error("cannot read token.jwks_ca_file {path:?}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `token.jwks_ca_file` holds no PEM certificate, or a broken one.
    #[error("token.jwks_ca_file {path:?} holds no usable PEM certificate")]
    CaPem {
        /// The file.
        path: String,
        /// What the parser said, when it said something.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The fetch counter could not be created.
    #[error("cannot create the JWKS metrics")]
    Metrics(#[source] prometheus::Error),
}

impl Jwks {
    /// A cache for `config.jwks_url`, empty until the first fetch.
    pub(crate) fn new(config: &TokenConfig) -> Result<Self, JwksSetupError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.jwks_timeout)
            .connect_timeout(config.jwks_timeout)
            // The URL is the operator's; a redirect would let the key server send the
            // node anywhere.
            .redirect(reqwest::redirect::Policy::none());
        if !config.jwks_ca_file.is_empty() {
            // A private CA replaces the system's roots: only it may vouch for the server.
            let path = &config.jwks_ca_file;
            let pem = std::fs::read(path).map_err(|source| JwksSetupError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| JwksSetupError::CaPem {
                    path: path.clone(),
                    source: Some(e),
                })?;
            if certs.is_empty() {
                return Err(JwksSetupError::CaPem {
                    path: path.clone(),
                    source: None,
                });
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(JwksSetupError::Client)?;
        let fetches = IntCounterVec::new(
            Opts::new(JWKS_FETCHES, "JWKS fetches, by outcome"),
            &["outcome"],
        )
        .map_err(JwksSetupError::Metrics)?;
        Ok(Self {
            url: config.jwks_url.clone(),
            client,
            max_bytes: config.jwks_max_bytes,
            refresh_interval: config.jwks_refresh_interval,
            min_refresh_interval: config.jwks_min_refresh_interval,
            keys: parking_lot::RwLock::new(None),
            generation: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(None),
            fetches,
        })
    }

    /// The fetch counter, for the node's registry.
    pub(crate) fn fetch_counter(&self) -> &IntCounterVec {
        &self.fetches
    }

    /// How many fetches have succeeded.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The key for a token's `kid` (or the only key for its algorithm, without one).
    /// Cheap and synchronous: the connect path calls it for every token.
    pub(crate) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<JwkKey>, Miss> {
        let set = self.keys.read().clone().ok_or(Miss::NotLoaded)?;
        match kid {
            Some(kid) => {
                let key = set.by_kid.get(kid).ok_or(Miss::UnknownKid)?;
                if key.fits(alg) {
                    Ok(key.clone())
                } else {
                    Err(Miss::WrongAlgorithm)
                }
            }
            None => match set.all.as_slice() {
                [only] if only.fits(alg) => Ok(only.clone()),
                _ => Err(Miss::Ambiguous),
            },
        }
    }

    /// Fetches again for a token whose key was missing when the generation was `seen`,
    /// unless another caller already did (then its result counts) or the last fetch was
    /// less than `token.jwks_min_refresh_interval` ago.
    pub(crate) async fn refresh_on_miss(&self, seen: u64) {
        let mut last = self.fetching.lock().await;
        if self.generation() != seen {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.min_refresh_interval) {
            return;
        }
        *last = Some(Instant::now());
        // Failures are counted and logged inside; the caller looks at the generation.
        let _ = self.fetch_and_store().await;
    }

    async fn fetch_and_store(&self) -> Result<Option<Duration>, FetchError> {
        match self.fetch().await {
            Ok((set, max_age)) => {
                let count = set.all.len();
                *self.keys.write() = Some(Arc::new(set));
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.fetches.with_label_values(&["ok"]).inc();
                tracing::debug!(keys = count, "JWKS fetched");
                Ok(max_age)
            }
            Err(e) => {
                self.fetches.with_label_values(&[e.outcome()]).inc();
                let loaded = self.keys.read().is_some();
                tracing::warn!(
                    url = %self.url,
                    error = %herald_broker::Chain(&e),
                    keeping_last_keys = loaded,
                    "JWKS fetch failed"
                );
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchError> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(FetchError::Request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(FetchError::Request)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let set = parse(&body)?;
        Ok((set, max_age))
    }

    /// Fetches at start and then periodically until `stop`; a failed fetch is tried
    /// again after `token.jwks_min_refresh_interval`, the last good keys staying in use.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let next = {
                let mut last = self.fetching.lock().await;
                *last = Some(Instant::now());
                match self.fetch_and_store().await {
                    Ok(max_age) => max_age
                        .unwrap_or(self.refresh_interval)
                        .clamp(self.min_refresh_interval, self.refresh_interval),
                    Err(_) => self.min_refresh_interval,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(next) => {}
            }
        }
    }
}

/// `max-age` of a `Cache-Control` header.
fn max_age(header: &str) -> Option<Duration> {
    header.split(',').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS document: RSA and EC (P-256, P-384) signing keys. Keys for
/// another use, of another type or with an algorithm Herald does not verify are skipped,
/// not an error, so one odd key does not cost the whole set.
fn parse(body: &[u8]) -> Result<KeySet, FetchError> {
    let doc: Document = serde_json::from_slice(body).map_err(FetchError::Parse)?;
    let mut set = KeySet::default();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if let Some(key) = usable(&jwk) {
            let key = Arc::new(key);
            if let Some(kid) = &jwk.common.key_id {
                set.by_kid.insert(kid.clone(), key.clone());
            }
            set.all.push(key);
        }
    }
    if set.all.is_empty() {
        return Err(FetchError::NoKeys);
    }
    Ok(set)
}

fn usable(jwk: &Jwk) -> Option<JwkKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let (family, curve_alg) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (AlgorithmFamily::Ec, Some(Algorithm::ES256)),
            EllipticCurve::P384 => (AlgorithmFamily::Ec, Some(Algorithm::ES384)),
            _ => return None,
        },
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => {
            let alg: Algorithm = a.to_string().parse().ok()?;
            if alg.family() != family || curve_alg.is_some_and(|c| c != alg) {
                return None;
            }
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(JwkKey {
        alg,
        family,
        curve_alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn odd_keys_are_skipped_and_an_empty_set_is_an_error() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
            {"kty": "weird", "kid": "w"},
        ]});
        assert!(matches!(
            parse(doc.to_string().as_bytes()),
            Err(FetchError::NoKeys)
        ));
        assert!(matches!(parse(b"[]"), Err(FetchError::Parse(_))));
    }
}
