//! A minimal WebSocket client for `integration`: the upgrade, masked text frames out,
//! and frames read in place from one buffer, so that ten thousand subscribers in one
//! thread cost the bench little next to the server it measures.

use anyhow::{Context as _, bail};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Text (and continuation) frames' opcodes.
pub(super) const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
/// A close frame's opcode.
pub(super) const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One client connection after the upgrade.
pub(super) struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where the unread bytes in `buf` start.
    at: usize,
}

/// A received frame: its opcode and payload (borrowed from the connection's buffer).
pub(super) struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// The close code of a close frame (1005 when it carries none).
    pub(super) fn close_code(&self) -> u16 {
        match self.payload {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 1005,
        }
    }
}

impl Ws {
    /// Connects from `source` to `addr` and upgrades on `/connection/websocket`.
    pub(super) async fn open(addr: SocketAddr, source: IpAddr) -> anyhow::Result<Self> {
        let socket = herald_client::local_socket(source)
            .with_context(|| format!("binding a socket to {source}"))?;
        let mut stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} from {source}"))?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        let end = loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("closed during the WebSocket upgrade");
            }
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                bail!("the upgrade answer has no end of headers");
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            bail!(
                "WebSocket upgrade refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        Ok(Self {
            stream,
            buf,
            at: end,
        })
    }

    /// Sends one masked text frame.
    pub(super) async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(TEXT, text.as_bytes()).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next frame; pings are answered here and not returned. `Err` when the socket
    /// ends or a frame is malformed.
    pub(super) async fn next_frame(&mut self) -> anyhow::Result<Frame<'_>> {
        loop {
            let (opcode, start, end) = loop {
                if let Some(found) = parse(&self.buf[self.at..]) {
                    break found;
                }
                // Keep what is unread at the front, then read more.
                if self.at > 0 {
                    self.buf.drain(..self.at);
                    self.at = 0;
                }
                // Read into spare capacity (never zeroed): a frame larger than that
                // grows the buffer a read at a time.
                if self.buf.capacity() - self.buf.len() < 1024 {
                    self.buf.reserve(4096);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("the server closed the socket");
                }
            };
            let (start, end) = (self.at + start, self.at + end);
            self.at = end;
            if opcode == PING {
                let payload = self.buf[start..end].to_vec();
                self.send(PONG, &payload).await?;
                continue;
            }
            return Ok(Frame {
                opcode: if opcode == CONTINUATION { TEXT } else { opcode },
                payload: &self.buf[start..end],
            });
        }
    }

    /// The reply with `id`, its JSON line; protocol pings (`{}`) are answered and
    /// publications skipped on the way.
    pub(super) async fn reply(&mut self, id: u64) -> anyhow::Result<serde_json::Value> {
        loop {
            let frame = self.next_frame().await?;
            if frame.opcode == CLOSE {
                bail!("closed by the server with code {}", frame.close_code());
            }
            if frame.opcode != TEXT {
                continue;
            }
            let text = std::str::from_utf8(frame.payload)?.to_owned();
            for line in text.lines() {
                if line == "{}" {
                    self.send_text("{}").await?;
                    continue;
                }
                let reply: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("not a JSON reply: {line}"))?;
                if reply.get("id").and_then(serde_json::Value::as_u64) == Some(id) {
                    return Ok(reply);
                }
            }
        }
    }

    /// Sends `command` (holding `"id":id`) and returns its reply, failing on an error
    /// reply.
    pub(super) async fn call(&mut self, id: u64, command: &str) -> anyhow::Result<()> {
        self.send_text(command).await?;
        let reply = self.reply(id).await?;
        if let Some(e) = reply.get("error") {
            bail!("{command} answered with error {e}");
        }
        Ok(())
    }

    /// Sends a protocol pong (`{}`), the answer to a server ping.
    pub(super) async fn pong(&mut self) -> anyhow::Result<()> {
        self.send_text("{}").await
    }
}

/// The first whole frame in `buf`: (opcode, payload start, payload end), or `None` if
/// more bytes are needed. Server frames are never masked.
fn parse(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let [b0, b1, rest @ ..] = buf else {
        return None;
    };
    let opcode = b0 & 0x0f;
    let (len, header) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize,
            4,
        ),
        127 => {
            let bytes: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        n => (n as usize, 2),
    };
    (buf.len() >= header + len).then_some((opcode, header, header + len))
}

/// How many publications a text frame holds (each is a `"pub":` push).
pub(super) fn publications(payload: &[u8]) -> u64 {
    payload.windows(6).filter(|w| *w == b"\"pub\":").count() as u64
}

/// Whether a text frame holds a protocol ping (an empty reply line).
pub(super) fn has_ping(payload: &[u8]) -> bool {
    payload.split(|b| *b == b'\n').any(|l| l == b"{}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_of_each_length_form() {
        assert_eq!(parse(&[0x81, 2, b'{', b'}']), Some((1, 2, 4)));
        assert_eq!(parse(&[0x81, 3, b'{', b'}']), None);
        let mut medium = vec![0x81, 126, 0x01, 0x00];
        medium.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(parse(&medium), Some((1, 4, 260)));
        assert_eq!(parse(&medium[..200]), None);
        assert_eq!(parse(&[0x88]), None);
    }

    #[test]
    fn counts_publications_and_pings() {
        let frame = b"{\"push\":{\"channel\":\"f:b\",\"pub\":{\"data\":{\"k\":1}}}}\n{}\n{\"push\":{\"channel\":\"f:b\",\"pub\":{\"data\":{\"k\":2}}}}";
        assert_eq!(publications(frame), 2);
        assert!(has_ping(frame));
        assert!(!has_ping(b"{\"id\":1,\"connect\":{}}"));
    }
}
