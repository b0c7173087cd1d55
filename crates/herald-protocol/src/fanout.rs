//! Publishing one message to several channels at once (`broadcast`, `publish_entity`):
//! the idempotency key each channel's publish gets.

/// The idempotency key of the publish to `channel` within a fan-out keyed `key`: `None`
/// when `key` is empty (no idempotency).
///
/// Brokers keep keys per channel, so the suffix is not what keeps channels apart. It is
/// the form `broadcast` has always used, and every fan-out publisher (the HTTP API,
/// `herald_redis::Publisher`) must derive the same key for a retry through another of
/// them to be recognised as a duplicate.
pub fn channel_idempotency_key(key: &str, channel: &str) -> Option<String> {
    (!key.is_empty()).then(|| format!("{key}:{channel}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_channel() {
        assert_eq!(
            channel_idempotency_key("change-7", "$entities:all").as_deref(),
            Some("change-7:$entities:all")
        );
        assert_eq!(channel_idempotency_key("", "news"), None);
    }
}
