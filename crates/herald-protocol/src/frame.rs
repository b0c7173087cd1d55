//! Framing: one WebSocket text frame carries one or more JSON objects separated by `\n`;
//! one binary frame carries one or more length-delimited Protobuf messages.
//!
//! This is the only place Herald turns JSON frame text into messages, and, with
//! [`crate::protobuf`] for binary frames, messages into frame bytes. Decoding never
//! panics: every malformed input is a [`FrameError`].

use crate::{Command, Reply};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A frame, or one line of it, that is not valid protocol JSON.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A line is not a JSON object of the expected shape.
    #[error("line {line} of the frame is not a valid message: {source}")]
    Json {
        /// The 1-based line number within the frame.
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A line is valid JSON but not an object (serde would accept an array as a struct).
    #[error("line {line} of the frame is not a JSON object")]
    NotObject {
        /// The 1-based line number within the frame.
        line: usize,
    },
    /// The frame holds no message at all.
    #[error("empty frame")]
    Empty,
}

fn decode_lines<T: DeserializeOwned>(frame: &str) -> Result<Vec<T>, FrameError> {
    // A single trailing newline is allowed; blank lines elsewhere carry nothing.
    let mut out = Vec::with_capacity(1);
    for (i, line) in frame.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if !trimmed.starts_with('{') {
            return Err(FrameError::NotObject { line: i + 1 });
        }
        let msg = serde_json::from_str(line).map_err(|source| FrameError::Json {
            line: i + 1,
            source,
        })?;
        out.push(msg);
    }
    if out.is_empty() {
        return Err(FrameError::Empty);
    }
    Ok(out)
}

/// Decodes the commands of one client frame, in order.
pub fn decode_commands(frame: &str) -> Result<Vec<Command>, FrameError> {
    decode_lines(frame)
}

/// Decodes the replies, pushes and pings of one server frame, in order.
pub fn decode_replies(frame: &str) -> Result<Vec<Reply>, FrameError> {
    decode_lines(frame)
}

/// How a connection's messages are encoded on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON objects in text frames, `\n`-separated.
    #[default]
    Json,
    /// Length-delimited Protobuf messages in binary frames.
    Protobuf,
}

impl Encoding {
    /// The name used in logs and metrics: `json` or `protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }
}

/// A message that can be written in either encoding: [`Command`] and [`Reply`].
pub trait WireMessage: Serialize {
    /// The message's Protobuf encoding, without its length prefix.
    fn to_protobuf(&self) -> Bytes;
}

impl WireMessage for Command {
    fn to_protobuf(&self) -> Bytes {
        crate::protobuf::encode_command(self)
    }
}

impl WireMessage for Reply {
    fn to_protobuf(&self) -> Bytes {
        crate::protobuf::encode_reply(self)
    }
}

/// Builds one frame from several messages: newline-separated JSON, or length-delimited
/// Protobuf.
///
/// Pre-encoded messages (a publication push encoded once per node and shared by every
/// subscriber) are appended with [`FrameWriter::push_encoded`] without re-encoding.
#[derive(Debug, Default)]
pub struct FrameWriter {
    buf: BytesMut,
    count: usize,
    /// The allocation kept between frames; a larger one leaves with its frame.
    keep: usize,
    encoding: Encoding,
}

impl FrameWriter {
    /// An empty JSON writer with room for `capacity` bytes, the size it returns to after
    /// a larger frame.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::new(Encoding::Json, capacity)
    }

    /// An empty writer for `encoding` with room for `capacity` bytes, the size it
    /// returns to after a larger frame.
    pub fn new(encoding: Encoding, capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            count: 0,
            keep: capacity,
            encoding,
        }
    }

    /// The writer's encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Appends one message in the writer's encoding. Only JSON encoding can fail.
    pub fn push<T: WireMessage>(&mut self, msg: &T) -> Result<(), serde_json::Error> {
        if self.encoding == Encoding::Protobuf {
            self.push_encoded(&msg.to_protobuf());
            return Ok(());
        }
        self.separate();
        let mark = self.buf.len();
        if let Err(e) = serde_json::to_writer((&mut self.buf).writer(), msg) {
            self.buf
                .truncate(mark.saturating_sub(usize::from(self.count > 0)));
            return Err(e);
        }
        self.count += 1;
        Ok(())
    }

    /// Appends one message already encoded in the writer's encoding: a JSON object
    /// (which must not contain a raw `\n`; JSON encoders escape newlines inside strings,
    /// so encoded JSON never does), or a Protobuf message without its length prefix.
    pub fn push_encoded(&mut self, encoded: &[u8]) {
        match self.encoding {
            Encoding::Json => {
                self.separate();
                self.buf.extend_from_slice(encoded);
            }
            Encoding::Protobuf => crate::protobuf::put_delimited(&mut self.buf, encoded),
        }
        self.count += 1;
    }

    fn separate(&mut self) {
        if self.count > 0 {
            self.buf.put_u8(b'\n');
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Messages written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Takes the frame, leaving the writer empty. The writer keeps its allocation only
    /// while it is no larger than its initial capacity: a frame that outgrew it takes
    /// the whole allocation along and frees it once written, so a burst does not pin a
    /// large buffer for the rest of a connection's life.
    pub fn take(&mut self) -> Bytes {
        self.count = 0;
        if self.buf.capacity() > self.keep {
            std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.keep)).freeze()
        } else {
            self.buf.split().freeze()
        }
    }

    /// The bytes allocated for the frame being built.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Encodes one message as a standalone JSON object.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(msg).map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Push, Request};

    #[test]
    fn splits_batched_commands_and_allows_one_trailing_newline() {
        let cmds = decode_commands(
            "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n",
        )
        .expect("valid");
        assert_eq!(cmds.len(), 2);
        assert!(matches!(cmds[0].request(), Ok(Request::Connect(_))));
        match cmds[1].request() {
            Ok(Request::Subscribe(s)) => assert_eq!(s.channel, "a"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bare_object_is_a_pong() {
        let cmds = decode_commands("{}").expect("valid");
        assert_eq!(cmds[0].request(), Ok(Request::Pong));
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "",
            "\n",
            "{",
            "[]",
            "null",
            "{\"id\":-1}",
            "{\"id\":1,\"subscribe\":{\"channel\":5}}",
            "{\"id\":1}\n{oops}",
            "{\"id\":4294967296,\"connect\":{}}",
        ] {
            assert!(decode_commands(bad).is_err(), "{bad:?} decoded");
        }
        match decode_commands("{\"id\":1}\n{oops}") {
            Err(FrameError::Json { line, .. }) => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_and_double_methods() {
        let cmds = decode_commands("{\"id\":7,\"frobnicate\":{}}").expect("valid json");
        assert_eq!(cmds[0].request(), Err(crate::CommandError::UnknownMethod));
        let cmds = decode_commands("{\"id\":7,\"presence\":{},\"history\":{}}").expect("json");
        assert_eq!(cmds[0].request(), Err(crate::CommandError::SeveralMethods));
    }

    #[test]
    fn writer_hands_a_grown_buffer_over_with_its_frame() {
        let mut w = FrameWriter::with_capacity(64);
        let big = vec![b'x'; 5000];
        w.push_encoded(&big);
        assert!(w.capacity() >= 5000);
        let frame = w.take();
        assert_eq!(frame.len(), 5000);
        assert_eq!(w.capacity(), 64, "the burst's buffer left with its frame");
        drop(frame);
        // Small frames keep reusing the initial allocation.
        for _ in 0..3 {
            w.push_encoded(b"{}");
            assert_eq!(&w.take()[..], b"{}");
            assert!(w.capacity() <= 64);
        }
    }

    #[test]
    fn a_protobuf_writer_length_delimits_each_message() {
        let mut w = FrameWriter::new(Encoding::Protobuf, 64);
        w.push(&Reply::default()).expect("encode");
        w.push(&Reply::error(3, ErrorCode::BadRequest.to_error()))
            .expect("encode");
        w.push_encoded(b"");
        assert_eq!(w.count(), 3);
        let frame = w.take();
        assert_eq!(frame[0], 0, "a ping is the single byte 0");
        let replies = crate::protobuf::decode_replies(&frame).expect("decode");
        assert!(replies[0].is_ping());
        assert_eq!(
            replies[1],
            Reply::error(3, ErrorCode::BadRequest.to_error())
        );
        assert!(replies[2].is_ping());
    }

    #[test]
    fn writer_joins_with_newlines() {
        let mut w = FrameWriter::with_capacity(64);
        assert!(w.is_empty());
        w.push(&Reply::default()).expect("encode");
        w.push_encoded(br#"{"push":{"channel":"c"}}"#);
        w.push(&Reply::error(3, ErrorCode::BadRequest.to_error()))
            .expect("encode");
        assert_eq!(w.count(), 3);
        let frame = w.take();
        assert_eq!(
            std::str::from_utf8(&frame).expect("utf8"),
            "{}\n{\"push\":{\"channel\":\"c\"}}\n{\"id\":3,\"error\":{\"code\":107,\"message\":\"bad request\"}}"
        );
        assert!(w.is_empty());
        let replies = decode_replies(std::str::from_utf8(&frame).expect("utf8")).expect("decode");
        assert!(replies[0].is_ping());
        assert_eq!(
            replies[1].push,
            Some(Push {
                channel: "c".into(),
                ..Push::default()
            })
        );
    }
}
