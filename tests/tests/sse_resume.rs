//! The unidirectional SSE endpoint resumes a browser's own reconnect from `Last-Event-ID`,
//! and the streaming responses are gzipped, chunk by chunk, when the node allows it.

use herald_tests::Herald;
use serde_json::{Value, json};
use std::time::Duration;

/// One open streaming response, read as it arrives.
struct Stream {
    response: reqwest::Response,
    text: String,
    gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
}

impl Stream {
    async fn open(request: reqwest::RequestBuilder) -> Stream {
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), 200);
        let gzip = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip")
            .then(|| flate2::write::GzDecoder::new(Vec::new()));
        Stream {
            response,
            text: String::new(),
            gzip,
        }
    }

    /// The next server-sent event: its id (if any) and its data.
    async fn event(&mut self) -> (Option<String>, Value) {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("event data is JSON"));
                    }
                }
                if let Some(data) = data {
                    return (id, data);
                }
                continue;
            }
            self.more().await;
        }
    }

    /// The next line of an HTTP-streaming response.
    async fn line(&mut self) -> Value {
        loop {
            if let Some(end) = self.text.find('\n') {
                let line: String = self.text.drain(..=end).collect();
                return serde_json::from_str(line.trim()).expect("a JSON line");
            }
            self.more().await;
        }
    }

    async fn more(&mut self) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
            .await
            .expect("more of the stream within 5 s")
            .expect("readable")
            .expect("the stream goes on");
        let bytes = match self.gzip.as_mut() {
            Some(decoder) => {
                use std::io::Write;
                decoder.write_all(&chunk).expect("valid gzip");
                decoder.flush().expect("valid gzip");
                std::mem::take(decoder.get_mut())
            }
            None => chunk.to_vec(),
        };
        self.text
            .push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
    }
}

fn uni_sse(node: &Herald, request: &Value, last_event_id: Option<&str>) -> reqwest::RequestBuilder {
    let mut url = url::Url::parse(&node.url("/connection/uni_sse")).expect("url");
    url.query_pairs_mut()
        .append_pair("cf_connect", &request.to_string());
    let builder = reqwest::Client::new().get(url);
    match last_event_id {
        Some(id) => builder.header("Last-Event-ID", id),
        None => builder,
    }
}

#[tokio::test]
async fn a_reconnect_with_the_last_event_id_gets_exactly_what_was_missed() {
    let node = Herald::start("").await;
    let channel = "resume-news";
    let request = json!({ "token": node.token("u1"), "subs": { channel: {} } });
    let mut stream = Stream::open(uni_sse(&node, &request, None)).await;
    let (_, connect) = stream.event().await;
    assert!(connect["connect"]["subs"][channel].is_object(), "{connect}");

    let mut last_id = None;
    for n in 1..=5 {
        node.publish(channel, json!({ "n": n })).await;
        let (id, push) = stream.event().await;
        assert_eq!(push["channel"], channel);
        assert_eq!(push["pub"]["data"]["n"], n);
        assert!(id.is_some(), "a publication event carries an id");
        last_id = id;
    }
    // The browser loses the stream; four publications go by.
    drop(stream);
    for n in 6..=9 {
        node.publish(channel, json!({ "n": n })).await;
    }
    // It reconnects with its original URL and the last id it saw.
    let mut stream = Stream::open(uni_sse(&node, &request, last_id.as_deref())).await;
    let (id, connect) = stream.event().await;
    let sub = &connect["connect"]["subs"][channel];
    assert_eq!(sub["recovered"], true, "{connect}");
    let recovered: Vec<&Value> = sub["publications"]
        .as_array()
        .expect("recovered publications")
        .iter()
        .map(|p| &p["data"]["n"])
        .collect();
    assert_eq!(recovered, [6, 7, 8, 9]);
    // The connect event's id already names the recovered position.
    let id = id.expect("an id on the connect event");
    assert!(id.contains("[9,"), "{id}");
    node.publish(channel, json!({ "n": 10 })).await;
    let (_, push) = stream.event().await;
    assert_eq!(push["pub"]["data"]["n"], 10);

    // An id Herald did not write is ignored: the URL's request applies (no recovery).
    let mut stream = Stream::open(uni_sse(&node, &request, Some("7"))).await;
    let (_, connect) = stream.event().await;
    let sub = &connect["connect"]["subs"][channel];
    assert!(sub.get("publications").is_none(), "{connect}");
    assert!(sub.get("recovered").is_none(), "{connect}");
}

#[tokio::test]
async fn streams_are_gzipped_chunk_by_chunk_when_allowed_and_accepted() {
    let node = Herald::start("[client]\nstream_gzip = true\n").await;
    let channel = "gzip-news";
    let body = json!({ "token": node.token("u1"), "subs": { channel: {} } }).to_string();
    let http = reqwest::Client::new();
    let open = |gzip: bool| {
        let request = http
            .post(node.url("/connection/uni_http_stream"))
            .body(body.clone());
        if gzip {
            request.header("Accept-Encoding", "gzip")
        } else {
            request
        }
    };
    let mut zipped = Stream::open(open(true)).await;
    assert_eq!(
        zipped
            .response
            .headers()
            .get("content-encoding")
            .map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    let mut plain = Stream::open(open(false)).await;
    assert!(plain.response.headers().get("content-encoding").is_none());
    assert!(zipped.line().await["connect"].is_object());
    assert!(plain.line().await["connect"].is_object());
    // Each publication can be read while the stream stays open: nothing waits for more
    // data to compress.
    for n in 1..=3 {
        node.publish(
            channel,
            json!({ "n": n, "text": "the same words again and again" }),
        )
        .await;
        assert_eq!(zipped.line().await["pub"]["data"]["n"], n);
        assert_eq!(plain.line().await["pub"]["data"]["n"], n);
    }
}

/// A payload published pretty-printed (line breaks between its tokens) arrives as one
/// message on the line- and event-framed streams, with the same value.
#[tokio::test]
async fn a_pretty_printed_payload_stays_one_message() {
    let node = Herald::start("").await;
    let channel = "pretty-news";
    let request = json!({ "token": node.token("u1"), "subs": { channel: {} } });
    let mut events = Stream::open(uni_sse(&node, &request, None)).await;
    let mut lines = Stream::open(
        reqwest::Client::new()
            .post(node.url("/connection/uni_http_stream"))
            .body(request.to_string()),
    )
    .await;
    assert!(events.event().await.1["connect"].is_object());
    assert!(lines.line().await["connect"].is_object());
    let body = "{\n  \"channel\": \"pretty-news\",\n  \"data\": {\n    \"text\": \"two\\nlines\",\r\n    \"n\": 1\n  }\n}";
    let reply = reqwest::Client::new()
        .post(node.url("/api/publish"))
        .header("X-API-Key", &node.api_key)
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(reply.status(), 200);
    let expected = json!({ "text": "two\nlines", "n": 1 });
    assert_eq!(events.event().await.1["pub"]["data"], expected);
    assert_eq!(lines.line().await["pub"]["data"], expected);
}
