//! Tokens checked with keys from a JWKS endpoint: a local HTTP server serves RSA and EC
//! keys made at test time and rotates them, goes down and turns slow, while a real
//! `herald` connects clients; and secrets read from files.

#![allow(clippy::unwrap_used)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_tests::raw::{Event, Raw};
use herald_tests::redis::Certs;
use herald_tests::{Herald, free_port, now, secret, sign};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A signing key made at test time, with its public half as a JWK.
struct Key {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn rsa(dir: &Path, kid: &str, with_alg: bool) -> Key {
        let path = dir.join(format!("{kid}.pem"));
        let p = path.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]);
        let modulus = String::from_utf8(openssl(&["rsa", "-in", p, "-noout", "-modulus"])).unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut jwk =
            json!({"kty": "RSA", "use": "sig", "kid": kid, "n": base64url(&n), "e": "AQAB"});
        if with_alg {
            jwk["alg"] = json!("RS256");
        }
        Key {
            alg: Algorithm::RS256,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_rsa_pem(&std::fs::read(&path).unwrap()).unwrap(),
            jwk,
        }
    }

    fn ec(dir: &Path, kid: &str, p384: bool) -> Key {
        let path = dir.join(format!("{kid}.pem"));
        let p = path.to_str().unwrap();
        let (curve, alg, len) = if p384 {
            ("P-384", Algorithm::ES384, 48)
        } else {
            ("P-256", Algorithm::ES256, 32)
        };
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            p,
        ]);
        let der = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        // The SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
        let point = &der[der.len() - (2 * len + 1)..];
        assert_eq!(point[0], 4);
        Key {
            alg,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_pem(&std::fs::read(&path).unwrap()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": curve, "kid": kid,
                "x": base64url(&point[1..=len]), "y": base64url(&point[len + 1..]),
            }),
        }
    }

    fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).unwrap()
    }

    /// A token signed with this key but naming another kid.
    fn token_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        encode(&header, claims, &self.encoding).unwrap()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Up,
    Down,
    Slow,
}

/// The JWKS server: serves whatever document it holds, counts requests.
struct KeyServer {
    doc: parking_lot::Mutex<Value>,
    mode: parking_lot::Mutex<Mode>,
    requests: AtomicUsize,
    port: u16,
    tls: bool,
}

/// A listener that hands axum only connections whose TLS handshake went through.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    fn new(tcp: tokio::net::TcpListener, certs: &Certs) -> TlsListener {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.path("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
        // ring, as everywhere in Herald; deprecated upstream only for its key exchanges.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate just goes; the next one is served.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl KeyServer {
    async fn start(keys: &[&Key]) -> Arc<KeyServer> {
        Self::start_on(keys, None).await
    }

    /// Serves over TLS with the certificate `server.pem` of `certs` when given.
    async fn start_on(keys: &[&Key], certs: Option<&Certs>) -> Arc<KeyServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Arc::new(KeyServer {
            doc: parking_lot::Mutex::new(Value::Null),
            mode: parking_lot::Mutex::new(Mode::Up),
            requests: AtomicUsize::new(0),
            port: listener.local_addr().unwrap().port(),
            tls: certs.is_some(),
        });
        server.serve(keys);
        let app = axum::Router::new()
            .route("/keys", axum::routing::get(jwks))
            .with_state(server.clone());
        match certs {
            None => drop(tokio::spawn(
                async move { axum::serve(listener, app).await },
            )),
            Some(certs) => {
                let listener = TlsListener::new(listener, certs);
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
        }
        server
    }

    fn serve(&self, keys: &[&Key]) {
        // An encryption key and a key of an unknown type ride along: both are skipped.
        let mut list: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        list.push(json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}));
        list.push(json!({"kty": "future", "kid": "future"}));
        *self.doc.lock() = json!({ "keys": list });
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/keys", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn jwks(State(server): State<Arc<KeyServer>>) -> Response {
    server.requests.fetch_add(1, Ordering::SeqCst);
    let mode = *server.mode.lock();
    match mode {
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            axum::Json(server.doc.lock().clone()).into_response()
        }
        Mode::Up => axum::Json(server.doc.lock().clone()).into_response(),
    }
}

/// What happened to one connect attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Connected,
    Error(u64),
    Closed(u16),
}

async fn attempt(h: &Herald, token: &str) -> Outcome {
    let mut raw = Raw::open(&h.ws_url()).await;
    raw.command(json!({"connect": {"token": token}})).await;
    loop {
        match raw.next().await {
            Event::Reply(r) if r.is_ping() => continue,
            Event::Reply(r) => {
                let v = serde_json::to_value(*r).unwrap();
                return match v["error"]["code"].as_u64() {
                    Some(code) => Outcome::Error(code),
                    None => Outcome::Connected,
                };
            }
            Event::Closed(code, _) => return Outcome::Closed(code),
            Event::Gone => return Outcome::Closed(0),
        }
    }
}

/// Retries a connect as an SDK would after a temporary error, for up to `within`.
async fn eventually_connects(h: &Herald, token: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match attempt(h, token).await {
            Outcome::Connected => return,
            Outcome::Error(100) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("expected to connect, got {other:?}; log:\n{}", h.log()),
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-jwks-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start_with_jwks(server: &KeyServer, settings: &str) -> Herald {
    let auth = format!(
        "[token]\njwks_url = \"{}\"\njwks_timeout = \"500ms\"\njwks_min_refresh_interval = \"1s\"\n{settings}\n[api]\nkey = \"{}\"\n",
        server.url(),
        secret()
    );
    Herald::start_auth(free_port(), "", "", &auth, "", &[]).await
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "exp": now() + 3600})
}

#[tokio::test]
async fn rsa_and_ec_keys_are_used_and_rotated_through_the_jwks() {
    let dir = temp_dir("rotate");
    let r1 = Key::rsa(&dir, "r1", true);
    let e1 = Key::ec(&dir, "e1", false);
    let e2 = Key::ec(&dir, "e2", true);
    let server = KeyServer::start(&[&r1, &e1, &e2]).await;
    let h = start_with_jwks(&server, "").await;

    assert_eq!(
        attempt(&h, &r1.token(&claims("ann"))).await,
        Outcome::Connected
    );
    assert_eq!(
        attempt(&h, &e1.token(&claims("bob"))).await,
        Outcome::Connected
    );
    assert_eq!(
        attempt(&h, &e2.token(&claims("cy"))).await,
        Outcome::Connected
    );
    // A fractional exp, as `time.time() + 3600` writes it.
    let float_exp = json!({"sub": "dee", "exp": now() as f64 + 3600.5});
    assert_eq!(attempt(&h, &r1.token(&float_exp)).await, Outcome::Connected);
    // An expired one is "expired", which the SDK answers with a new token.
    let past = json!({"sub": "dee", "exp": now() as f64 - 10.5});
    assert_eq!(attempt(&h, &r1.token(&past)).await, Outcome::Error(109));
    // An RSA-signed token naming the EC key's kid: the key is not for its algorithm.
    assert_eq!(
        attempt(&h, &r1.token_as("e1", &claims("eve"))).await,
        Outcome::Closed(3500)
    );
    // Signed by a key the server does not publish, under a published kid.
    let stranger = Key::rsa(&dir, "stranger", true);
    assert_eq!(
        attempt(&h, &stranger.token_as("r1", &claims("eve"))).await,
        Outcome::Closed(3500)
    );
    let fetched = server.requests();

    // Rotation: r1 is retired, r2 is published. The first token with the new kid makes
    // the node fetch again.
    let r2 = Key::rsa(&dir, "r2", false);
    server.serve(&[&r2, &e1, &e2]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        attempt(&h, &r2.token(&claims("ann"))).await,
        Outcome::Connected
    );
    assert_eq!(server.requests(), fetched + 1);
    // The retired key is gone from the node's set: a fetch later confirms it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        attempt(&h, &r1.token(&claims("ann"))).await,
        Outcome::Closed(3500)
    );
    assert_eq!(server.requests(), fetched + 2);
    assert!(h.metric("herald_jwks_fetches_total{outcome=\"ok\"}").await >= 3.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_storm_of_unknown_kids_costs_the_key_server_few_fetches() {
    let dir = temp_dir("storm");
    let good = Key::ec(&dir, "good", false);
    let server = KeyServer::start(&[&good]).await;
    let h = Arc::new(start_with_jwks(&server, "").await);
    eventually_connects(&h, &good.token(&claims("ann")), Duration::from_secs(5)).await;
    // Past the rate limit of the start's fetch, so the storm may cause one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = server.requests();

    let mut attempts = Vec::new();
    for i in 0..60 {
        let h = h.clone();
        let token = good.token_as(&format!("made-up-{i}"), &claims("mallory"));
        attempts.push(tokio::spawn(async move { attempt(&h, &token).await }));
    }
    for a in attempts {
        let outcome = a.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Closed(3500) | Outcome::Error(100)),
            "{outcome:?}"
        );
    }
    // Then one after another: each comes after the last fetch, so only the rate limit
    // keeps them from fetching again.
    for i in 0..30 {
        let token = good.token_as(&format!("made-up-later-{i}"), &claims("mallory"));
        let outcome = attempt(&h, &token).await;
        assert!(
            matches!(outcome, Outcome::Closed(3500) | Outcome::Error(100)),
            "{outcome:?}"
        );
    }
    // One fetch per jwks_min_refresh_interval (1s), and the storm took less than a few.
    let during = server.requests() - before;
    eprintln!("90 connects with made-up kids caused {during} JWKS fetch(es)");
    assert!(
        (1..=3).contains(&during),
        "{during} fetches for 90 unknown kids"
    );
    // Known keys kept working throughout.
    assert_eq!(
        attempt(&h, &good.token(&claims("ann"))).await,
        Outcome::Connected
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_key_server_that_is_down_or_slow_gives_temporary_errors_and_keeps_the_last_keys() {
    let dir = temp_dir("down");
    let e1 = Key::ec(&dir, "e1", false);
    let server = KeyServer::start(&[&e1]).await;
    server.set_mode(Mode::Down);
    // The node starts although the first fetch fails.
    let h = start_with_jwks(&server, "").await;
    let token = e1.token(&claims("ann"));
    assert_eq!(attempt(&h, &token).await, Outcome::Error(100));
    assert!(h.log().contains("JWKS fetch failed"), "{}", h.log());

    // Back up: the SDK's retries get through once the node fetches again.
    server.set_mode(Mode::Up);
    eventually_connects(&h, &token, Duration::from_secs(5)).await;

    // Slow: a new kid cannot be fetched within the timeout, so it gets a temporary
    // error, and the keys already fetched keep working.
    server.set_mode(Mode::Slow);
    let e2 = Key::ec(&dir, "e2", false);
    server.serve(&[&e1, &e2]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        attempt(&h, &e2.token(&claims("bob"))).await,
        Outcome::Error(100)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(attempt(&h, &token).await, Outcome::Connected);
    assert!(
        h.metric("herald_jwks_fetches_total{outcome=\"timeout\"}")
            .await
            >= 1.0
    );
    assert!(
        h.metric("herald_jwks_fetches_total{outcome=\"http_error\"}")
            .await
            >= 1.0
    );

    server.set_mode(Mode::Up);
    eventually_connects(&h, &e2.token(&claims("bob")), Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn secrets_and_the_api_key_come_from_files() {
    let dir = temp_dir("files");
    let (hmac, key) = (secret(), secret());
    let hmac_path = dir.join("hmac");
    let key_path = dir.join("api-key");
    // As `kubectl create secret --from-file` of an `echo`ed value stores them.
    std::fs::write(&hmac_path, format!("{hmac}\n")).unwrap();
    std::fs::write(&key_path, format!("{key}\n")).unwrap();
    let auth = format!(
        "[token]\nhmac_secret_file = \"{}\"\n[api]\nkey_file = \"{}\"\n",
        hmac_path.display(),
        key_path.display()
    );
    let h = Herald::start_auth(free_port(), &hmac, &key, &auth, "", &[]).await;
    assert_eq!(attempt(&h, &h.token("ann")).await, Outcome::Connected);
    let other = sign(&secret(), &claims("eve"));
    assert_eq!(attempt(&h, &other).await, Outcome::Closed(3500));
    let reply = h
        .api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let status = reqwest::Client::new()
        .post(h.url("/api/publish"))
        .header("X-API-Key", format!("{key}0"))
        .json(&json!({"channel": "news", "data": {}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    // The secret itself never reaches the log.
    assert!(!h.log().contains(&hmac) && !h.log().contains(&key));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_https_key_server_is_trusted_through_jwks_ca_file_only() {
    let dir = temp_dir("https");
    let certs = Certs::generate();
    let key = Key::ec(&dir, "e1", true);
    let server = KeyServer::start_on(&[&key], Some(&certs)).await;

    // Its CA named: the keys are fetched over TLS and tokens are checked with them.
    let ca = format!("jwks_ca_file = {:?}", certs.ca().to_str().unwrap());
    let h = start_with_jwks(&server, &ca).await;
    assert_eq!(
        attempt(&h, &key.token(&claims("ann"))).await,
        Outcome::Connected
    );
    assert!(h.metric("herald_jwks_fetches_total{outcome=\"ok\"}").await >= 1.0);

    // Another CA named: the server is not trusted, no key is had, and the client is
    // told to retry (100), never that its token is invalid.
    let other = format!("jwks_ca_file = {:?}", certs.other_ca().to_str().unwrap());
    let untrusted = start_with_jwks(&server, &other).await;
    assert_eq!(
        attempt(&untrusted, &key.token(&claims("ann"))).await,
        Outcome::Error(100)
    );
    assert_eq!(
        untrusted
            .metric("herald_jwks_fetches_total{outcome=\"ok\"}")
            .await,
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
