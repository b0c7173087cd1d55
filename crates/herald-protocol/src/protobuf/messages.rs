//! The Protobuf messages of `proto/client.proto`, as prost structs written from it by
//! hand (there is no `protoc` in the build), and the test that keeps the two in step.
//!
//! Each struct is declared through [`messages!`], which also records every field's
//! name, prost type and number in `FIELDS`, so the test can compare the structs with
//! the `.proto` text field by field.

use std::collections::BTreeMap;

/// Declares prost messages and their field tables.
macro_rules! messages {
    ($(
        $name:ident {
            $( $field:ident : [$($kind:tt)*] $ty:ty = $tag:literal ),* $(,)?
        }
    )*) => {
        $(
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub(crate) struct $name {
                $(
                    #[prost($($kind)*, tag = $tag)]
                    pub(crate) $field: $ty,
                )*
            }

            impl $name {
                /// Every field: its name, its prost type and its number.
                #[cfg(test)]
                const FIELDS: &'static [(&'static str, &'static str, &'static str)] = &[
                    $( (stringify!($field), stringify!($($kind)*), $tag), )*
                ];
            }
        )*

        /// Every message with its field table.
        #[cfg(test)]
        const ALL: &[(&str, &[(&str, &str, &str)])] = &[
            $( (stringify!($name), $name::FIELDS), )*
        ];
    };
}

messages! {
    Command {
        id: [uint32] u32 = "1",
        connect: [message, optional] Option<ConnectRequest> = "4",
        subscribe: [message, optional] Option<SubscribeRequest> = "5",
        unsubscribe: [message, optional] Option<UnsubscribeRequest> = "6",
        publish: [message, optional] Option<PublishRequest> = "7",
        presence: [message, optional] Option<PresenceRequest> = "8",
        presence_stats: [message, optional] Option<PresenceStatsRequest> = "9",
        history: [message, optional] Option<HistoryRequest> = "10",
        send: [message, optional] Option<SendRequest> = "12",
        rpc: [message, optional] Option<RpcRequest> = "13",
        refresh: [message, optional] Option<RefreshRequest> = "14",
        sub_refresh: [message, optional] Option<SubRefreshRequest> = "15",
    }
    ConnectRequest {
        token: [string] String = "1",
        data: [bytes = "vec"] Vec<u8> = "2",
        subs: [btree_map = "string, message"] BTreeMap<String, SubscribeRequest> = "3",
        name: [string] String = "4",
        version: [string] String = "5",
        headers: [btree_map = "string, string"] BTreeMap<String, String> = "6",
    }
    SubscribeRequest {
        channel: [string] String = "1",
        token: [string] String = "2",
        recover: [bool] bool = "3",
        epoch: [string] String = "6",
        offset: [uint64] u64 = "7",
        data: [bytes = "vec"] Vec<u8> = "8",
        positioned: [bool] bool = "9",
        recoverable: [bool] bool = "10",
        join_leave: [bool] bool = "11",
        tf: [message, optional] Option<FilterNode> = "13",
        flag: [int64] i64 = "14",
    }
    FilterNode {
        op: [string] String = "1",
        key: [string] String = "2",
        cmp: [string] String = "3",
        val: [string] String = "4",
        vals: [string, repeated] Vec<String> = "5",
        nodes: [message, repeated] Vec<FilterNode> = "6",
    }
    UnsubscribeRequest {
        channel: [string] String = "1",
    }
    PublishRequest {
        channel: [string] String = "1",
        data: [bytes = "vec"] Vec<u8> = "2",
        idempotency_key: [string] String = "1000",
    }
    PresenceRequest {
        channel: [string] String = "1",
    }
    PresenceStatsRequest {
        channel: [string] String = "1",
    }
    StreamPosition {
        offset: [uint64] u64 = "1",
        epoch: [string] String = "2",
    }
    HistoryRequest {
        channel: [string] String = "1",
        limit: [int32] i32 = "7",
        since: [message, optional] Option<StreamPosition> = "8",
        reverse: [bool] bool = "9",
    }
    RpcRequest {
        data: [bytes = "vec"] Vec<u8> = "1",
        method: [string] String = "2",
    }
    RefreshRequest {
        token: [string] String = "1",
    }
    SubRefreshRequest {
        channel: [string] String = "1",
        token: [string] String = "2",
    }
    SendRequest {
        data: [bytes = "vec"] Vec<u8> = "1",
    }
    Error {
        code: [uint32] u32 = "1",
        message: [string] String = "2",
        temporary: [bool] bool = "3",
    }
    Reply {
        id: [uint32] u32 = "1",
        error: [message, optional] Option<Error> = "2",
        push: [message, optional] Option<Push> = "4",
        connect: [message, optional] Option<ConnectResult> = "5",
        subscribe: [message, optional] Option<SubscribeResult> = "6",
        unsubscribe: [message, optional] Option<UnsubscribeResult> = "7",
        publish: [message, optional] Option<PublishResult> = "8",
        presence: [message, optional] Option<PresenceResult> = "9",
        presence_stats: [message, optional] Option<PresenceStatsResult> = "10",
        history: [message, optional] Option<HistoryResult> = "11",
        rpc: [message, optional] Option<RpcResult> = "13",
        refresh: [message, optional] Option<RefreshResult> = "14",
        sub_refresh: [message, optional] Option<SubRefreshResult> = "15",
    }
    ConnectResult {
        client: [string] String = "1",
        version: [string] String = "2",
        expires: [bool] bool = "3",
        ttl: [uint32] u32 = "4",
        data: [bytes = "vec"] Vec<u8> = "5",
        subs: [btree_map = "string, message"] BTreeMap<String, SubscribeResult> = "6",
        ping: [uint32] u32 = "7",
        pong: [bool] bool = "8",
        session: [string] String = "9",
        node: [string] String = "10",
    }
    SubscribeResult {
        expires: [bool] bool = "1",
        ttl: [uint32] u32 = "2",
        recoverable: [bool] bool = "3",
        epoch: [string] String = "6",
        publications: [message, repeated] Vec<Publication> = "7",
        recovered: [bool] bool = "8",
        offset: [uint64] u64 = "9",
        positioned: [bool] bool = "10",
        data: [bytes = "vec"] Vec<u8> = "11",
        was_recovering: [bool] bool = "12",
        join_leave: [bool] bool = "1000",
    }
    UnsubscribeResult {}
    PublishResult {
        offset: [uint64] u64 = "1000",
        epoch: [string] String = "1001",
    }
    PresenceResult {
        presence: [btree_map = "string, message"] BTreeMap<String, ClientInfo> = "1",
    }
    PresenceStatsResult {
        num_clients: [uint32] u32 = "1",
        num_users: [uint32] u32 = "2",
    }
    HistoryResult {
        publications: [message, repeated] Vec<Publication> = "1",
        epoch: [string] String = "2",
        offset: [uint64] u64 = "3",
    }
    RpcResult {
        data: [bytes = "vec"] Vec<u8> = "1",
    }
    RefreshResult {
        client: [string] String = "1",
        version: [string] String = "2",
        expires: [bool] bool = "3",
        ttl: [uint32] u32 = "4",
    }
    SubRefreshResult {
        expires: [bool] bool = "1",
        ttl: [uint32] u32 = "2",
    }
    Push {
        channel: [string] String = "2",
        r#pub: [message, optional] Option<Publication> = "4",
        join: [message, optional] Option<Join> = "5",
        leave: [message, optional] Option<Leave> = "6",
        unsubscribe: [message, optional] Option<Unsubscribe> = "7",
        message: [message, optional] Option<Message> = "8",
        subscribe: [message, optional] Option<Subscribe> = "9",
        disconnect: [message, optional] Option<Disconnect> = "11",
    }
    ClientInfo {
        user: [string] String = "1",
        client: [string] String = "2",
        conn_info: [bytes = "vec"] Vec<u8> = "3",
        chan_info: [bytes = "vec"] Vec<u8> = "4",
    }
    Publication {
        data: [bytes = "vec"] Vec<u8> = "4",
        info: [message, optional] Option<ClientInfo> = "5",
        offset: [uint64] u64 = "6",
        tags: [btree_map = "string, string"] BTreeMap<String, String> = "7",
    }
    Join {
        info: [message, optional] Option<ClientInfo> = "1",
    }
    Leave {
        info: [message, optional] Option<ClientInfo> = "1",
    }
    Unsubscribe {
        code: [uint32] u32 = "2",
        reason: [string] String = "3",
    }
    Message {
        data: [bytes = "vec"] Vec<u8> = "1",
    }
    Subscribe {
        recoverable: [bool] bool = "1",
        epoch: [string] String = "4",
        offset: [uint64] u64 = "5",
        positioned: [bool] bool = "6",
        data: [bytes = "vec"] Vec<u8> = "7",
    }
    Disconnect {
        code: [uint32] u32 = "1",
        reason: [string] String = "2",
        reconnect: [bool] bool = "3",
    }
}

#[cfg(test)]
mod tests {
    use super::ALL;
    use std::collections::BTreeMap;

    /// One field of the `.proto`: its type as written and its number.
    type ProtoFields = BTreeMap<String, (String, String)>;

    /// The messages of `client.proto`: a deliberately small reader for the subset of
    /// proto3 the file uses (messages of scalar, message, repeated and map fields).
    fn parse_proto(text: &str) -> BTreeMap<String, ProtoFields> {
        let mut messages = BTreeMap::new();
        let mut current: Option<(String, ProtoFields)> = None;
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("message ") {
                let name = rest.trim_end_matches('{').trim().to_owned();
                current = Some((name, ProtoFields::new()));
                continue;
            }
            if line == "}" {
                if let Some((name, fields)) = current.take() {
                    messages.insert(name, fields);
                }
                continue;
            }
            let Some((_, fields)) = current.as_mut() else {
                continue;
            };
            let (decl, number) = line
                .trim_end_matches(';')
                .split_once('=')
                .expect("a field line has `= number`");
            let (ty, name) = decl.trim().rsplit_once(' ').expect("type and name");
            fields.insert(
                name.to_owned(),
                (ty.trim().to_owned(), number.trim().to_owned()),
            );
        }
        messages
    }

    /// The prost type that a `.proto` type is declared with.
    fn prost_kind(proto_type: &str) -> String {
        let scalar = [
            "string", "bool", "uint32", "uint64", "int32", "int64", "sint64",
        ];
        if scalar.contains(&proto_type) {
            return proto_type.to_owned();
        }
        if proto_type == "bytes" {
            return "bytes = \"vec\"".to_owned();
        }
        if let Some(inner) = proto_type
            .strip_prefix("map<")
            .and_then(|m| m.strip_suffix('>'))
        {
            let (k, v) = inner.split_once(',').expect("map<k, v>");
            let v = v.trim();
            let v = if scalar.contains(&v) { v } else { "message" };
            return format!("btree_map = \"{}, {}\"", k.trim(), v);
        }
        if let Some(inner) = proto_type.strip_prefix("repeated ") {
            if scalar.contains(&inner) {
                return format!("{inner}, repeated");
            }
            return "message, repeated".to_owned();
        }
        "message, optional".to_owned()
    }

    #[test]
    fn the_structs_match_client_proto() {
        let proto = parse_proto(include_str!("../../proto/client.proto"));
        let mut structs = BTreeMap::new();
        for (message, fields) in ALL {
            let mut table = BTreeMap::new();
            for (name, kind, number) in *fields {
                let name = name.trim_start_matches("r#");
                // `stringify!` spaces tokens its own way: compare without spaces.
                table.insert(name.to_owned(), (kind.replace(' ', ""), number.to_string()));
            }
            structs.insert(message.to_string(), table);
        }
        let proto: BTreeMap<String, BTreeMap<String, (String, String)>> = proto
            .into_iter()
            .map(|(message, fields)| {
                let fields = fields
                    .into_iter()
                    .map(|(name, (ty, number))| (name, (prost_kind(&ty).replace(' ', ""), number)))
                    .collect();
                (message, fields)
            })
            .collect();
        assert_eq!(structs, proto);
    }

    #[test]
    fn the_reader_sees_every_message_of_the_file() {
        let proto = parse_proto(include_str!("../../proto/client.proto"));
        assert_eq!(proto.len(), ALL.len());
        assert_eq!(proto["Push"]["pub"], ("Publication".into(), "4".into()));
        assert_eq!(
            proto["ConnectRequest"]["subs"],
            ("map<string, SubscribeRequest>".into(), "3".into())
        );
    }
}
