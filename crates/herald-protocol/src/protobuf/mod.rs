//! The Protobuf encoding of the client protocol: the byte↔message boundary for binary
//! WebSocket frames, beside [`crate::frame`] for JSON text frames.
//!
//! A frame holds one or more length-delimited messages: each an unsigned varint length,
//! then that many bytes of a Protobuf `Command` (client to server) or `Reply` (server to
//! client), as `proto/client.proto` describes. Decoding never panics: a malformed length
//! prefix, a length that runs past the frame, or bytes that are not a valid message are
//! a [`ProtobufError`]. Payloads (`data`, `info`) are JSON text in Herald; a command
//! whose payload is not JSON decodes to a [`NotJson`] so that the gateway can refuse
//! that command alone (error 107) and go on with the rest of the frame.

mod convert;
mod messages;

use crate::{Command, Publication, RawJsonError, Reply};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

pub use convert::NotJson;

/// The WebSocket subprotocol that selects the Protobuf encoding.
pub const SUBPROTOCOL: &str = "centrifuge-protobuf";

/// The longest varint a 64-bit length can take.
const MAX_VARINT_BYTES: usize = 10;

/// A binary frame that is not a sequence of valid length-delimited messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The frame holds no message at all.
    #[error("empty frame")]
    Empty,
    /// A length prefix is not a valid varint: it runs past the frame, or past ten bytes.
    #[error("message {index}: malformed length prefix")]
    BadLength {
        /// The 0-based position of the message in the frame.
        index: usize,
    },
    /// A length prefix declares more bytes than the frame has left.
    #[error("message {index}: length {declared} is beyond the {available} bytes left in the frame")]
    Truncated {
        /// The 0-based position of the message in the frame.
        index: usize,
        /// The length the prefix declared.
        declared: u64,
        /// The bytes left in the frame after the prefix.
        available: usize,
    },
    /// The message bytes are not a valid Protobuf message of the expected type.
    #[error("message {index} is not a valid Protobuf message")]
    Decode {
        /// The 0-based position of the message in the frame.
        index: usize,
        /// The decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A reply's payload is not JSON (only replies decoded by clients).
    #[error("message {index}: a payload is not valid JSON")]
    NotJson {
        /// The 0-based position of the message in the frame.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: RawJsonError,
    },
}

/// Splits a frame into its messages' bytes, in order.
fn split(mut frame: &[u8]) -> Result<Vec<&[u8]>, ProtobufError> {
    if frame.is_empty() {
        return Err(ProtobufError::Empty);
    }
    let mut out = Vec::with_capacity(1);
    while !frame.is_empty() {
        let index = out.len();
        let (declared, prefix) = read_varint(frame).ok_or(ProtobufError::BadLength { index })?;
        let rest = &frame[prefix..];
        let len = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or(ProtobufError::Truncated {
                index,
                declared,
                available: rest.len(),
            })?;
        let (message, tail) = rest.split_at(len);
        out.push(message);
        frame = tail;
    }
    Ok(out)
}

/// Reads an unsigned varint: its value and how many bytes it took, or `None` when the
/// bytes end inside it or it is longer than a 64-bit value can need.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(MAX_VARINT_BYTES).enumerate() {
        let bits = u64::from(b & 0x7f);
        // The tenth byte may carry only the top bit of a 64-bit value.
        if i == MAX_VARINT_BYTES - 1 && b > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `len` as an unsigned varint.
pub(crate) fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Decodes the commands of one client frame, in order. The frame as a whole is either
/// well-formed or an error; within it, each command whose payload is not JSON is a
/// [`NotJson`] in its place.
pub fn decode_commands(frame: &[u8]) -> Result<Vec<Result<Command, NotJson>>, ProtobufError> {
    split(frame)?
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            messages::Command::decode(bytes)
                .map(convert::command_in)
                .map_err(|source| ProtobufError::Decode { index, source })
        })
        .collect()
}

/// Decodes the replies, pushes and pings of one server frame, in order.
pub fn decode_replies(frame: &[u8]) -> Result<Vec<Reply>, ProtobufError> {
    split(frame)?
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            let reply = messages::Reply::decode(bytes)
                .map_err(|source| ProtobufError::Decode { index, source })?;
            convert::reply_in(reply).map_err(|source| ProtobufError::NotJson { index, source })
        })
        .collect()
}

/// Encodes one reply (without its length prefix).
pub fn encode_reply(reply: &Reply) -> Bytes {
    convert::reply_out(reply).encode_to_vec().into()
}

/// Encodes one command (without its length prefix).
pub fn encode_command(command: &Command) -> Bytes {
    convert::command_out(command).encode_to_vec().into()
}

/// Encodes a publication push (without its length prefix) from borrowed parts, as the
/// hub does once per publication for all of a node's Protobuf subscribers.
pub fn encode_publication_push(channel: &str, publication: &Publication) -> Bytes {
    convert::publication_push_out(channel, publication)
        .encode_to_vec()
        .into()
}

/// Appends one length-delimited message to `buf`.
pub(crate) fn put_delimited(buf: &mut BytesMut, message: &[u8]) {
    put_varint(buf, message.len() as u64);
    buf.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Request};

    fn delimited(messages: &[&[u8]]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for m in messages {
            put_delimited(&mut buf, m);
        }
        buf.to_vec()
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            assert_eq!(read_varint(&buf), Some((v, buf.len())), "{v}");
        }
        assert_eq!(read_varint(&[0x80]), None, "ends inside");
        assert_eq!(read_varint(&[0xff; 11]), None, "too long");
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }

    #[test]
    fn a_zero_byte_is_a_pong_and_an_empty_reply_a_ping() {
        let cmds = decode_commands(&[0]).expect("valid");
        assert_eq!(cmds.len(), 1);
        let cmd = cmds[0].as_ref().expect("no payload");
        assert_eq!(cmd.request(), Ok(Request::Pong));
        assert!(encode_reply(&Reply::default()).is_empty());
        let replies = decode_replies(&[0]).expect("valid");
        assert!(replies[0].is_ping());
    }

    #[test]
    fn several_commands_in_one_frame() {
        let connect = Command {
            id: 1,
            connect: Some(crate::ConnectRequest::default()),
            ..Command::default()
        };
        let subscribe = Command {
            id: 2,
            subscribe: Some(crate::SubscribeRequest {
                channel: "news".into(),
                ..crate::SubscribeRequest::default()
            }),
            ..Command::default()
        };
        let frame = delimited(&[&encode_command(&connect), &encode_command(&subscribe)]);
        let decoded: Vec<Command> = decode_commands(&frame)
            .expect("valid")
            .into_iter()
            .map(|c| c.expect("json"))
            .collect();
        assert_eq!(decoded, [connect, subscribe]);
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert!(matches!(decode_commands(&[]), Err(ProtobufError::Empty)));
        assert!(matches!(
            decode_commands(&[0x80]),
            Err(ProtobufError::BadLength { index: 0 })
        ));
        assert!(matches!(
            decode_commands(&[0, 5, 8]),
            Err(ProtobufError::Truncated {
                index: 1,
                declared: 5,
                available: 1
            })
        ));
        let mut huge = BytesMut::new();
        put_varint(&mut huge, u64::MAX);
        assert!(matches!(
            decode_commands(&huge),
            Err(ProtobufError::Truncated { index: 0, .. })
        ));
        // Field 1 as a length-delimited field: the wrong wire type for `id`.
        assert!(matches!(
            decode_commands(&[2, 0x0a, 0x00]),
            Err(ProtobufError::Decode { index: 0, .. })
        ));
        // A string field with invalid UTF-8.
        let bad_channel = [0x32, 0x03, 0x0a, 0x01, 0xff];
        assert!(matches!(
            decode_commands(&delimited(&[&bad_channel])),
            Err(ProtobufError::Decode { .. })
        ));
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused_alone() {
        let mut publish = messages::Command {
            id: 7,
            publish: Some(messages::PublishRequest {
                channel: "c".into(),
                data: b"\x00\x01binary".to_vec(),
                ..messages::PublishRequest::default()
            }),
            ..messages::Command::default()
        };
        let bad = publish.encode_to_vec();
        publish.id = 8;
        publish.publish.as_mut().expect("set").data = br#"{"ok":true}"#.to_vec();
        let good = publish.encode_to_vec();
        let decoded = decode_commands(&delimited(&[&bad, &good])).expect("frame is valid");
        match &decoded[0] {
            Err(NotJson {
                id: 7,
                field: "publish.data",
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let good = decoded[1].as_ref().expect("json");
        assert_eq!(
            good.publish
                .as_ref()
                .and_then(|p| p.data.as_ref())
                .map(|d| d.get()),
            Some(r#"{"ok":true}"#)
        );
    }

    #[test]
    fn unknown_fields_are_skipped_so_an_unknown_method_is_104() {
        // id 9 and field 11 (the ping request Herald does not implement).
        let cmd = decode_commands(&delimited(&[&[0x08, 0x09, 0x5a, 0x00]])).expect("valid");
        let cmd = cmd[0].as_ref().expect("json");
        assert_eq!(cmd.request(), Err(crate::CommandError::UnknownMethod));
        let _ = ErrorCode::MethodNotFound;
    }
}
