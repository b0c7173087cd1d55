//! A connection that subscribes and then never reads again: the slow consumer of the
//! `slow` scenario. Its socket's receive buffer is kept small so the gateway's queue for
//! it fills in seconds rather than after megabytes of kernel buffering.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The receive buffer asked for (the kernel doubles it).
const RECV_BUFFER: u32 = 4096;

/// Connects, subscribes to `channel`, and returns the socket once subscribed.
pub(crate) async fn open(
    url: &str,
    source_ip: &str,
    channel: &str,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let request = url.into_client_request()?;
    let host = request.uri().host().context("url host")?.to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let remote = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .find(SocketAddr::is_ipv4)
        .context("no IPv4 address")?;
    let local: IpAddr = source_ip.parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(RECV_BUFFER)?;
    socket.bind(SocketAddr::new(local, 0))?;
    let stream = socket.connect(remote).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    if url.contains("/socket.io/") {
        socket_io_subscribe(&mut ws, channel).await?;
        return Ok(ws);
    }
    let commands = format!(
        "{{\"id\":1,\"connect\":{{\"name\":\"herald-bench-stalled\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":{}}}}}",
        serde_json::to_string(channel)?
    );
    ws.send(Message::Text(commands.into())).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no subscribe reply in 10 s")?
            .context("closed before subscribing")??;
        let Message::Text(text) = msg else { continue };
        for line in text.as_str().lines() {
            let reply: serde_json::Value = serde_json::from_str(line)?;
            if reply.get("id").and_then(serde_json::Value::as_u64) == Some(2) {
                if let Some(e) = reply.get("error") {
                    anyhow::bail!("subscribe failed: {e}");
                }
                return Ok(ws);
            }
        }
    }
}

/// The peer's handshake over Engine.IO v4: wait for the open packet, join the default
/// namespace, then emit `subscribe` with an acknowledgement and wait for it.
async fn socket_io_subscribe(
    ws: &mut WebSocketStream<TcpStream>,
    channel: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let next = async |ws: &mut WebSocketStream<TcpStream>| -> anyhow::Result<String> {
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .context("no Socket.IO handshake in 10 s")?
                .context("closed during the handshake")??;
            if let Message::Text(text) = msg {
                return Ok(text.as_str().to_owned());
            }
        }
    };
    while !next(ws).await?.starts_with('0') {}
    ws.send(Message::Text("40".into())).await?;
    while !next(ws).await?.starts_with("40") {}
    let emit = format!("421[\"subscribe\",{}]", serde_json::to_string(channel)?);
    ws.send(Message::Text(emit.into())).await?;
    loop {
        let packet = next(ws).await?;
        if packet == "2" {
            ws.send(Message::Text("3".into())).await?;
        } else if packet.starts_with("431") {
            return Ok(());
        }
    }
}
