//! The Pusher protocol, as far as the Sockudo peer needs it: a subscriber that connects,
//! subscribes to one public channel and answers pings (its publications are read by the
//! lean reader), and a publisher that posts signed batches to the HTTP API.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::Digest;
use std::net::IpAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The most events one `batch_events` request carries (the Pusher API's limit).
pub(crate) const BATCH_MAX: usize = 10;

/// The name every benchmark publication is sent under.
const EVENT: &str = "pub";

/// Connects from `source_ip` to `url` (`ws://host:port/app/<key>?protocol=7`) and
/// subscribes to the public `channel`.
pub(crate) async fn connect(
    url: &str,
    source_ip: IpAddr,
    channel: &str,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let mut ws = crate::lean::open(url, source_ip).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut subscribed = false;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("not subscribed within 30 s")?
            .context("closed before subscribing")??;
        let Message::Text(text) = msg else { continue };
        let frame: Frame = serde_json::from_str(text.as_str())
            .with_context(|| format!("not a Pusher message: {}", text.as_str()))?;
        match frame.event.as_str() {
            "pusher:connection_established" if !subscribed => {
                let subscribe = serde_json::json!({
                    "event": "pusher:subscribe",
                    "data": { "channel": channel },
                });
                ws.send(Message::Text(subscribe.to_string().into())).await?;
                subscribed = true;
            }
            "pusher_internal:subscription_succeeded" => return Ok(ws),
            "pusher:error" | "pusher:subscription_error" => {
                bail!("{}: {}", frame.event, frame.data)
            }
            "pusher:ping" => ws.send(Message::Text(PONG.into())).await?,
            _ => {}
        }
    }
}

/// The answer to a server's `pusher:ping`.
pub(crate) const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// Whether a text frame is the server's ping.
pub(crate) fn is_ping(text: &str) -> bool {
    text.contains(r#""event":"pusher:ping""#)
}

#[derive(serde::Deserialize)]
struct Frame {
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

/// An application's credentials on a Pusher-protocol server.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: String,
    pub key: String,
    pub secret: String,
}

/// Publishes through the HTTP API of the server at `base` (`http://host:port`).
pub(crate) struct Publisher {
    http: reqwest::Client,
    base: String,
    app: App,
}

impl Publisher {
    pub(crate) fn new(base: &str, app: App) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            app,
        })
    }

    /// Waits until the server accepts a signed request (an empty batch); a wrong
    /// secret shows as the last refusal.
    pub(crate) async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let result = self.batch("bench-ready", &[]).await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sends `payloads` (JSON texts, at most [`BATCH_MAX`]) to `channel` as one
    /// `batch_events` request, in order.
    pub(crate) async fn batch(&self, channel: &str, payloads: &[String]) -> anyhow::Result<()> {
        let batch: Vec<serde_json::Value> = payloads
            .iter()
            .map(|data| serde_json::json!({ "name": EVENT, "channel": channel, "data": data }))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "batch": batch }))?;
        let path = format!("/apps/{}/batch_events", self.app.id);
        let query = signed_query(&self.app, "POST", &path, &body, crate::proto::now_us());
        let response = self
            .http
            .post(format!("{}{path}?{query}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("batch_events answered {status}: {text}");
        }
        Ok(())
    }
}

/// The query string of a signed API request: the Pusher scheme, an HMAC-SHA256 (hex)
/// under the app's secret of `METHOD\nPATH\nSORTED_QUERY`, with the body's MD5 (hex).
fn signed_query(app: &App, method: &str, path: &str, body: &[u8], now_us: u64) -> String {
    let body_md5 = hex(&md5::Md5::digest(body));
    // Already in key order, as the signature needs.
    let query = format!(
        "auth_key={}&auth_timestamp={}&auth_version=1.0&body_md5={body_md5}",
        app.key,
        now_us / 1_000_000
    );
    let to_sign = format!("{method}\n{path}\n{query}");
    #[allow(clippy::expect_used)] // HMAC takes a key of any length.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app.secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(to_sign.as_bytes());
    format!(
        "{query}&auth_signature={}",
        hex(&mac.finalize().into_bytes())
    )
}

/// `bytes` in lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_pusher_api_documents() {
        // The worked example of the Pusher HTTP API's authentication: key 278d425bdf160c739803,
        // secret 7ad3773142a6692b25b8, timestamp 1353088179, body {"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}.
        let app = App {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = signed_query(&app, "POST", "/apps/3/events", body, 1_353_088_179_000_000);
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn knows_a_ping() {
        assert!(is_ping(r#"{"event":"pusher:ping","data":{}}"#));
        assert!(!is_ping(
            r#"{"event":"pub","channel":"c","data":"{\"seq\":1}"}"#
        ));
    }
}
