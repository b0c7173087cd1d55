//! Readers for the HTTP transports' streaming responses, message by message: one JSON
//! object per line (HTTP-streaming) or per `data:` event (server-sent events), and the
//! `/emulation` POSTs that carry an emulated session's commands.

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
                    // The stream opens with a bare `\r\n`; events have only `data:` lines.
                    Framing::Events => match line.strip_prefix("data: ") {
                        Some(data) => data,
                        None => {
                            assert!(line.is_empty(), "unexpected event line {line:?}");
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

/// `POST /emulation` with a JSON body as is; returns the status.
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
        .expect("emulation POST")
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
