//! Property tests of the entity-event convention: every channel the rule names reads
//! back as the same entity and audience and fits a channel name, only valid names are
//! accepted, and events survive encode → decode unchanged.

use herald_protocol::entity::{EntityChannel, EntityScope};
use herald_protocol::*;
use proptest::prelude::*;

fn entity_type() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9_-]{1,64}")
        .expect("regex")
        .prop_filter("`all` is reserved", |t| t != "all")
}

fn entity_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9_-]{1,128}").expect("regex")
}

fn audience() -> impl Strategy<Value = Audience> {
    prop_oneof![Just(Audience::Public), Just(Audience::Restricted)]
}

fn action() -> impl Strategy<Value = EntityAction> {
    prop_oneof![
        Just(EntityAction::Created),
        Just(EntityAction::Updated),
        Just(EntityAction::Deleted),
    ]
}

fn payload() -> impl Strategy<Value = Option<RawJson>> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z\"\\\\ é]{0,8}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(2, 8, 3, |inner| {
        prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    });
    // `null` decodes as absent, so it is never generated as `Some`.
    proptest::option::of(value.prop_map(|v| RawJson::from_value(&v).expect("json")))
}

proptest! {
    #[test]
    fn every_channel_parses_back_and_fits(t in entity_type(), id in entity_id(), a in audience()) {
        let names = entity_channels(&t, &id, a).expect("valid names");
        let expected = [
            EntityScope::All,
            EntityScope::Type { entity_type: &t },
            EntityScope::Entity { entity_type: &t, entity_id: &id },
        ];
        for (name, scope) in names.iter().zip(expected) {
            prop_assert!(name.len() <= MAX_CHANNEL_BYTES, "{} bytes", name.len());
            prop_assert_eq!(name.starts_with('$'), a == Audience::Restricted);
            let parsed = EntityChannel::parse(name);
            prop_assert_eq!(parsed, Some(EntityChannel { audience: a, scope }));
        }
    }

    #[test]
    fn parse_accepts_only_names_the_rule_makes(name in "\\$?entities:[a-zA-Z0-9_.:$#-]{0,12}") {
        if let Some(channel) = EntityChannel::parse(&name) {
            prop_assert_eq!(channel.to_string(), name);
        }
    }

    #[test]
    fn names_outside_the_rule_are_refused(t in "[a-z0-9_.:A-Z é-]{0,70}", id in "[a-zA-Z0-9_.:# é-]{0,130}") {
        let type_ok = (1..=64).contains(&t.len())
            && t != "all"
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let id_ok = (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(entity_channels(&t, &id, Audience::Public).is_ok(), type_ok && id_ok);
    }

    #[test]
    fn events_survive_encode_decode(
        t in entity_type(),
        id in entity_id(),
        act in action(),
        actor in "[a-z0-9:@. ]{0,12}",
        version in any::<u64>(),
        timestamp in any::<u64>(),
        payload in payload(),
    ) {
        let event = EntityEvent { entity_type: t, entity_id: id, action: act, actor, version, timestamp, payload };
        let text = serde_json::to_string(&event).expect("encode");
        prop_assert_eq!(EntityEvent::from_json(&text).expect("decode"), event);
    }
}
