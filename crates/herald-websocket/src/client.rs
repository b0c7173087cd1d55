//! The client side of the opening handshake, for Herald's benchmarks and tests: a
//! WebSocket client that can negotiate permessage-deflate, which the usual Rust client
//! libraries cannot.

use crate::socket::{Config, WebSocket};
use crate::{Deflate, Error, Role, accept_key, deflate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most a handshake answer may take.
const MAX_ANSWER: usize = 16 * 1024;

/// What the client offers, and what it got.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `Host` header value.
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Offer permessage-deflate (without context takeover both ways), compressing what
    /// the client sends with these settings if accepted.
    pub deflate: Option<Deflate>,
    /// Further header lines, without line ends.
    pub headers: &'a [String],
    /// The largest message accepted.
    pub max_message: usize,
}

/// Performs the opening handshake on `io`, a connected stream. The socket compresses
/// only when the server accepted the offer ([`WebSocket::compressed`]).
pub async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    request: &Request<'_>,
) -> Result<WebSocket<T>, Error> {
    use base64::Engine;
    let nonce: [u8; 16] = std::array::from_fn(|i| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (t >> (i % 4 * 8)) as u8 ^ (i as u8).wrapping_mul(151)
    });
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut text = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        request.path, request.host
    );
    if request.deflate.is_some() {
        text.push_str("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n");
    }
    for line in request.headers {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    io.write_all(text.as_bytes()).await?;

    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_ANSWER {
            return Err(Error::Protocol("handshake answer too long"));
        }
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Protocol("connection closed during the handshake"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Error::Utf8)?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("101") {
        return Err(Error::Protocol("the server did not switch protocols"));
    }
    let mut accepted = false;
    let mut compressed = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accepted = value == accept_key(key.as_bytes());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if request.deflate.is_none() || !deflate::answer_usable(value) {
                return Err(Error::Protocol(
                    "an extension the client did not offer or cannot use",
                ));
            }
            compressed = true;
        }
    }
    if !accepted {
        return Err(Error::Protocol("wrong Sec-WebSocket-Accept"));
    }
    let config = Config {
        role: Role::Client,
        max_message: request.max_message,
        read_buffer: 4096,
        write_buffer: 4096,
        deflate: if compressed { request.deflate } else { None },
    };
    Ok(WebSocket::new(io, config, &buf[end..]))
}
