//! Herald's wire protocol: the Centrifuge client protocol v2 in its JSON and Protobuf forms.
//!
//! This crate is the leaf every other Herald crate builds on. It owns the wire types
//! ([`Command`], [`Reply`], [`Push`] and their payloads), the framing of several JSON
//! objects into one WebSocket text frame ([`frame`]), and the reply, disconnect and
//! unsubscribe codes ([`codes`]). The Protobuf encoding of the same messages, for binary
//! frames, is in [`protobuf`]. It also owns the conventions every producer and
//! consumer must agree on: the entity-event shape and its channels ([`entity`]), the
//! per-channel idempotency keys of fan-out publishes ([`fanout`]), and what an offset
//! means after a position in a channel's stream and how much a history read asks for
//! ([`position`]), and the fossil deltas of delta subscriptions ([`fossil`]). It has no
//! runtime: no tokio, no sockets, no Redis.

pub mod codes;
pub mod entity;
pub mod fanout;
pub mod filter;
pub mod fossil;
pub mod frame;
mod json;
pub mod position;
pub mod protobuf;
mod types;

pub use codes::{DisconnectCode, ErrorCode, UnsubscribeCode};
pub use entity::{
    Audience, ENTITY_NAMESPACE, EntityAction, EntityChannel, EntityError, EntityEvent, EntityScope,
    entity_channels,
};
pub use fanout::channel_idempotency_key;
pub use filter::{Filter, FilterError, FilterNode};
pub use fossil::{DeltaError, DeltaType, UnknownDeltaType};
pub use frame::{Encoding, FrameError, FrameWriter, WireMessage, decode_commands, decode_replies};
pub use json::{RawJson, RawJsonError};
pub use position::{HistoryLimit, Position, Step};
pub use types::*;
