//! Signing tokens for the tools and the development banner (HS256 with the node's
//! HMAC secret).

use anyhow::Context;
use serde_json::Value;

/// Signs claims with an HMAC secret (HS256).
pub(crate) fn sign(secret: &str, claims: &Value) -> anyhow::Result<String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign the token")
}
