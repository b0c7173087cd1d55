//! The HTTP transports from a test's side: readers for their streaming responses,
//! message by message (one JSON object per line for HTTP-streaming, per `data:` event
//! for server-sent events), the requests that open them on a node, and the `/emulation`
//! POSTs that carry an emulated session's commands.

use crate::Herald;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;

/// How long a reader waits for the next message by default.
pub const WAIT: Duration = Duration::from_secs(5);

/// How messages are framed in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON object per `\n`-terminated line.
    Lines,
    /// One JSON object per server-sent event (`data: <json>\n\n`).
    Events,
}

/// What the stream did next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A message (a ping is `{}`).
    Message(Value),
    /// The response ended.
    End,
}

/// An open streaming response.
#[derive(Debug)]
pub struct MessageStream {
    response: reqwest::Response,
    framing: Framing,
    buf: Vec<u8>,
    pending: VecDeque<Value>,
    ended: bool,
    /// Every message read so far, in order (for assertion messages).
    pub seen: Vec<Value>,
    /// The response's headers.
    pub headers: reqwest::header::HeaderMap,
}

/// A request answered with another status than 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The status.
    pub code: u16,
    /// The body's text.
    pub body: String,
}

impl MessageStream {
    /// Sends `request` and reads its 200 answer as a stream; any other status comes
    /// back as [`Status`].
    pub async fn open(
        request: reqwest::RequestBuilder,
        framing: Framing,
    ) -> Result<MessageStream, Status> {
        let response = request.send().await.expect("request sent");
        if response.status() != reqwest::StatusCode::OK {
            let code = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            return Err(Status { code, body });
        }
        let want = match framing {
            Framing::Lines => "application/json",
            Framing::Events => "text/event-stream",
        };
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with(want),
            "content type {content_type}, want {want}"
        );
        Ok(MessageStream {
            headers: response.headers().clone(),
            response,
            framing,
            buf: Vec::new(),
            pending: VecDeque::new(),
            ended: false,
            seen: Vec::new(),
        })
    }

    /// Moves every complete message of the buffer to `pending`.
    fn split(&mut self) {
        let separator: &[u8] = match self.framing {
            Framing::Lines => b"\n",
            Framing::Events => b"\n\n",
        };
        while let Some(at) = self
            .buf
            .windows(separator.len())
            .position(|w| w == separator)
        {
            let chunk: Vec<u8> = self.buf.drain(..at + separator.len()).collect();
            let text = String::from_utf8(chunk).expect("UTF-8 stream");
            for line in text.lines().map(str::trim) {
                let json = match self.framing {
                    Framing::Lines => line,
                    // The stream opens with a bare `\r\n`; events have `data:` lines,
                    // and on unidirectional SSE an `id:` (tests/tests/sse_resume.rs).
                    Framing::Events => match line.strip_prefix("data: ") {
                        Some(data) => data,
                        None => {
                            assert!(
                                line.is_empty() || line.starts_with("id: "),
                                "unexpected event line {line:?}"
                            );
                            continue;
                        }
                    },
                };
                if json.is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("message {json:?} is not JSON: {e}"));
                self.pending.push_back(value);
            }
        }
    }

    async fn read(&mut self) -> Next {
        loop {
            if let Some(v) = self.pending.pop_front() {
                self.seen.push(v.clone());
                return Next::Message(v);
            }
            if self.ended {
                return Next::End;
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    self.split();
                }
                Ok(None) | Err(_) => self.ended = true,
            }
        }
    }

    /// The next message or the end within `within`; `None` on timeout.
    pub async fn next_within(&mut self, within: Duration) -> Option<Next> {
        tokio::time::timeout(within, self.read()).await.ok()
    }

    /// The next message other than a ping, within [`WAIT`]; panics on the end or a
    /// timeout.
    pub async fn next(&mut self) -> Value {
        self.until(|_| true).await
    }

    /// The first message (not a ping) for which `pred` holds, within [`WAIT`].
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Ok(Next::Message(v)) if v == json!({}) => continue,
                Ok(Next::Message(v)) if pred(&v) => return v,
                Ok(Next::Message(_)) => continue,
                Ok(Next::End) => panic!("the stream ended; seen: {:?}", self.seen),
                Err(_) => panic!("nothing matching within {WAIT:?}; seen: {:?}", self.seen),
            }
        }
    }

    /// Reads to the end (within `within`) and returns the last message; panics if the
    /// stream is still open then.
    pub async fn last_before_end(&mut self, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = Value::Null;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Ok(Next::Message(v)) => last = v,
                Ok(Next::End) => return last,
                Err(_) => panic!(
                    "the stream did not end within {within:?}; seen: {:?}",
                    self.seen
                ),
            }
        }
    }
}

/// POSTs `body` as it is, with `content_type`, to `url` (an `/emulation` endpoint);
/// returns the status.
pub async fn post_raw(
    http: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> u16 {
    http.post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST sent")
        .status()
        .as_u16()
}

/// Posts `commands` (each a JSON command, joined with `\n`) for `session` of `node` to
/// the `/emulation` endpoint at `url`; returns the status.
pub async fn emulate(
    http: &reqwest::Client,
    url: &str,
    node: &str,
    session: &str,
    commands: &[Value],
) -> u16 {
    let data: Vec<String> = commands.iter().map(Value::to_string).collect();
    let body = json!({"node": node, "session": session, "data": data.join("\n")});
    post_raw(http, url, "application/json", body.to_string()).await
}

/// Opens `/connection/http_stream` with `body` as the request.
pub async fn open_http_stream(h: &Herald, body: &str) -> Result<MessageStream, Status> {
    let request = reqwest::Client::new()
        .post(h.url("/connection/http_stream"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    MessageStream::open(request, Framing::Lines).await
}

/// An emulated HTTP-streaming session of `user`; returns it with its connect result.
pub async fn http_stream_session(h: &Herald, user: &str) -> (MessageStream, Value) {
    let connect = json!({"id": 1, "connect": {"token": h.token(user)}}).to_string();
    let mut stream = open_http_stream(h, &connect).await.expect("200");
    let reply = stream.next().await;
    assert_eq!(reply["id"], 1, "{reply}");
    (stream, reply["connect"].clone())
}

/// `GET <path>?cf_connect=<request>` as server-sent events.
pub async fn open_events(
    h: &Herald,
    path: &str,
    request: Option<&str>,
) -> Result<MessageStream, Status> {
    let mut url = reqwest::Url::parse(&h.url(path)).expect("url");
    if let Some(r) = request {
        url.query_pairs_mut().append_pair("cf_connect", r);
    }
    MessageStream::open(reqwest::Client::new().get(url), Framing::Events).await
}

/// `POST /connection/uni_http_stream` with `request` as the body.
pub async fn open_uni_http_stream(h: &Herald, request: &str) -> Result<MessageStream, Status> {
    let post = reqwest::Client::new()
        .post(h.url("/connection/uni_http_stream"))
        .header("content-type", "application/json")
        .body(request.to_owned());
    MessageStream::open(post, Framing::Lines).await
}

/// The disconnect code of a stream's last message before it ends: `{"disconnect":…}`
/// (unidirectional) or `{"push":{"disconnect":…}}`.
pub async fn disconnect_code(stream: &mut MessageStream) -> u64 {
    let last = stream.last_before_end(Duration::from_secs(5)).await;
    let disconnect = last
        .get("push")
        .unwrap_or(&last)
        .get("disconnect")
        .unwrap_or_else(|| {
            panic!(
                "the last message is no disconnect: {last}; seen {:?}",
                stream.seen
            )
        });
    disconnect["code"].as_u64().expect("a code")
}

/// Opens a uni HTTP stream, retrying while the node answers 503 (full), up to `within`.
pub async fn open_when_free(h: &Herald, request: &str, within: Duration) -> MessageStream {
    let deadline = std::time::Instant::now() + within;
    loop {
        match open_uni_http_stream(h, request).await {
            Ok(s) => return s,
            Err(Status { code: 503, .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("no slot free within {within:?}: {other:?}"),
        }
    }
}
