//! A client's publish `idempotency_key`: its validation and its scope in the broker.
//!
//! The broker key a client's key becomes is
//!
//! - `client:user:<byte length of user>:<user>:<key>` for an authenticated user, and
//! - `client:conn:<client id>:<key>` for an anonymous connection.
//!
//! Why this shape:
//! - The `client:` prefix keeps client keys apart from the keys of the HTTP API, the
//!   CLI and `herald_redis::Publisher`, which reach the broker verbatim: a client can
//!   never name one of those. (A trusted server-side caller that itself picks a key
//!   starting with `client:` could still meet a client's; that is its choice to make.)
//! - User ids are JWT `sub` strings and may contain `:`. The length prefix keeps the
//!   layout unambiguous without escaping: otherwise user `a:b` with key `c` and user `a`
//!   with key `b:c` would share `client:user:a:b:c`. The key comes last, so it needs no
//!   delimiting.
//! - A user's key covers all of that user's connections, so a publish retried after a
//!   reconnect (a new client id) is still recognised.
//! - Anonymous connections all have user "" but are not one person: scoped by user, one
//!   of them could swallow another's publish and learn its offset. Each is scoped to its
//!   own connection instead, which covers retries on that connection only.
//! - No channel: the broker keeps keys per channel (`Broker::publish`'s contract, which
//!   the conformance suite checks), so the same key in two channels is two keys.

use herald_protocol::ErrorCode;

/// The longest `idempotency_key` a client may send, in bytes.
pub(super) const MAX_KEY_BYTES: usize = 256;

/// The broker's idempotency key for `key` sent by connection `client` of `user` (""
/// for anonymous): `None` when `key` is empty (no idempotency), error 107 when it is
/// longer than [`MAX_KEY_BYTES`].
pub(super) fn broker_key(user: &str, client: &str, key: &str) -> Result<Option<String>, ErrorCode> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ErrorCode::BadRequest);
    }
    Ok(Some(if user.is_empty() {
        format!("client:conn:{client}:{key}")
    } else {
        format!("client:user:{}:{user}:{key}", user.len())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_none_and_the_limit_is_in_bytes() {
        assert_eq!(broker_key("42", "c1", ""), Ok(None));
        let at_limit = "k".repeat(MAX_KEY_BYTES);
        assert!(matches!(broker_key("42", "c1", &at_limit), Ok(Some(_))));
        let over = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(broker_key("42", "c1", &over), Err(ErrorCode::BadRequest));
        // 128 two-byte characters are 256 bytes; one more is over.
        let wide = "é".repeat(MAX_KEY_BYTES / 2);
        assert!(matches!(broker_key("42", "c1", &wide), Ok(Some(_))));
        assert_eq!(
            broker_key("42", "c1", &format!("{wide}x")),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn users_are_scoped_apart_even_with_colons() {
        let a = broker_key("a:b", "c1", "c").expect("valid");
        let b = broker_key("a", "c2", "b:c").expect("valid");
        assert_ne!(a, b);
        assert_eq!(a.as_deref(), Some("client:user:3:a:b:c"));
        assert_eq!(b.as_deref(), Some("client:user:1:a:b:c"));
    }

    #[test]
    fn a_user_shares_keys_across_connections_and_anonymous_ones_do_not() {
        assert_eq!(
            broker_key("42", "c1", "order-7"),
            broker_key("42", "c2", "order-7")
        );
        assert_ne!(
            broker_key("", "c1", "order-7"),
            broker_key("", "c2", "order-7")
        );
        assert_eq!(
            broker_key("", "c1", "order-7").expect("valid").as_deref(),
            Some("client:conn:c1:order-7")
        );
    }

    #[test]
    fn client_keys_never_look_like_each_other_across_kinds() {
        // A user literally named "conn" cannot reach an anonymous connection's keys.
        assert_ne!(broker_key("conn", "x", "c1:k"), broker_key("", "c1", "k"));
    }
}
