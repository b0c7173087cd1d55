//! Channel names: namespace, private (`$`) and user-limited (`#`) channels, and the
//! permission rules that follow from them.

use crate::config::{Config, DEFAULT_NAMESPACE, NamespaceConfig, WILDCARD_NAMESPACE};
use herald_protocol::ErrorCode;

pub use herald_protocol::MAX_CHANNEL_BYTES;

/// A channel name resolved against the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Channel<'a> {
    /// The full name.
    pub name: &'a str,
    /// The namespace's options.
    pub ns: &'a NamespaceConfig,
    /// The name the options are configured under (`*` for the wildcard namespace).
    pub ns_name: &'a str,
    /// Starts with `$`: subscribing needs a subscription token.
    pub private: bool,
    /// The users listed after `#`, when the namespace allows user-limited channels.
    users: Option<&'a str>,
}

/// What a client wants to do in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish.
    Publish,
    /// Read history.
    History,
    /// Read presence.
    Presence,
}

/// Why [`Channel::resolve`] refused `name` with `code`, in words that name the fix.
pub fn explain(name: &str, code: ErrorCode) -> String {
    if name.is_empty() {
        return "the channel name is empty".into();
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return format!(
            "the channel name is {} bytes long; at most {MAX_CHANNEL_BYTES} are allowed",
            name.len()
        );
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return format!(
            "the channel name {name:?} holds {c:?}; spaces and control characters are not allowed"
        );
    }
    if code == ErrorCode::UnknownChannel {
        let bare = name.trim_start_matches('$');
        return match bare.split_once(':') {
            Some((ns, _)) => format!(
                "unknown channel {name:?}: namespace {ns:?} is not configured (add [namespaces.{ns}], or [namespaces.\"*\"] for any)"
            ),
            None => format!(
                "unknown channel {name:?}: channels without ':' use namespace \"default\", which is not configured (add [namespaces.default])"
            ),
        };
    }
    code.message().to_owned()
}

impl<'a> Channel<'a> {
    /// Resolves `name`: 107 for a malformed name, 102 for an unknown namespace.
    pub fn resolve(config: &'a Config, name: &'a str) -> Result<Self, ErrorCode> {
        if name.is_empty()
            || name.len() > MAX_CHANNEL_BYTES
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ErrorCode::BadRequest);
        }
        let private = name.starts_with('$');
        let bare = name.trim_start_matches('$');
        let ns_name = match bare.split_once(':') {
            Some((ns, _)) => ns,
            None => DEFAULT_NAMESPACE,
        };
        let (ns_name, ns) = config
            .namespaces
            .get_key_value(ns_name)
            .or_else(|| config.namespaces.get_key_value(WILDCARD_NAMESPACE))
            .ok_or(ErrorCode::UnknownChannel)?;
        let users = if ns.allow_user_limited_channels {
            bare.rsplit_once('#').map(|(_, users)| users)
        } else {
            None
        };
        Ok(Self {
            name,
            ns,
            ns_name,
            private,
            users,
        })
    }

    /// Whether `user` is one of the users a user-limited channel admits.
    pub fn admits_user(&self, user: &str) -> bool {
        !user.is_empty()
            && self
                .users
                .is_some_and(|list| list.split(',').any(|u| u == user))
    }

    /// Whether this is a user-limited channel whose list does not name `user`.
    pub fn excludes_user(&self, user: &str) -> bool {
        self.users.is_some() && !self.admits_user(user)
    }

    /// Whether a client may subscribe without a subscription token.
    pub fn may_subscribe(&self, user: &str) -> bool {
        if self.private {
            return false;
        }
        if self.admits_user(user) {
            return true;
        }
        if user.is_empty() {
            self.ns.allow_subscribe_for_anonymous
        } else {
            self.ns.allow_subscribe_for_client
        }
    }

    /// Whether a client may act in the channel (`subscribed`: it is a subscriber).
    /// Returns the error code to reply with when not.
    pub fn check(&self, action: Action, user: &str, subscribed: bool) -> Result<(), ErrorCode> {
        let ns = self.ns;
        let (available, client, subscriber, anonymous) = match action {
            Action::Publish => (
                true,
                ns.allow_publish_for_client,
                ns.allow_publish_for_subscriber,
                ns.allow_publish_for_anonymous,
            ),
            Action::History => (
                ns.history_enabled(),
                ns.allow_history_for_client,
                ns.allow_history_for_subscriber,
                ns.allow_history_for_anonymous,
            ),
            Action::Presence => (
                ns.presence,
                ns.allow_presence_for_client,
                ns.allow_presence_for_subscriber,
                ns.allow_presence_for_anonymous,
            ),
        };
        if !available {
            return Err(ErrorCode::NotAvailable);
        }
        let allowed =
            (subscribed && subscriber) || if user.is_empty() { anonymous } else { client };
        if allowed {
            Ok(())
        } else {
            Err(ErrorCode::PermissionDenied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let config: Config = toml::from_str(
            r#"
client.allow_anonymous = true
[namespaces.default]
allow_subscribe_for_client = true
[namespaces.chat]
history_size = 10
history_ttl = "1m"
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_history_for_subscriber = true
allow_user_limited_channels = true
[namespaces.open]
allow_subscribe_for_anonymous = true
allow_publish_for_anonymous = true
"#,
        )
        .expect("well-typed");
        config.validate().expect("valid");
        config
    }

    #[test]
    fn resolves_namespaces() {
        let c = config();
        assert!(std::ptr::eq(
            Channel::resolve(&c, "news").expect("default").ns,
            c.namespace("default").expect("ns")
        ));
        assert!(
            Channel::resolve(&c, "chat:room")
                .expect("chat")
                .ns
                .history_enabled()
        );
        assert!(
            Channel::resolve(&c, "$chat:secret")
                .expect("private")
                .private
        );
        assert_eq!(
            Channel::resolve(&c, "nope:x").err(),
            Some(ErrorCode::UnknownChannel)
        );
        for bad in ["", "has space", "tab\t", &"x".repeat(256)] {
            assert_eq!(Channel::resolve(&c, bad).err(), Some(ErrorCode::BadRequest));
        }
    }

    #[test]
    fn subscribe_rules() {
        let c = config();
        let news = Channel::resolve(&c, "news").expect("ok");
        assert!(news.may_subscribe("42"));
        assert!(!news.may_subscribe(""), "anonymous not allowed in default");
        assert!(
            Channel::resolve(&c, "open:x")
                .expect("ok")
                .may_subscribe("")
        );
        assert!(
            !Channel::resolve(&c, "$news")
                .expect("ok")
                .may_subscribe("42")
        );
    }

    #[test]
    fn user_limited_channels() {
        let c = config();
        let room = Channel::resolve(&c, "chat:dm#42,43").expect("ok");
        assert!(room.admits_user("42") && room.admits_user("43"));
        assert!(!room.admits_user("4") && !room.admits_user(""));
        // In a namespace without the option, '#' is just a character.
        assert!(
            !Channel::resolve(&c, "open:dm#42")
                .expect("ok")
                .admits_user("42")
        );
    }

    #[test]
    fn action_rules() {
        let c = config();
        let chat = Channel::resolve(&c, "chat:room").expect("ok");
        assert_eq!(
            chat.check(Action::Publish, "42", false),
            Err(ErrorCode::PermissionDenied)
        );
        assert_eq!(chat.check(Action::Publish, "42", true), Ok(()));
        assert_eq!(chat.check(Action::History, "42", true), Ok(()));
        assert_eq!(
            chat.check(Action::Presence, "42", true),
            Err(ErrorCode::NotAvailable)
        );
        let news = Channel::resolve(&c, "news").expect("ok");
        assert_eq!(
            news.check(Action::History, "42", true),
            Err(ErrorCode::NotAvailable)
        );
        let open = Channel::resolve(&c, "open:x").expect("ok");
        assert_eq!(open.check(Action::Publish, "", false), Ok(()));
    }
}
