//! The names of a channel's Redis keys and pub/sub channel, as `herald.lua` documents
//! them: every key of one channel shares the hash tag `{<channel>}`, so it lives in
//! one cluster slot.

/// Names the keys and pub/sub channels of one deployment (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`, which several deployments sharing a Redis keep apart.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, channel: &str, suffix: &str) -> String {
        format!("{}:{{{channel}}}:{suffix}", self.prefix)
    }

    /// The channel's stream of publications.
    pub(crate) fn stream(&self, channel: &str) -> String {
        self.key(channel, "stream")
    }

    /// The channel's epoch and top offset.
    pub(crate) fn meta(&self, channel: &str) -> String {
        self.key(channel, "meta")
    }

    /// The remembered result of one idempotent publish.
    pub(crate) fn idempotency(&self, channel: &str, key: &str) -> String {
        self.key(channel, &format!("idem:{key}"))
    }

    /// The channel's present clients.
    pub(crate) fn presence(&self, channel: &str) -> String {
        self.key(channel, "presence")
    }

    /// When each present client expires.
    pub(crate) fn presence_expiry(&self, channel: &str) -> String {
        self.key(channel, "presence-exp")
    }

    fn user_key(&self, user: &str, suffix: &str) -> String {
        format!("{}:user:{{{user}}}:{suffix}", self.prefix)
    }

    /// A user's publish bucket, shared by every node.
    pub(crate) fn user_publishes(&self, user: &str) -> String {
        self.user_key(user, "publishes")
    }

    /// A user's admitted connections on every node.
    pub(crate) fn user_connections(&self, user: &str) -> String {
        self.user_key(user, "conns")
    }

    /// The pub/sub channel publications of `channel` go out on.
    pub(crate) fn pubsub(&self, channel: &str) -> String {
        self.key(channel, "pub")
    }

    /// A node's own probe channel; `id` keeps it apart from every Herald channel's
    /// pub/sub name (a channel cannot contain `{`).
    pub(crate) fn probe(&self, id: &str) -> String {
        self.pubsub(&format!("probe-{id}"))
    }

    /// A node's control channel, where other nodes send it messages. Outside the
    /// `<prefix>:{<channel>}:` form, so no Herald channel can be named onto it.
    pub(crate) fn node(&self, id: &str) -> String {
        format!("{}:node:{{{id}}}", self.prefix)
    }

    /// The hash of node reports: one field per node, the report with its expiry. One
    /// key for the deployment, outside the `<prefix>:{<channel>}:` form.
    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// The Herald channel a pub/sub channel carries, if it is one of this prefix.
    pub(crate) fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:pub")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_function_library() {
        let keys = Keys::new("herald");
        assert_eq!(keys.stream("news"), "herald:{news}:stream");
        assert_eq!(keys.meta("news"), "herald:{news}:meta");
        assert_eq!(keys.idempotency("news", "k1"), "herald:{news}:idem:k1");
        assert_eq!(keys.presence("news"), "herald:{news}:presence");
        assert_eq!(keys.presence_expiry("news"), "herald:{news}:presence-exp");
        assert_eq!(keys.pubsub("news"), "herald:{news}:pub");
        assert_eq!(keys.probe("abc"), "herald:{probe-abc}:pub");
        assert_eq!(keys.user_publishes("42"), "herald:user:{42}:publishes");
        assert_eq!(keys.user_connections("42"), "herald:user:{42}:conns");
        assert_eq!(keys.channel_of(&keys.user_publishes("42")), None);
        assert_eq!(keys.node("n1"), "herald:node:{n1}");
        assert_eq!(keys.channel_of(&keys.node("n1")), None);
        assert_eq!(keys.nodes(), "herald:nodes");
        assert_eq!(keys.channel_of(&keys.nodes()), None);
    }

    #[test]
    fn pubsub_names_round_trip() {
        let keys = Keys::new("app:herald");
        for channel in ["news", "chat:room-1", "user#42", "a}b", ""] {
            assert_eq!(keys.channel_of(&keys.pubsub(channel)), Some(channel));
        }
    }

    #[test]
    fn other_names_are_not_channels() {
        let keys = Keys::new("herald");
        assert_eq!(keys.channel_of("other:{news}:pub"), None);
        assert_eq!(keys.channel_of("herald:{news}:stream"), None);
        assert_eq!(keys.channel_of("herald:news:pub"), None);
        assert_eq!(keys.channel_of("heraldx:{news}:pub"), None);
    }
}
