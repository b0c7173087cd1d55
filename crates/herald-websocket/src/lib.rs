//! Herald's WebSocket frame layer: RFC 6455 framing over an already upgraded connection,
//! with the permessage-deflate extension of RFC 7692.
//!
//! A node serves every HTTP/1.1 WebSocket through this layer, and offers the extension
//! when it allows compression (`client.websocket_compression`); WebSockets over HTTP/2
//! go through the HTTP library's own. A connection holds no read or write buffer
//! between messages.
//!
//! Compression is always without context takeover in both directions (the server says
//! `server_no_context_takeover; client_no_context_takeover` in its answer): every
//! message is compressed and decompressed on its own, so a connection keeps no deflate
//! state between messages. One compressor and one decompressor per thread serve every
//! connection of that thread, and a connection costs no more memory with compression
//! than without.
//!
//! - [`negotiate`] picks the answer to a client's `Sec-WebSocket-Extensions` offers.
//! - [`accept_key`] computes `Sec-WebSocket-Accept`.
//! - [`WebSocket`] is the connection: a [`Stream`](futures_util::Stream) of received
//!   [`Message`]s and a [`Sink`](futures_util::Sink) of messages to send. It answers pings
//!   and the peer's Close by itself.
//! - [`client`] is a small client handshake, for benchmarks and tests.

// Tests unwrap freely; the library itself never does (the build without tests checks).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
mod deflate;
mod frame;
mod socket;

pub use deflate::{Deflate, negotiate};
pub use socket::{Config, WebSocket};

use bytes::Bytes;

/// Which end of the connection this is: a server reads masked frames and writes
/// unmasked ones, a client the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The accepting end.
    Server,
    /// The connecting end.
    Client,
}

/// A whole message, as received or to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; always valid UTF-8 when received.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (answered by the layer itself when received).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A Close, with its code and reason if it had one.
    Close(Option<CloseFrame>),
}

/// The code and reason of a Close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The reason; at most 123 bytes go on the wire (cut at a character boundary).
    pub reason: String,
}

/// Why reading from or writing to a [`WebSocket`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer broke the framing rules (the answer is Close 1002).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or a Close reason that is not UTF-8 (the answer is Close 1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    Utf8,
    /// A compressed message that does not inflate (the answer is Close 1007).
    #[error("a compressed message is not valid deflate data")]
    Inflate,
    /// A frame or message over the configured limit (the answer is Close 1009).
    #[error("message larger than the limit of {0} bytes")]
    TooBig(usize),
    /// A message sent after this end sent its Close.
    #[error("the connection is closing")]
    Closing,
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether a close code may be sent by an endpoint (RFC 6455 7.4, and the IANA
/// registry's 1012–1014): 1000–1003, 1007–1014 and 3000–4999.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut hash = Sha1::new();
    hash.update(key);
    hash.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!valid_close_code(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod socket_tests;
