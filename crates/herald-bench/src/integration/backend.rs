//! The application backend the proxy hooks call, inside the bench: a minimal HTTP/1.1
//! server with keep-alive that reads each request's head and its body (by
//! `Content-Length`) and answers `200` with a fixed JSON body per path.

use anyhow::Context as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The connect hook's answer.
const CONNECT: &str = r#"{"result":{"user":"u1"}}"#;
/// The subscribe hook's answer.
const SUBSCRIBE: &str = r#"{"result":{}}"#;

/// Calls answered, per hook, and requests that were not understood.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pub connect: AtomicU64,
    pub subscribe: AtomicU64,
    pub other: AtomicU64,
}

/// Listens on 127.0.0.1:`port` and serves until the returned task is aborted.
pub(super) async fn start(
    port: u16,
    calls: Arc<Calls>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("the hook backend cannot listen on {port}"))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let _ = serve(stream, &calls).await;
            });
        }
    }))
}

/// Answers the requests of one connection until it closes.
async fn serve(mut stream: TcpStream, calls: &Calls) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            buf.reserve(4096);
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])?;
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().parse())
            .transpose()?
            .unwrap_or(0);
        // The body, read and dropped.
        while buf.len() < head_end + length {
            buf.reserve(head_end + length - buf.len());
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..head_end + length);
        let (status, body) = match path.as_str() {
            "/connect" => {
                calls.connect.fetch_add(1, Ordering::Relaxed);
                ("200 OK", CONNECT)
            }
            "/subscribe" => {
                calls.subscribe.fetch_add(1, Ordering::Relaxed);
                ("200 OK", SUBSCRIBE)
            }
            _ => {
                calls.other.fetch_add(1, Ordering::Relaxed);
                ("404 Not Found", "{}")
            }
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}
