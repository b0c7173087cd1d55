//! WebSocket at the byte level: a hand-built upgrade and hand-built frames over a plain
//! TCP stream, for the framing violations no WebSocket library will send, and for
//! checking what the server writes (its Close frame) and does (closes the TCP
//! connection) with nothing in between to tidy it up.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The masking key of every masked frame the builder makes (any key will do).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Frame opcodes (RFC 6455 section 5.2).
pub mod op {
    /// A continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A Close frame.
    pub const CLOSE: u8 = 0x8;
    /// A Ping frame.
    pub const PING: u8 = 0x9;
    /// A Pong frame.
    pub const PONG: u8 = 0xa;
}

/// One frame to send, built field by field; by default final, unreserved and masked.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl FrameBuilder {
    /// A final, masked frame with this opcode and payload.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> FrameBuilder {
        FrameBuilder {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
            payload: payload.into(),
        }
    }

    /// A text frame.
    pub fn text(payload: impl Into<Vec<u8>>) -> FrameBuilder {
        Self::new(op::TEXT, payload)
    }

    /// A Close frame with a code and reason.
    pub fn close(code: u16, reason: &[u8]) -> FrameBuilder {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        Self::new(op::CLOSE, payload)
    }

    /// Sets the FIN bit.
    pub fn fin(mut self, fin: bool) -> FrameBuilder {
        self.fin = fin;
        self
    }

    /// Sets the three reserved bits (RSV1 is 0b100).
    pub fn rsv(mut self, rsv: u8) -> FrameBuilder {
        self.rsv = rsv & 0b111;
        self
    }

    /// Sends the payload unmasked, which a client must never do.
    pub fn unmasked(mut self) -> FrameBuilder {
        self.masked = false;
        self
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push((u8::from(self.fin) << 7) | (self.rsv << 4) | (self.opcode & 0x0f));
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&MASK);
            out.extend(
                self.payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ MASK[i % 4]),
            );
        } else {
            out.extend_from_slice(&self.payload);
        }
        out
    }
}

/// One frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// The (unmasked) payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// For a Close frame: its code, `None` when it has none.
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket connection at the byte level.
#[derive(Debug)]
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Connects to `127.0.0.1:port` and upgrades `path` to a WebSocket.
    pub async fn open(port: u16, path: &str) -> Wire {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send upgrade");
        let mut wire = Wire {
            stream,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = wire.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&wire.buf[..end]).into_owned();
                wire.buf.drain(..end + 4);
                break head;
            }
            assert!(wire.fill(crate::raw::WAIT).await, "eof during the upgrade");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        wire
    }

    /// Writes bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: &FrameBuilder) {
        self.send_bytes(&frame.encode()).await;
    }

    /// Reads more bytes; false at the end of the stream (or on a reset).
    async fn fill(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("nothing from the server within {within:?}"),
            Ok(Ok(0) | Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame, or `None` when the server closed the TCP connection first.
    pub async fn frame(&mut self, within: Duration) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill(within).await {
                assert!(self.buf.is_empty(), "eof inside a frame: {:?}", self.buf);
                return None;
            }
        }
    }

    /// Skips data frames up to the server's Close frame and returns it.
    pub async fn close_frame(&mut self) -> ServerFrame {
        loop {
            match self.frame(crate::raw::WAIT).await {
                Some(f) if f.opcode == op::CLOSE => return f,
                Some(_) => {}
                None => panic!("the server closed the connection without a Close frame"),
            }
        }
    }

    /// Writes bytes as they are; false when the connection refuses them (closed or reset).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// How the server ended the TCP connection within `within`: `Ok(())` for an orderly
    /// end (FIN) with no more bytes, `Err` describing anything else (a reset, more
    /// bytes, nothing at all).
    pub async fn orderly_end(&mut self, within: Duration) -> Result<(), String> {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) if self.buf.is_empty() => Ok(()),
            Ok(Ok(0)) => Err(format!("unread bytes before the end: {:?}", self.buf)),
            Ok(Ok(n)) => Err(format!("{n} more bytes after the Close frame")),
            Ok(Err(e)) => Err(format!("ended by an error: {e}")),
            Err(_) => Err(format!("still open after {within:?}")),
        }
    }

    /// Whether the server closes the TCP connection within `within`, sending no more
    /// frames (a reset counts as closed).
    pub async fn closed_by_server(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => self.buf.is_empty(),
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

/// One complete server frame at the start of `buf` and the bytes it took.
fn parse(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).ok()?;
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((
        ServerFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        },
        at,
    ))
}
