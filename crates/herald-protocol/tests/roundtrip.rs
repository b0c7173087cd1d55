//! Property tests: every wire type survives encode → decode unchanged, alone and batched,
//! in the JSON encoding and in the Protobuf one.

use herald_protocol::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn text() -> impl Strategy<Value = String> {
    // Printable text with quotes, backslashes, newlines and non-ASCII, which the
    // encoder must escape so that a frame never contains a raw newline.
    proptest::string::string_regex("[a-z0-9:$#,\"\\\\\n é€😀-]{0,12}").expect("regex")
}

fn raw_json() -> impl Strategy<Value = RawJson> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| RawJson::from_value(&v).expect("json"))
}

/// An optional JSON field: `null` there decodes as absent, so the generator never makes
/// `Some(null)` (the wire cannot tell the two apart).
fn opt_json() -> impl Strategy<Value = Option<RawJson>> {
    proptest::option::of(raw_json()).prop_map(|o| o.filter(|j| j.get() != "null"))
}

fn client_info() -> impl Strategy<Value = ClientInfo> {
    (text(), text(), opt_json(), opt_json()).prop_map(|(user, client, conn_info, chan_info)| {
        ClientInfo {
            user,
            client,
            conn_info,
            chan_info,
        }
    })
}

fn publication() -> impl Strategy<Value = Publication> {
    (
        raw_json(),
        proptest::option::of(client_info()),
        any::<u64>(),
        prop::collection::btree_map(text(), text(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(data, info, offset, tags, delta)| Publication {
            data,
            info,
            offset,
            tags,
            delta,
            origin: None,
        })
}

fn subscribe_request() -> impl Strategy<Value = SubscribeRequest> {
    (
        text(),
        text(),
        any::<bool>(),
        text(),
        any::<u64>(),
        opt_json(),
        any::<(bool, bool, bool)>(),
        (any::<i64>(), text(), prop::option::of(filter_node())),
    )
        .prop_map(
            |(
                channel,
                token,
                recover,
                epoch,
                offset,
                data,
                (positioned, recoverable, join_leave),
                (flag, delta, tf),
            )| {
                SubscribeRequest {
                    channel,
                    token,
                    recover,
                    epoch,
                    offset,
                    data,
                    positioned,
                    recoverable,
                    join_leave,
                    delta,
                    tf,
                    flag,
                }
            },
        )
}

/// Tag filter trees, valid or not (the codecs carry them as they are).
fn filter_node() -> impl Strategy<Value = FilterNode> {
    let leaf = (
        text(),
        text(),
        text(),
        text(),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(|(op, key, cmp, val, vals)| FilterNode {
            op,
            key,
            cmp,
            val,
            vals,
            nodes: Vec::new(),
        });
    leaf.prop_recursive(3, 12, 3, |inner| {
        (text(), prop::collection::vec(inner, 0..3)).prop_map(|(op, nodes)| FilterNode {
            op,
            nodes,
            ..FilterNode::default()
        })
    })
}

fn subscribe_result() -> impl Strategy<Value = SubscribeResult> {
    (
        any::<(bool, u32, bool)>(),
        text(),
        prop::collection::vec(publication(), 0..3),
        any::<(bool, u64, bool, bool, bool, bool)>(),
        opt_json(),
    )
        .prop_map(
            |(
                (expires, ttl, recoverable),
                epoch,
                publications,
                (recovered, offset, positioned, was_recovering, join_leave, delta),
                data,
            )| {
                SubscribeResult {
                    expires,
                    ttl,
                    recoverable,
                    epoch,
                    publications,
                    recovered,
                    offset,
                    positioned,
                    data,
                    was_recovering,
                    join_leave,
                    delta,
                }
            },
        )
}

fn command() -> impl Strategy<Value = Command> {
    let id = 1..u32::MAX;
    prop_oneof![
        (
            id.clone(),
            text(),
            opt_json(),
            prop::collection::btree_map(text(), subscribe_request(), 0..2),
            text(),
            text()
        )
            .prop_map(|(id, token, data, subs, name, version)| Command {
                id,
                connect: Some(ConnectRequest {
                    token,
                    data,
                    subs,
                    name,
                    version,
                    headers: BTreeMap::new()
                }),
                ..Command::default()
            }),
        (id.clone(), subscribe_request()).prop_map(|(id, s)| Command {
            id,
            subscribe: Some(s),
            ..Command::default()
        }),
        (id.clone(), text()).prop_map(|(id, channel)| Command {
            id,
            unsubscribe: Some(UnsubscribeRequest { channel }),
            ..Command::default()
        }),
        (id.clone(), text(), opt_json(), text()).prop_map(
            |(id, channel, data, idempotency_key)| Command {
                id,
                publish: Some(PublishRequest {
                    channel,
                    data,
                    idempotency_key
                }),
                ..Command::default()
            }
        ),
        (
            id.clone(),
            text(),
            any::<i32>(),
            proptest::option::of((any::<u64>(), text())),
            any::<bool>()
        )
            .prop_map(|(id, channel, limit, since, reverse)| Command {
                id,
                history: Some(HistoryRequest {
                    channel,
                    limit,
                    since: since.map(|(offset, epoch)| StreamPosition { offset, epoch }),
                    reverse
                }),
                ..Command::default()
            }),
        (id.clone(), text()).prop_map(|(id, token)| Command {
            id,
            refresh: Some(RefreshRequest { token }),
            ..Command::default()
        }),
        (id.clone(), text(), text()).prop_map(|(id, channel, token)| Command {
            id,
            sub_refresh: Some(SubRefreshRequest { channel, token }),
            ..Command::default()
        }),
        (id, text()).prop_map(|(id, channel)| Command {
            id,
            presence_stats: Some(PresenceStatsRequest { channel }),
            ..Command::default()
        }),
        opt_json().prop_map(|data| Command {
            send: Some(SendRequest { data }),
            ..Command::default()
        }),
        Just(Command::default()),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let id = 1..u32::MAX;
    prop_oneof![
        (id.clone(), any::<u32>(), text(), any::<bool>()).prop_map(
            |(id, code, message, temporary)| Reply::error(
                id,
                Error {
                    code,
                    message,
                    temporary
                }
            )
        ),
        (
            id.clone(),
            text(),
            text(),
            prop::collection::btree_map(text(), subscribe_result(), 0..2),
            any::<(bool, u32, u32, bool)>()
        )
            .prop_map(
                |(id, client, version, subs, (expires, ttl, ping, pong))| Reply {
                    id,
                    connect: Some(ConnectResult {
                        client,
                        version,
                        subs,
                        expires,
                        ttl,
                        ping,
                        pong,
                        ..ConnectResult::default()
                    }),
                    ..Reply::default()
                }
            ),
        (id.clone(), subscribe_result()).prop_map(|(id, s)| Reply {
            id,
            subscribe: Some(s),
            ..Reply::default()
        }),
        (id.clone(), any::<u64>(), text()).prop_map(|(id, offset, epoch)| Reply {
            id,
            publish: Some(PublishResult { offset, epoch }),
            ..Reply::default()
        }),
        (
            id.clone(),
            prop::collection::vec(publication(), 0..3),
            text(),
            any::<u64>()
        )
            .prop_map(|(id, publications, epoch, offset)| Reply {
                id,
                history: Some(HistoryResult {
                    publications,
                    epoch,
                    offset
                }),
                ..Reply::default()
            }),
        (
            id.clone(),
            prop::collection::btree_map(text(), client_info(), 0..3)
        )
            .prop_map(|(id, presence)| Reply {
                id,
                presence: Some(PresenceResult { presence }),
                ..Reply::default()
            }),
        (id, any::<(u32, u32)>()).prop_map(|(id, (num_clients, num_users))| Reply {
            id,
            presence_stats: Some(PresenceStatsResult {
                num_clients,
                num_users
            }),
            ..Reply::default()
        }),
        (text(), publication()).prop_map(|(channel, p)| Reply::push(Push {
            channel,
            publication: Some(p),
            ..Push::default()
        })),
        (text(), client_info()).prop_map(|(channel, info)| Reply::push(Push {
            channel,
            join: Some(Join { info }),
            ..Push::default()
        })),
        (text(), any::<u32>(), text()).prop_map(|(channel, code, reason)| Reply::push(Push {
            channel,
            unsubscribe: Some(Unsubscribe { code, reason }),
            ..Push::default()
        })),
        (text(), any::<u32>(), text()).prop_map(|(channel, code, reason)| Reply::push(Push {
            channel,
            disconnect: Some(Disconnect { code, reason }),
            ..Push::default()
        })),
        Just(Reply::default()),
    ]
}

/// The idempotency extension is invisible to SDKs that do not use it: a publish without
/// a key encodes as before, and its reply is still exactly `{}`.
#[test]
fn publish_without_idempotency_key_is_unchanged_on_the_wire() {
    let cmd: Command =
        serde_json::from_str(r#"{"id":7,"publish":{"channel":"chat:1","data":{"a":1}}}"#)
            .expect("decode");
    let publish = cmd.publish.as_ref().expect("publish");
    assert!(publish.idempotency_key.is_empty());
    assert_eq!(
        serde_json::to_string(&cmd).expect("encode"),
        r#"{"id":7,"publish":{"channel":"chat:1","data":{"a":1}}}"#
    );
    let reply = Reply {
        id: 7,
        publish: Some(PublishResult::default()),
        ..Reply::default()
    };
    assert_eq!(
        serde_json::to_string(&reply).expect("encode"),
        r#"{"id":7,"publish":{}}"#
    );
    let keyed = Reply {
        id: 8,
        publish: Some(PublishResult {
            offset: 21,
            epoch: "Xy12".into(),
        }),
        ..Reply::default()
    };
    assert_eq!(
        serde_json::to_string(&keyed).expect("encode"),
        r#"{"id":8,"publish":{"offset":21,"epoch":"Xy12"}}"#
    );
}

/// `message` without its delta fields, which the Protobuf encoding does not carry
/// (delta compression is offered to JSON clients only).
fn without_delta<T: serde::Serialize + serde::de::DeserializeOwned>(message: &T) -> T {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("delta");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(message).expect("encode");
    strip(&mut value);
    serde_json::from_value(value).expect("decode")
}

proptest! {
    #[test]
    fn command_round_trips(cmds in prop::collection::vec(command(), 1..5)) {
        let mut w = FrameWriter::default();
        for c in &cmds {
            let one = serde_json::to_string(c).expect("encode");
            prop_assert!(!one.contains('\n'));
            prop_assert_eq!(&serde_json::from_str::<Command>(&one).expect("decode"), c);
            w.push(c).expect("encode");
        }
        let frame = w.take();
        let decoded = decode_commands(std::str::from_utf8(&frame).expect("utf8")).expect("decode");
        prop_assert_eq!(decoded, cmds);
    }

    #[test]
    fn reply_round_trips(replies in prop::collection::vec(reply(), 1..5)) {
        let mut w = FrameWriter::default();
        for r in &replies {
            w.push_encoded(&frame::encode(r).expect("encode"));
        }
        let frame = w.take();
        let decoded = decode_replies(std::str::from_utf8(&frame).expect("utf8")).expect("decode");
        prop_assert_eq!(decoded, replies);
    }

    #[test]
    fn command_round_trips_in_protobuf(cmds in prop::collection::vec(command().prop_map(|m| without_delta(&m)), 1..5)) {
        let mut w = FrameWriter::new(Encoding::Protobuf, 64);
        for c in &cmds {
            w.push(c).expect("encode");
        }
        let frame = w.take();
        let decoded: Vec<Command> = protobuf::decode_commands(&frame)
            .expect("decode")
            .into_iter()
            .map(|c| c.expect("payloads are JSON"))
            .collect();
        prop_assert_eq!(decoded, cmds);
    }

    #[test]
    fn reply_round_trips_in_protobuf(replies in prop::collection::vec(reply().prop_map(|m| without_delta(&m)), 1..5)) {
        let mut w = FrameWriter::new(Encoding::Protobuf, 64);
        for r in &replies {
            w.push_encoded(&protobuf::encode_reply(r));
        }
        let frame = w.take();
        prop_assert_eq!(protobuf::decode_replies(&frame).expect("decode"), replies);
    }

    #[test]
    fn a_publication_push_encodes_as_the_reply_it_stands_for(channel in text(), p in publication()) {
        let reply = Reply::push(Push {
            channel: channel.clone(),
            publication: Some(p.clone()),
            ..Push::default()
        });
        prop_assert_eq!(protobuf::encode_publication_push(&channel, &p), protobuf::encode_reply(&reply));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = protobuf::decode_commands(&bytes);
        let _ = protobuf::decode_replies(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,64}") {
        let _ = decode_commands(&s);
        let _ = decode_replies(&s);
    }
}
