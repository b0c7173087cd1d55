//! The gateway's token checks (`TokenVerifier::verify_connection` and
//! `verify_subscription`) with a fixed HMAC key, on arbitrary token text and on tokens
//! correctly signed over arbitrary header and claims JSON, so that the header and claims
//! parsing behind the signature check is reached too.
//!
//! Input: one flags byte, then the rest. Flags: bit 0 a subscription token (else a
//! connection token); bit 1 a verifier that also requires `aud` and `iss`; bits 2–3 the
//! mode: 0 (and 3) the rest is the token text, 1 the rest is the claims JSON under a valid
//! header, 2 the rest is header JSON, a NUL byte, then claims JSON; bits 4–5 the HMAC
//! algorithm (HS256, HS384, HS512) that signs modes 1 and 2.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_gateway::auth::TokenVerifier;
use herald_gateway::config::{Secret, TokenConfig};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

const SECRET: &str = "fuzz-secret-0123456789abcdef0123";

fn verifier(audience: &str, issuer: &str) -> TokenVerifier {
    TokenVerifier::from_config(&TokenConfig {
        hmac_secret: Secret(SECRET.into()),
        audience: audience.into(),
        issuer: issuer.into(),
        ..TokenConfig::default()
    })
    .expect("an HMAC verifier needs no files")
}

static LAX: LazyLock<TokenVerifier> = LazyLock::new(|| verifier("", ""));
static STRICT: LazyLock<TokenVerifier> = LazyLock::new(|| verifier("herald", "auth.example"));

/// `HERALD_FUZZ_DEBUG=1` prints each outcome (to check what seeds reach).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("HERALD_FUZZ_DEBUG").is_some());

fn sign(header: &[u8], claims: &[u8], alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg)
        .expect("HMAC signing cannot fail");
    format!("{message}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let subscription = flags & 1 != 0;
    let verifier = if flags & 2 != 0 { &*STRICT } else { &*LAX };
    let alg = match (flags >> 4) & 3 {
        1 => Algorithm::HS384,
        2 => Algorithm::HS512,
        _ => Algorithm::HS256,
    };
    let token = match (flags >> 2) & 3 {
        1 => {
            let header = format!(r#"{{"alg":"{alg:?}","typ":"JWT"}}"#);
            sign(header.as_bytes(), rest, alg)
        }
        2 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            sign(header, claims, alg)
        }
        _ => match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
    };
    let accepted = check(verifier, &token, subscription);
    // A token that was accepted must be refused once its signature changes.
    if accepted && let Some(dot) = token.rfind('.') {
        let mut tampered = token.clone().into_bytes();
        if let Some(first) = tampered.get_mut(dot + 1) {
            *first = if *first == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).expect("ASCII swap keeps UTF-8");
            assert!(
                !check(verifier, &tampered, subscription),
                "a tampered signature was accepted: {tampered}"
            );
        }
    }
});

fn check(verifier: &TokenVerifier, token: &str, subscription: bool) -> bool {
    if subscription {
        match block_on(verifier.verify_subscription(token)) {
            Ok(claims) => {
                let _ = claims.expires_at();
                debug(token, &claims);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                debug(token, &e);
                false
            }
        }
    } else {
        match block_on(verifier.verify_connection(token)) {
            Ok(claims) => {
                let _ = claims.expires_at();
                debug(token, &claims);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                debug(token, &e);
                false
            }
        }
    }
}

/// Runs a check to its end. Without a JWKS it never waits, but it is async because a
/// key set may have to be fetched; one runtime serves every input.
fn block_on<F: std::future::Future>(check: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime")
        })
        .block_on(check)
}

fn debug(token: &str, outcome: &dyn std::fmt::Debug) {
    if *DEBUG {
        eprintln!("{token} -> {outcome:?}");
    }
}
