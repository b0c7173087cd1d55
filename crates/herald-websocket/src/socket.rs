//! The connection: frames read into whole messages (unmasked, reassembled, inflated and
//! checked), messages written as frames (compressed when negotiated), pings and the
//! peer's Close answered on the way.

use crate::frame::{self, BINARY, CLOSE, CONTINUATION, Header, PING, PONG, TEXT};
use crate::{CloseFrame, Deflate, Error, Message, Role, deflate, valid_close_code};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest read between messages, made on the stack (at most `read_buffer` of it is
/// used; a frame longer than what one read brings is read on into the heap buffer).
pub(crate) const SCRATCH_BYTES: usize = 4096;

/// How a [`WebSocket`] behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which end this is.
    pub role: Role,
    /// The largest frame, and the largest message after reassembly and decompression.
    pub max_message: usize,
    /// The most one read takes (at most 4 KiB between messages), and how much
    /// the read buffer grows by at a time while a frame is partly read. Between messages
    /// a connection holds no read buffer.
    pub read_buffer: usize,
    /// Queued bytes past which a send first writes what is queued.
    pub write_buffer: usize,
    /// Set when permessage-deflate was negotiated.
    pub deflate: Option<Deflate>,
}

/// A message whose final frame has not arrived yet.
#[derive(Debug)]
struct Partial {
    opcode: u8,
    compressed: bool,
    data: BytesMut,
    /// How much of an uncompressed text message is known to be valid UTF-8 (so that an
    /// invalid sequence fails at once, not at the final frame).
    checked: usize,
}

/// A WebSocket connection over `T`, an upgraded HTTP connection.
#[derive(Debug)]
pub struct WebSocket<T> {
    io: T,
    config: Config,
    rd: BytesMut,
    wr: BytesMut,
    partial: Option<Partial>,
    close_sent: bool,
    /// The peer's Close arrived, or reading failed or ended: nothing more is read.
    read_done: bool,
    /// State of the masks a client puts on its frames.
    mask_state: u64,
}

impl<T> WebSocket<T> {
    /// Wraps an upgraded connection; `leftover` is whatever was read past the handshake.
    pub fn new(io: T, config: Config, leftover: &[u8]) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
            | 1;
        WebSocket {
            io,
            config,
            rd: BytesMut::from(leftover),
            wr: BytesMut::new(),
            partial: None,
            close_sent: false,
            read_done: false,
            mask_state: seed,
        }
    }

    /// Whether permessage-deflate is on for this connection.
    pub fn compressed(&self) -> bool {
        self.config.deflate.is_some()
    }

    /// Bytes queued to write, and the write buffer's capacity (for tests).
    #[cfg(test)]
    pub(crate) fn write_buffer(&self) -> (usize, usize) {
        (self.wr.len(), self.wr.capacity())
    }

    /// Bytes read and not yet taken, and the read buffer's capacity (for tests).
    #[cfg(test)]
    pub(crate) fn read_buffer(&self) -> (usize, usize) {
        (self.rd.len(), self.rd.capacity())
    }

    /// The next whole frame in the read buffer, unmasked.
    fn next_frame(&mut self) -> Result<Option<(Header, BytesMut)>, Error> {
        let Some(header) = frame::parse(&self.rd, self.config.max_message)? else {
            return Ok(None);
        };
        match (self.config.role, header.mask) {
            (Role::Server, None) => return Err(Error::Protocol("unmasked frame from a client")),
            (Role::Client, Some(_)) => return Err(Error::Protocol("masked frame from a server")),
            _ => {}
        }
        let total = header.header_len + header.payload_len;
        if self.rd.len() < total {
            self.rd.reserve(total - self.rd.len());
            return Ok(None);
        }
        let mut payload = self.rd.split_to(total);
        payload.advance(header.header_len);
        if let Some(mask) = header.mask {
            frame::apply_mask(&mut payload, mask);
        }
        Ok(Some((header, payload)))
    }

    /// Handles one frame: a whole message when it completes one.
    fn on_frame(&mut self, header: Header, payload: BytesMut) -> Result<Option<Message>, Error> {
        if header.rsv1 {
            if self.config.deflate.is_none() {
                return Err(Error::Protocol("RSV1 set without permessage-deflate"));
            }
            if header.is_control() || header.opcode == CONTINUATION {
                return Err(Error::Protocol(
                    "RSV1 set on a control or continuation frame",
                ));
            }
        }
        match header.opcode {
            PING => {
                if !self.close_sent {
                    self.queue_frame(PONG, false, &payload);
                }
                Ok(None)
            }
            PONG => Ok(None),
            CLOSE => self.on_close(&payload).map(Some),
            TEXT | BINARY => {
                if self.partial.is_some() {
                    return Err(Error::Protocol(
                        "a new message before the final frame of the last one",
                    ));
                }
                if header.fin {
                    return self.complete(header.opcode, header.rsv1, payload).map(Some);
                }
                let mut partial = Partial {
                    opcode: header.opcode,
                    compressed: header.rsv1,
                    data: payload,
                    checked: 0,
                };
                check_prefix(&mut partial)?;
                self.partial = Some(partial);
                Ok(None)
            }
            _ => {
                let max = self.config.max_message;
                let Some(partial) = self.partial.as_mut() else {
                    return Err(Error::Protocol(
                        "a continuation frame with no message to continue",
                    ));
                };
                if partial.data.len() + payload.len() > max {
                    return Err(Error::TooBig(max));
                }
                partial.data.extend_from_slice(&payload);
                check_prefix(partial)?;
                if !header.fin {
                    return Ok(None);
                }
                let Some(partial) = self.partial.take() else {
                    return Ok(None);
                };
                self.complete(partial.opcode, partial.compressed, partial.data)
                    .map(Some)
            }
        }
    }

    /// A message whose final frame arrived: inflated and checked.
    fn complete(&self, opcode: u8, compressed: bool, data: BytesMut) -> Result<Message, Error> {
        let data = if compressed {
            let mut out = Vec::new();
            deflate::decompress(&data, self.config.max_message, &mut out)?;
            Bytes::from(out)
        } else {
            data.freeze()
        };
        if opcode == TEXT {
            std::str::from_utf8(&data).map_err(|_| Error::Utf8)?;
            Ok(Message::Text(data))
        } else {
            Ok(Message::Binary(data))
        }
    }

    /// The peer's Close: answered (its code echoed, 1002 for a code no endpoint may
    /// send, an empty Close for an empty one), and reading stops.
    fn on_close(&mut self, payload: &[u8]) -> Result<Message, Error> {
        self.read_done = true;
        let frame = match payload {
            [] => None,
            [_] => return Err(Error::Protocol("a Close frame with a one-byte payload")),
            [hi, lo, reason @ ..] => {
                let reason = std::str::from_utf8(reason).map_err(|_| Error::Utf8)?;
                Some(CloseFrame {
                    code: u16::from_be_bytes([*hi, *lo]),
                    reason: reason.to_owned(),
                })
            }
        };
        if !self.close_sent {
            self.close_sent = true;
            match &frame {
                None => self.queue_frame(CLOSE, false, &[]),
                Some(f) if valid_close_code(f.code) => self.queue_frame(CLOSE, false, payload),
                Some(_) => self.queue_frame(CLOSE, false, &1002u16.to_be_bytes()),
            }
        }
        Ok(Message::Close(frame))
    }

    /// Appends one frame to the write buffer, masked when this is a client.
    fn queue_frame(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) {
        let mask = match self.config.role {
            Role::Server => None,
            Role::Client => Some(self.next_mask()),
        };
        frame::write_header(&mut self.wr, true, rsv1, opcode, payload.len(), mask);
        let start = self.wr.len();
        self.wr.extend_from_slice(payload);
        if let Some(mask) = mask {
            frame::apply_mask(&mut self.wr[start..], mask);
        }
    }

    /// A client's next mask (xorshift: masks need not be secret from the client's own
    /// peer, only varied).
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_ne_bytes()
    }

    /// Queues a message as a frame.
    fn encode(&mut self, message: Message) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::Closing);
        }
        match message {
            Message::Text(data) => self.queue_data(TEXT, &data),
            Message::Binary(data) => self.queue_data(BINARY, &data),
            Message::Ping(data) | Message::Pong(data)
                if data.len() > frame::MAX_CONTROL_PAYLOAD =>
            {
                return Err(Error::Protocol("control frame longer than 125 bytes"));
            }
            Message::Ping(data) => self.queue_frame(PING, false, &data),
            Message::Pong(data) => self.queue_frame(PONG, false, &data),
            Message::Close(frame) => {
                self.close_sent = true;
                let mut payload = Vec::new();
                if let Some(frame) = frame {
                    payload.extend_from_slice(&frame.code.to_be_bytes());
                    let mut end = frame.reason.len().min(frame::MAX_CONTROL_PAYLOAD - 2);
                    while !frame.reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    payload.extend_from_slice(&frame.reason.as_bytes()[..end]);
                }
                self.queue_frame(CLOSE, false, &payload);
            }
        }
        Ok(())
    }

    /// A text or binary message, compressed when negotiated, long enough, and smaller
    /// for it.
    fn queue_data(&mut self, opcode: u8, data: &Bytes) {
        if let Some(deflate) = self.config.deflate
            && data.len() >= deflate.min_bytes
            && let Some(compressed) = deflate::compress_shared(data, deflate.level)
        {
            self.queue_frame(opcode, true, &compressed);
            return;
        }
        self.queue_frame(opcode, false, data);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> WebSocket<T> {
    /// Writes the whole write buffer.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.wr.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wr))?;
            if n == 0 {
                return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())));
            }
            self.wr.advance(n);
        }
        // An idle connection keeps no write buffer: the next frame allocates its own.
        self.wr = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Reads more of the peer's bytes into the read buffer. Between messages the buffer
    /// is empty and the read goes to a scratch buffer on the stack first, so that a
    /// connection waiting for its peer holds no read buffer at all; only what arrived
    /// is then copied to the heap.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if !self.rd.is_empty() {
            if self.rd.capacity() == self.rd.len() {
                self.rd.reserve(self.config.read_buffer.max(1));
            }
            return tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rd);
        }
        // Lets go of the last message's allocation (shared with its payload, which the
        // caller frees when done with it).
        self.rd = BytesMut::new();
        // No more at a time than the heap buffer would take: what one read brings bounds
        // the pongs it can queue past a full write buffer.
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH_BYTES];
        let take = self.config.read_buffer.clamp(1, SCRATCH_BYTES);
        let mut buf = ReadBuf::uninit(&mut scratch[..take]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.rd.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Message, Error>>> {
        self.read_done = true;
        self.partial = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<T> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.read_done {
                return Poll::Ready(None);
            }
            match this.next_frame() {
                Err(e) => return this.fail(e),
                Ok(Some((header, payload))) => match this.on_frame(header, payload) {
                    Err(e) => return this.fail(e),
                    Ok(Some(message)) => {
                        // A pong or a Close answer queued on the way goes out now, as
                        // far as the socket takes it without waiting.
                        if !this.wr.is_empty() {
                            let _ = this.poll_write_out(cx);
                        }
                        return Poll::Ready(Some(Ok(message)));
                    }
                    Ok(None) => continue,
                },
                Ok(None) => {}
            }
            // Pongs go out while waiting for more to read. A write that cannot finish
            // now wakes this task when it can. A peer that sends pings without reading
            // the pongs is not read from while a full write buffer waits, so that it
            // cannot make the server hold more than that.
            if !this.wr.is_empty() {
                match this.poll_write_out(cx) {
                    Poll::Ready(Err(e)) => return this.fail(e),
                    Poll::Pending if this.wr.len() >= this.config.write_buffer => {
                        return Poll::Pending;
                    }
                    _ => {}
                }
            }
            match ready!(this.poll_read_more(cx)) {
                // The peer went without a Close: the end of the stream.
                Ok(0) => {
                    this.read_done = true;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.wr.len() >= this.config.write_buffer {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().encode(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Poll::Ready(ready!(Pin::new(&mut this.io).poll_flush(cx)).map_err(Error::Io))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.encode(Message::Close(None))?;
        }
        ready!(this.poll_write_out(cx))?;
        Poll::Ready(ready!(Pin::new(&mut this.io).poll_shutdown(cx)).map_err(Error::Io))
    }
}

/// Checks the part of an uncompressed text message received so far: an invalid UTF-8
/// sequence fails now; one cut at the end of the frame waits for the next.
fn check_prefix(partial: &mut Partial) -> Result<(), Error> {
    if partial.opcode != TEXT || partial.compressed {
        return Ok(());
    }
    match std::str::from_utf8(&partial.data[partial.checked..]) {
        Ok(_) => partial.checked = partial.data.len(),
        Err(e) if e.error_len().is_some() => return Err(Error::Utf8),
        Err(e) => partial.checked += e.valid_up_to(),
    }
    Ok(())
}
