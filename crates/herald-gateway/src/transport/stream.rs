//! The connection task's socket for the HTTP transports: commands come from a queue (the
//! opening request's body, then commands posted to `/emulation`), and each frame the
//! task writes becomes a chunk of a streaming response body in the transport's format.

use super::uni::{self, UniLine};
use axum::extract::ws::Message;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use herald_protocol::{Disconnect, Push, Reply};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// How frames are written into the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Each reply followed by `\n` (HTTP-streaming, bidirectional).
    Lines,
    /// Each reply as one server-sent event (SSE, bidirectional).
    Events,
    /// Each push, unwrapped, followed by `\n` (unidirectional HTTP-streaming).
    UniLines,
    /// Each push, unwrapped, as one server-sent event (unidirectional SSE).
    UniEvents,
}

impl Format {
    fn unidirectional(self) -> bool {
        matches!(self, Format::UniLines | Format::UniEvents)
    }

    /// Whether frames go out as server-sent events.
    pub(crate) fn events(self) -> bool {
        matches!(self, Format::Events | Format::UniEvents)
    }

    fn put(self, out: &mut BytesMut, message: &[u8]) {
        if self.events() {
            out.put_slice(b"data: ");
            out.put_slice(message);
            out.put_slice(b"\n\n");
        } else {
            out.put_slice(message);
            out.put_u8(b'\n');
        }
    }
}

/// The response body was dropped, or the stream has ended.
#[derive(Debug, thiserror::Error)]
#[error("the response stream is closed")]
pub(crate) struct StreamClosed;

/// A [`crate::connection::Socket`] over a command queue and a response body.
pub(crate) struct StreamSocket {
    inbound: mpsc::Receiver<String>,
    /// Held by unidirectional sockets, whose queue gets nothing after the connect
    /// request and must not read as closed.
    _keep_open: Option<mpsc::Sender<String>>,
    out: PollSender<Bytes>,
    format: Format,
    /// Resolves when the response body is dropped: the client went away.
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The stream has ended (a close was written, or a unidirectional connect failed).
    ended: bool,
    /// The positions written as event ids (unidirectional SSE).
    tracker: Option<super::resume::Tracker>,
}

impl StreamSocket {
    /// A socket reading `inbound` and writing frames in `format` to `out`.
    pub(crate) fn new(
        inbound: mpsc::Receiver<String>,
        keep_open: Option<mpsc::Sender<String>>,
        out: mpsc::Sender<Bytes>,
        format: Format,
    ) -> Self {
        let watch = out.clone();
        Self {
            inbound,
            _keep_open: keep_open,
            out: PollSender::new(out),
            format,
            gone: Box::pin(async move { watch.closed().await }),
            ended: false,
            tracker: (format == Format::UniEvents).then(super::resume::Tracker::default),
        }
    }

    /// Encodes one frame (replies separated by `\n`) for the body.
    fn encode_frame(&mut self, frame: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(frame.len() + 16);
        for line in frame.split('\n') {
            if self.format.unidirectional() {
                match uni::convert(line) {
                    UniLine::Send(message) => {
                        if let Some(id) = self.tracker.as_mut().and_then(|t| t.observe(&message)) {
                            // The browser sends the last id back when it reconnects.
                            out.put_slice(b"id: ");
                            out.put_slice(id.as_bytes());
                            out.put_u8(b'\n');
                        }
                        self.format.put(&mut out, message.as_bytes());
                    }
                    UniLine::Skip => {}
                    UniLine::End(disconnect, _) => {
                        self.format.put(&mut out, disconnect.as_bytes());
                        self.ended = true;
                        break;
                    }
                }
            } else {
                self.format.put(&mut out, line.as_bytes());
            }
        }
        out.freeze()
    }

    /// Encodes the close: a disconnect push, as the stream's last message.
    fn encode_close(&self, code: u16, reason: &str) -> Bytes {
        let disconnect = Disconnect {
            code: u32::from(code),
            reason: reason.to_owned(),
        };
        let text = if self.format.unidirectional() {
            uni::disconnect(&disconnect)
        } else {
            let push = Reply::push(Push {
                disconnect: Some(disconnect),
                ..Push::default()
            });
            serde_json::to_string(&push).unwrap_or_default()
        };
        let mut out = BytesMut::with_capacity(text.len() + 8);
        self.format.put(&mut out, text.as_bytes());
        out.freeze()
    }
}

impl Stream for StreamSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended || self.gone.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match self.inbound.poll_recv(cx) {
            Poll::Ready(Some(text)) => Poll::Ready(Some(Ok(Message::Text(text.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Sink<Message> for StreamSocket {
    type Error = StreamClosed;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamClosed>> {
        if self.ended {
            return Poll::Ready(Err(StreamClosed));
        }
        self.out.poll_reserve(cx).map_err(|_| StreamClosed)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), StreamClosed> {
        let chunk = match item {
            Message::Text(text) => self.encode_frame(text.as_str()),
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((3000, String::new()), |f| {
                    (f.code, f.reason.as_str().to_owned())
                });
                self.ended = true;
                self.encode_close(code, &reason)
            }
            _ => Bytes::new(),
        };
        if chunk.is_empty() {
            self.out.abort_send();
            return Ok(());
        }
        self.out.send_item(chunk).map_err(|_| StreamClosed)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), StreamClosed>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamClosed>> {
        self.ended = true;
        self.out.close();
        Poll::Ready(Ok(()))
    }
}
