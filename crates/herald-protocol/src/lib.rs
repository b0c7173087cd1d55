//! Herald's wire protocol: the Centrifuge client protocol v2 in its JSON form.
//!
//! This crate is the leaf every other Herald crate builds on. It owns the wire types
//! ([`Command`], [`Reply`], [`Push`] and their payloads), the framing of several JSON
//! objects into one WebSocket text frame ([`frame`]), and the reply, disconnect and
//! unsubscribe codes ([`codes`]). It has no runtime: no tokio, no sockets, no Redis.

pub mod codes;
pub mod frame;
mod json;
mod types;

pub use codes::{DisconnectCode, ErrorCode, UnsubscribeCode};
pub use frame::{FrameError, FrameWriter, decode_commands, decode_replies};
pub use json::{RawJson, RawJsonError};
pub use types::*;
