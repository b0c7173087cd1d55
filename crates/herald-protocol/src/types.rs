//! The wire types: commands from clients, replies and pushes from the server.
//!
//! Empty strings, zero numbers, `false` and empty collections are omitted when
//! encoding and default when decoding, as the JSON protocol specifies. An optional JSON
//! field (`data`, `info`, ...) that holds `null` decodes as absent.

use crate::RawJson;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// Subscribe `flag` bit: the client accepts pushes that carry a numeric id instead of the channel.
pub const FLAG_CHANNEL_COMPACTION: i64 = 1;
/// Subscribe `flag` bit: reject the subscription with error 112 when recovery is impossible.
pub const FLAG_REJECT_UNRECOVERED: i64 = 2;

macro_rules! methods {
    ($( $field:ident : $req:ident => $variant:ident ),* $(,)?) => {
        /// A command from a client: an `id` and exactly one method field.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Command {
            /// Matches the reply to the command; 0 for `send` and for pongs.
            #[serde(default, skip_serializing_if = "is_zero_u32")]
            pub id: u32,
            $(
                #[allow(missing_docs)]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$req>,
            )*
        }

        /// The one method a [`Command`] carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Request<'a> {
            /// A bare `{}`: the client's answer to a server ping.
            Pong,
            $(
                #[allow(missing_docs)]
                $variant(&'a $req),
            )*
        }

        impl Command {
            /// The method of this command.
            ///
            /// `{}` with no id is a pong. An id with no known method is
            /// [`CommandError::UnknownMethod`] (reply 104); two methods are
            /// [`CommandError::SeveralMethods`].
            pub fn request(&self) -> Result<Request<'_>, CommandError> {
                let mut found = None;
                $(
                    if let Some(r) = &self.$field {
                        if found.is_some() {
                            return Err(CommandError::SeveralMethods);
                        }
                        found = Some(Request::$variant(r));
                    }
                )*
                match found {
                    Some(r) => Ok(r),
                    None if self.id == 0 => Ok(Request::Pong),
                    None => Err(CommandError::UnknownMethod),
                }
            }
        }

        impl Request<'_> {
            /// The method's name on the wire (`"pong"` for a pong).
            pub fn name(&self) -> &'static str {
                match self {
                    Request::Pong => "pong",
                    $( Request::$variant(_) => stringify!($field), )*
                }
            }
        }
    };
}

methods! {
    connect: ConnectRequest => Connect,
    subscribe: SubscribeRequest => Subscribe,
    unsubscribe: UnsubscribeRequest => Unsubscribe,
    publish: PublishRequest => Publish,
    presence: PresenceRequest => Presence,
    presence_stats: PresenceStatsRequest => PresenceStats,
    history: HistoryRequest => History,
    rpc: RpcRequest => Rpc,
    refresh: RefreshRequest => Refresh,
    sub_refresh: SubRefreshRequest => SubRefresh,
    send: SendRequest => Send,
}

/// A command that does not name exactly one known method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command has an id but no method Herald knows.
    #[error("unknown method")]
    UnknownMethod,
    /// The command names more than one method.
    #[error("more than one method in a command")]
    SeveralMethods,
}

/// `connect`: authenticate the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The connection JWT.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Custom data for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// Server-side subscriptions the client wants to recover, by channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeRequest>,
    /// The client's name (e.g. `js`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The client's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Emulated headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// `subscribe`: start receiving a channel's publications, optionally recovering missed ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// A subscription JWT (required for `$` channels).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Recover publications after `offset` in `epoch`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recover: bool,
    /// The epoch the client's offset belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// The last offset the client has.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Custom data for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// The client wants offsets with its publications.
    #[serde(default, skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// The client wants to be able to recover.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// The client wants join/leave pushes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub join_leave: bool,
    /// The delta compression the client asks for (`"fossil"`; empty = none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub delta: String,
    /// The client's tag filter (the SDK's `tagsFilter`), where the namespace allows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf: Option<crate::FilterNode>,
    /// Bit flags ([`FLAG_CHANNEL_COMPACTION`], [`FLAG_REJECT_UNRECOVERED`]).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub flag: i64,
}

/// `unsubscribe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// `publish` from a client (where the namespace allows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// The publication's data; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// A Herald extension: publishing again with the same key publishes nothing and
    /// returns the first publish's position. Empty means none; SDKs that do not know
    /// the field never send it, so their commands and replies are unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idempotency_key: String,
}

/// `presence`: who is subscribed to a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// `presence_stats`: how many clients and users are subscribed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStatsRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// A position in a channel's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The offset of a publication (0 = before the first).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// The stream's epoch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

/// `history`: read a channel's recent publications.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// At most this many publications; 0 = only the position, negative = all.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub limit: i32,
    /// Read after this position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reverse: bool,
}

/// The RPC method every node answers at once with an empty result, so that clients can
/// measure their round trip (Herald's browser client shows it as latency).
pub const RPC_PING: &str = "herald.ping";

/// `rpc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Call data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// The RPC method.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
}

/// `refresh`: a new connection token before the old one expires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// The new connection JWT.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// `sub_refresh`: a new subscription token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRefreshRequest {
    /// The channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// The new subscription JWT.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// `send`: an asynchronous message to the server; no reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
}

/// A reply error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// The code (see [`crate::ErrorCode`]).
    pub code: u32,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The client may retry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

/// Everything the server sends: a reply to a command (`id` > 0), a push (`push`), or a
/// ping (neither).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The id of the command answered.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    /// The command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// An asynchronous push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshResult>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshResult>,
}

impl Reply {
    /// An error reply to command `id`.
    pub fn error(id: u32, error: Error) -> Self {
        Self {
            id,
            error: Some(error),
            ..Self::default()
        }
    }

    /// A push.
    pub fn push(push: Push) -> Self {
        Self {
            push: Some(push),
            ..Self::default()
        }
    }

    /// Whether this is a server ping (`{}`).
    pub fn is_ping(&self) -> bool {
        self.id == 0 && self.push.is_none() && self.error.is_none()
    }
}

/// The `connect` result (also the `connect` push for unidirectional transports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// The client id the server assigned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// The server's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Custom data for the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// Server-side subscriptions, by channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// The connection expires and must be refreshed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the connection expires.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// The server's ping interval in seconds.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    /// The client must answer pings.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pong: bool,
    /// The session id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// The node's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// The `subscribe` result (also the `subscribe` push for server-side subscriptions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// The subscription expires and must be refreshed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the subscription expires.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// The channel keeps history: the client can recover.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// The stream's epoch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Recovered publications, in offset order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Recovery succeeded: `publications` are exactly the missed ones.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// The stream position: the top of the stream (after recovery too: the recovered
    /// publications lead up to it).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Publications carry offsets.
    #[serde(default, skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// Custom data for the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// The client asked to recover.
    #[serde(default, skip_serializing_if = "is_false")]
    pub was_recovering: bool,
    /// Join/leave pushes are on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub join_leave: bool,
    /// Delta compression is on: every publication's `data` is a JSON string, the full
    /// JSON text or (with the publication's `delta`) a fossil patch against the
    /// previous one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delta: bool,
}

/// The `unsubscribe` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

/// The `publish` result: `{}`, unless the command carried an `idempotency_key` and the
/// channel keeps history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {
    /// The publication's offset (of the first publish with the same idempotency key).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// The epoch that offset belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

/// The `presence` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceResult {
    /// Subscribed clients by client id.
    #[serde(default)]
    pub presence: BTreeMap<String, ClientInfo>,
}

/// The `presence_stats` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStatsResult {
    /// Subscribed connections.
    #[serde(default)]
    pub num_clients: u32,
    /// Distinct users among them.
    #[serde(default)]
    pub num_users: u32,
}

/// The `history` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResult {
    /// The publications read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// The stream's epoch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// The stream's top offset.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
}

/// The `rpc` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcResult {
    /// Result data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
}

/// The `refresh` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    /// The client id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// The server's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The connection expires.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it expires.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// The `sub_refresh` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRefreshResult {
    /// The subscription expires.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it expires.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// An asynchronous message from the server about one channel (or the connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The channel the push is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// A publication.
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publication: Option<Publication>,
    /// A client joined the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    /// A client left the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<Leave>,
    /// The server ended the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
    /// An asynchronous message to the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// The server subscribed the connection (server-side subscription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    /// The server disconnects the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
}

/// Who published, joined or left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The user id ("" = anonymous).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The client id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Connection info from the connection token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<RawJson>,
    /// Channel info from the subscription token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<RawJson>,
}

/// One publication in a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The payload, embedded as raw JSON.
    #[serde(default = "RawJson::null")]
    pub data: RawJson,
    /// The publishing client, when a client published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// The publication's offset in the channel's stream.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `data` is a fossil patch against the previous publication this subscriber
    /// received (delta subscriptions only; stored publications never set it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub delta: bool,
    /// Who published it, as a stable origin id: subscribers with the same origin never
    /// receive it. Kept with the publication, never sent to clients.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// A client joined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Who.
    pub info: ClientInfo,
}

/// A client left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    /// Who.
    pub info: ClientInfo,
}

/// The server ended a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// See [`crate::UnsubscribeCode`].
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    /// A short reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A message to one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The payload.
    #[serde(default = "RawJson::null")]
    pub data: RawJson,
}

/// The server disconnects the client (sent as a push where a close code cannot be).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// The close code.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    /// A short reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
