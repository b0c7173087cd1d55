//! Entity events: the one convention for "an entity was created, updated or deleted"
//! publications, and the rule that names the channels they go to.
//!
//! An [`EntityEvent`] is published to three scopes of namespace [`ENTITY_NAMESPACE`]:
//! `entities:all`, `entities:<type>` and `entities:<type>.<id>`, so a dashboard
//! subscribes to exactly the breadth it shows. Each scope exists in two [`Audience`]s:
//! `public`, named as written, and `restricted`, the same name behind `$`, which Herald
//! lets a client subscribe to only with a subscription token.
//!
//! Why two audiences rather than one channel per visibility: a user who may see
//! restricted entities subscribes *only* to the `$` audience, which carries every event
//! (of restricted entities and of public ones); everyone else subscribes to the public
//! audience, which carries only events of entities anyone may see. Each user thus reads
//! one ordered, recoverable stream per scope, never two to merge, and who reads which is
//! enforced by the server: the application's backend decides who gets a subscription
//! token for the `$` names.
//!
//! When an entity's visibility changes, the producer keeps both streams truthful: an
//! entity that becomes restricted is published as `deleted` to the public audience (and
//! `updated` to the restricted one); one that becomes public is published as `created`
//! to the public audience (and `updated` to the restricted one).

use crate::{ErrorCode, MAX_CHANNEL_BYTES, RawJson};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The namespace of every entity channel.
pub const ENTITY_NAMESPACE: &str = "entities";
/// Longest `entity_type`, in bytes.
pub const MAX_ENTITY_TYPE_BYTES: usize = 64;
/// Longest `entity_id`, in bytes.
pub const MAX_ENTITY_ID_BYTES: usize = 128;
/// The scope of every type; for that reason it cannot be a type's name.
const ALL_SCOPE: &str = "all";

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityAction {
    /// It was created (or became visible to the audience).
    Created,
    /// It changed.
    Updated,
    /// It was deleted (or stopped being visible to the audience).
    Deleted,
}

impl EntityAction {
    /// Every action.
    pub const ALL: [EntityAction; 3] = [Self::Created, Self::Updated, Self::Deleted];

    /// The wire name: `created`, `updated` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for EntityAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityAction {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        by_name(
            &Self::ALL,
            s,
            Self::as_str,
            "action",
            "created, updated or deleted",
        )
    }
}

/// Who may read a channel: the public audience, or the restricted (`$`) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Channels as written; any client the namespace allows may subscribe.
    Public,
    /// Channels behind `$`; subscribing needs a subscription token.
    Restricted,
}

impl Audience {
    /// Both audiences.
    pub const ALL: [Audience; 2] = [Self::Public, Self::Restricted];

    /// The wire name: `public` or `restricted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Restricted => "restricted",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Public => "",
            Self::Restricted => "$",
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Audience {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        by_name(
            &Self::ALL,
            s,
            Self::as_str,
            "audience",
            "public or restricted",
        )
    }
}

/// The one of `all` whose wire name is `given`.
fn by_name<T: Copy>(
    all: &[T],
    given: &str,
    name: fn(T) -> &'static str,
    kind: &'static str,
    expected: &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|&t| name(t) == given)
        .ok_or_else(|| UnknownName {
            kind,
            given: given.to_owned(),
            expected,
        })
}

/// A name that is not an [`EntityAction`] or an [`Audience`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {given:?}: expected {expected}")]
pub struct UnknownName {
    kind: &'static str,
    given: String,
    expected: &'static str,
}

/// An entity event: the data of every publication in the entity channels.
///
/// Every field but `payload` is required, so every consumer sees the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityEvent {
    /// The kind of entity, e.g. `applications`: 1–64 of `a-z`, `0-9`, `_`, `-`; not `all`.
    pub entity_type: String,
    /// The entity, e.g. `42`: 1–128 of `A-Z`, `a-z`, `0-9`, `_`, `-`.
    pub entity_id: String,
    /// What happened.
    pub action: EntityAction,
    /// The user who made the change (may be empty).
    pub actor: String,
    /// The entity's version after the change.
    pub version: u64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The entity's new state; usually absent (or `null`) for `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<RawJson>,
}

/// Why an entity event, or where to publish it, is not valid. Every case is a bad
/// request (error 107).
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// The JSON is not an entity event (a field missing, unknown or of the wrong type).
    #[error("not an entity event: {0}")]
    Malformed(#[source] serde_json::Error),
    /// `entity_type` breaks the naming rule.
    #[error("entity_type {0:?} is not 1–64 characters of a-z, 0-9, _ and -")]
    BadType(String),
    /// `entity_type` is `all`, the name of the scope of every type.
    #[error("entity_type \"all\" is reserved: entities:all is the channel of every type")]
    ReservedType,
    /// `entity_id` breaks the naming rule.
    #[error("entity_id {0:?} is not 1–128 characters of A-Z, a-z, 0-9, _ and -")]
    BadId(String),
    /// No audience was given.
    #[error("audiences is empty: give public, restricted or both")]
    NoAudience,
    /// An audience was given twice.
    #[error("audience {0} is given twice")]
    DuplicateAudience(Audience),
}

impl EntityError {
    /// The reply code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

fn check_type(entity_type: &str) -> Result<(), EntityError> {
    let well_formed = (1..=MAX_ENTITY_TYPE_BYTES).contains(&entity_type.len())
        && entity_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(EntityError::BadType(entity_type.to_owned()));
    }
    if entity_type == ALL_SCOPE {
        return Err(EntityError::ReservedType);
    }
    Ok(())
}

fn check_id(entity_id: &str) -> Result<(), EntityError> {
    let well_formed = (1..=MAX_ENTITY_ID_BYTES).contains(&entity_id.len())
        && entity_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(EntityError::BadId(entity_id.to_owned()))
    }
}

/// Checks a list of audiences to publish to: at least one, none twice.
pub fn check_audiences(audiences: &[Audience]) -> Result<(), EntityError> {
    if audiences.is_empty() {
        return Err(EntityError::NoAudience);
    }
    for (i, a) in audiences.iter().enumerate() {
        if audiences[..i].contains(a) {
            return Err(EntityError::DuplicateAudience(*a));
        }
    }
    Ok(())
}

impl EntityEvent {
    /// Decodes and validates an event from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, EntityError> {
        let event: Self = serde_json::from_str(text).map_err(EntityError::Malformed)?;
        event.validate()?;
        Ok(event)
    }

    /// Checks `entity_type` and `entity_id` against the naming rule.
    pub fn validate(&self) -> Result<(), EntityError> {
        check_type(&self.entity_type)?;
        check_id(&self.entity_id)
    }

    /// Every channel this event goes to, audience by audience in the order given, each
    /// as `all`, type, entity.
    pub fn channels(&self, audiences: &[Audience]) -> Result<Vec<String>, EntityError> {
        check_audiences(audiences)?;
        let mut out = Vec::with_capacity(audiences.len() * 3);
        for audience in audiences {
            out.extend(entity_channels(
                &self.entity_type,
                &self.entity_id,
                *audience,
            )?);
        }
        Ok(out)
    }
}

/// How much of the entity space a channel covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityScope<'a> {
    /// Every entity of every type: `entities:all`.
    All,
    /// Every entity of one type: `entities:<type>`.
    Type {
        /// The type.
        entity_type: &'a str,
    },
    /// One entity: `entities:<type>.<id>`.
    Entity {
        /// Its type.
        entity_type: &'a str,
        /// Its id.
        entity_id: &'a str,
    },
}

/// An entity channel: an audience and a scope. `Display` gives its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityChannel<'a> {
    /// Who may read it.
    pub audience: Audience,
    /// What it covers.
    pub scope: EntityScope<'a>,
}

impl<'a> EntityChannel<'a> {
    /// Reads a channel name back; `None` for a name that is not an entity channel.
    pub fn parse(name: &'a str) -> Option<Self> {
        let (audience, bare) = match name.strip_prefix('$') {
            Some(rest) => (Audience::Restricted, rest),
            None => (Audience::Public, name),
        };
        let rest = bare
            .strip_prefix(ENTITY_NAMESPACE)
            .and_then(|r| r.strip_prefix(':'))?;
        if rest == ALL_SCOPE {
            return Some(Self {
                audience,
                scope: EntityScope::All,
            });
        }
        // The type cannot contain '.', so the first one ends it.
        let scope = match rest.split_once('.') {
            None => {
                check_type(rest).ok()?;
                EntityScope::Type { entity_type: rest }
            }
            Some((entity_type, entity_id)) => {
                check_type(entity_type).ok()?;
                check_id(entity_id).ok()?;
                EntityScope::Entity {
                    entity_type,
                    entity_id,
                }
            }
        };
        Some(Self { audience, scope })
    }
}

impl fmt::Display for EntityChannel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{ENTITY_NAMESPACE}:", self.audience.prefix())?;
        match self.scope {
            EntityScope::All => f.write_str(ALL_SCOPE),
            EntityScope::Type { entity_type } => f.write_str(entity_type),
            EntityScope::Entity {
                entity_type,
                entity_id,
            } => write!(f, "{entity_type}.{entity_id}"),
        }
    }
}

/// The three channels of one entity in one audience: `all`, its type, itself. At most
/// [`MAX_CHANNEL_BYTES`] bytes each.
pub fn entity_channels(
    entity_type: &str,
    entity_id: &str,
    audience: Audience,
) -> Result<[String; 3], EntityError> {
    check_type(entity_type)?;
    check_id(entity_id)?;
    let channel = |scope| EntityChannel { audience, scope }.to_string();
    let names = [
        channel(EntityScope::All),
        channel(EntityScope::Type { entity_type }),
        channel(EntityScope::Entity {
            entity_type,
            entity_id,
        }),
    ];
    debug_assert!(names.iter().all(|n| n.len() <= MAX_CHANNEL_BYTES));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(entity_type: &str, entity_id: &str) -> EntityEvent {
        EntityEvent {
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            action: EntityAction::Updated,
            actor: "bob".to_owned(),
            version: 3,
            timestamp: 1_796_582_373_193,
            payload: None,
        }
    }

    #[test]
    fn names_the_three_scopes_of_each_audience() {
        assert_eq!(
            entity_channels("applications", "42", Audience::Public).expect("valid"),
            [
                "entities:all",
                "entities:applications",
                "entities:applications.42"
            ]
        );
        assert_eq!(
            entity_channels("applications", "42", Audience::Restricted).expect("valid"),
            [
                "$entities:all",
                "$entities:applications",
                "$entities:applications.42"
            ]
        );
        let both = event("tasks", "a-1")
            .channels(&[Audience::Restricted, Audience::Public])
            .expect("valid");
        assert_eq!(both.len(), 6);
        assert_eq!(both[0], "$entities:all");
        assert_eq!(both[5], "entities:tasks.a-1");
    }

    #[test]
    fn enforces_the_naming_rule() {
        for good in ["a", "service_2", "x-y", &"t".repeat(64)] {
            assert!(
                entity_channels(good, "1", Audience::Public).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "Apps", "a.b", "a:b", "a b", "é", &"t".repeat(65)] {
            assert!(
                matches!(
                    entity_channels(bad, "1", Audience::Public),
                    Err(EntityError::BadType(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            entity_channels("all", "1", Audience::Public),
            Err(EntityError::ReservedType)
        ));
        for good in ["42", "AbC_-9", &"i".repeat(128)] {
            assert!(
                entity_channels("t", good, Audience::Public).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "4.2", "a#b", "$x", "4/2", &"i".repeat(129)] {
            assert!(
                matches!(
                    entity_channels("t", bad, Audience::Public),
                    Err(EntityError::BadId(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn checks_audiences() {
        assert!(matches!(check_audiences(&[]), Err(EntityError::NoAudience)));
        assert!(matches!(
            check_audiences(&[Audience::Public, Audience::Public]),
            Err(EntityError::DuplicateAudience(Audience::Public))
        ));
        assert!(check_audiences(&Audience::ALL).is_ok());
    }

    #[test]
    fn parses_only_entity_channels() {
        let parsed = EntityChannel::parse("$entities:applications.42").expect("entity channel");
        assert_eq!(parsed.audience, Audience::Restricted);
        assert_eq!(
            parsed.scope,
            EntityScope::Entity {
                entity_type: "applications",
                entity_id: "42"
            }
        );
        assert_eq!(
            EntityChannel::parse("entities:all").map(|c| c.scope),
            Some(EntityScope::All)
        );
        for not in [
            "news",
            "entities",
            "entities:",
            "entities:all.1",
            "entities:a.b.c",
            "$$entities:a",
            "other:applications",
            "entitiesx:a",
        ] {
            assert_eq!(EntityChannel::parse(not), None, "{not}");
        }
    }

    #[test]
    fn decodes_the_documented_event() {
        let text = r#"{"entity_type":"applications","entity_id":"42","action":"created","actor":"bob","version":3,"timestamp":1796582373193,"payload":{"name":"x"}}"#;
        let e = EntityEvent::from_json(text).expect("valid");
        assert_eq!(e.action, EntityAction::Created);
        assert_eq!(
            e.payload.as_ref().map(RawJson::get),
            Some(r#"{"name":"x"}"#)
        );
        assert_eq!(serde_json::to_string(&e).expect("encode"), text);

        let deleted = r#"{"entity_type":"a","entity_id":"1","action":"deleted","actor":"","version":4,"timestamp":1,"payload":null}"#;
        assert_eq!(
            EntityEvent::from_json(deleted).expect("valid").payload,
            None
        );
    }

    #[test]
    fn rejects_malformed_events_with_a_reason() {
        for (text, says) in [
            (r#"{"entity_type":"a"}"#, "missing field"),
            (
                r#"{"entity_type":"a","entity_id":"1","action":"moved","actor":"","version":1,"timestamp":1}"#,
                "unknown variant `moved`",
            ),
            (
                r#"{"entity_type":"a","entity_id":"1","action":"created","actor":"","version":1,"timestamp":1,"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"entity_type":"A","entity_id":"1","action":"created","actor":"","version":1,"timestamp":1}"#,
                "entity_type \"A\"",
            ),
            (
                r#"{"entity_type":"a","entity_id":"1.2","action":"created","actor":"","version":1,"timestamp":1}"#,
                "entity_id \"1.2\"",
            ),
        ] {
            let err = EntityEvent::from_json(text).expect_err(text);
            assert_eq!(err.code(), ErrorCode::BadRequest);
            assert!(err.to_string().contains(says), "{err} lacks {says}");
        }
    }

    #[test]
    fn names_parse_from_strings() {
        assert_eq!("restricted".parse(), Ok(Audience::Restricted));
        assert_eq!("deleted".parse(), Ok(EntityAction::Deleted));
        let err = "secret".parse::<Audience>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown audience \"secret\": expected public or restricted"
        );
    }
}
