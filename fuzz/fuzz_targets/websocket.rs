//! Herald's WebSocket frame layer (`herald-websocket`) reading what a client sends.
//! Input: one flags byte (bit 0: permessage-deflate negotiated; bits 1–4: the size of
//! each read, 1 to 16 bytes, so that frames arrive in pieces), then the bytes from the
//! client. Every message read must respect the limit and be UTF-8 when it is text;
//! after an error nothing more is read; a panic is a bug. Each text message is then
//! sent back, through the compressor when negotiated.

#![no_main]

use futures_util::{SinkExt, StreamExt};
use herald_websocket::{Config, Deflate, Message, Role, WebSocket};
use libfuzzer_sys::fuzz_target;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MAX: usize = 4096;

/// The client's bytes, read `chunk` at a time; what the server writes is dropped.
struct Io<'a> {
    input: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Io<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.input.len()).min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let config = Config {
        role: Role::Server,
        max_message: MAX,
        read_buffer: 64,
        write_buffer: 256,
        deflate: (flags & 1 == 1).then(|| Deflate {
            level: 1,
            min_bytes: 16,
        }),
    };
    let io = Io {
        input,
        chunk: usize::from((flags >> 1) & 0x0F) + 1,
    };
    runtime().block_on(async {
        let mut socket = WebSocket::new(io, config, &[]);
        while let Some(item) = socket.next().await {
            match item {
                Ok(Message::Text(text)) => {
                    assert!(text.len() <= MAX);
                    assert!(std::str::from_utf8(&text).is_ok());
                    let _ = socket.send(Message::Text(text)).await;
                }
                Ok(Message::Binary(data)) => assert!(data.len() <= MAX),
                Ok(_) => {}
                Err(_) => {
                    assert!(
                        socket.next().await.is_none(),
                        "nothing is read after an error"
                    );
                    break;
                }
            }
        }
    });
});
