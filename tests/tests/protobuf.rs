//! The Protobuf client protocol against a real `herald` process, with a raw client that
//! writes and reads length-delimited messages in binary frames: negotiation by
//! subprotocol and by query, connect, subscribe, publish, ping/pong, and refusals that
//! close one session and leave the others alone.

use futures_util::{SinkExt, StreamExt};
use herald_protocol::protobuf::{SUBPROTOCOL, decode_replies};
use herald_protocol::{
    Command, ConnectRequest, Encoding, FrameWriter, HistoryRequest, PublishRequest, RawJson, Reply,
    SubscribeRequest,
};
use herald_tests::Herald;
use serde_json::json;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const WAIT: Duration = Duration::from_secs(5);

/// A raw Protobuf client.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Reply>,
    next_id: u32,
}

/// What the server did next.
#[derive(Debug)]
enum Next {
    Reply(Box<Reply>),
    Closed(u16),
    Gone,
}

impl Client {
    /// Opens a socket offering the subprotocol, and checks that the server chose it.
    async fn open(h: &Herald) -> Client {
        let mut request = h.ws_url().into_client_request().expect("a URL");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (ws, response) = connect_async(request).await.expect("websocket connect");
        assert_eq!(
            response.headers().get("sec-websocket-protocol"),
            Some(&HeaderValue::from_static(SUBPROTOCOL))
        );
        Self::over(ws)
    }

    /// Opens a socket that asks for Protobuf in the query instead.
    async fn open_by_query(h: &Herald, query: &str) -> Client {
        let url = format!("{}?{query}", h.ws_url());
        let (ws, response) = connect_async(url).await.expect("websocket connect");
        assert!(response.headers().get("sec-websocket-protocol").is_none());
        Self::over(ws)
    }

    fn over(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            pending: VecDeque::new(),
            next_id: 0,
        }
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("sent");
    }

    /// Sends a command with the next id, and returns the id.
    async fn command(&mut self, mut cmd: Command) -> u32 {
        self.next_id += 1;
        cmd.id = self.next_id;
        let mut w = FrameWriter::new(Encoding::Protobuf, 64);
        w.push(&cmd).expect("encode");
        self.send_bytes(w.take().to_vec()).await;
        cmd.id
    }

    /// Sends a command and returns its reply, keeping pushes for later.
    async fn call(&mut self, cmd: Command) -> Reply {
        let id = self.command(cmd).await;
        let mut skipped = VecDeque::new();
        loop {
            match self.next().await {
                Next::Reply(r) if r.id == id => {
                    skipped.extend(self.pending.drain(..));
                    self.pending = skipped;
                    return *r;
                }
                Next::Reply(r) => skipped.push_back(*r),
                other => panic!("expected the reply to {id}, got {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Next {
        if let Some(r) = self.pending.pop_front() {
            return Next::Reply(Box::new(r));
        }
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server answers in time");
            match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    let mut replies = decode_replies(&bytes).expect("the server writes Protobuf");
                    let first = replies.remove(0);
                    self.pending.extend(replies);
                    return Next::Reply(Box::new(first));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(Message::Text(t))) => panic!("a text frame in Protobuf mode: {t}"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Next::Gone,
            }
        }
    }

    async fn connect(&mut self, token: &str) -> Reply {
        let reply = self
            .call(Command {
                connect: Some(ConnectRequest {
                    token: token.to_owned(),
                    ..ConnectRequest::default()
                }),
                ..Command::default()
            })
            .await;
        assert!(reply.error.is_none(), "{reply:?}");
        reply
    }

    async fn subscribe(&mut self, channel: &str) -> Reply {
        let reply = self
            .call(Command {
                subscribe: Some(SubscribeRequest {
                    channel: channel.to_owned(),
                    ..SubscribeRequest::default()
                }),
                ..Command::default()
            })
            .await;
        assert!(reply.error.is_none(), "{reply:?}");
        reply
    }

    /// The next publication push, skipping pings and other pushes.
    async fn next_publication(&mut self) -> herald_protocol::Publication {
        loop {
            match self.next().await {
                Next::Reply(r) => {
                    if let Some(p) = r.push.and_then(|p| p.publication) {
                        return p;
                    }
                }
                other => panic!("expected a publication, got {other:?}"),
            }
        }
    }
}

fn publish(channel: &str, data: &str) -> Command {
    Command {
        publish: Some(PublishRequest {
            channel: channel.to_owned(),
            data: Some(RawJson::from_string(data.to_owned()).expect("json")),
            ..PublishRequest::default()
        }),
        ..Command::default()
    }
}

#[tokio::test]
async fn connects_subscribes_publishes_and_reads_history() {
    let h = Herald::start("").await;
    let mut a = Client::open(&h).await;
    let connected = a.connect(&h.token("alice")).await;
    let result = connected.connect.expect("a connect result");
    assert!(!result.client.is_empty());
    assert!(result.pong);

    let sub = a.subscribe("news").await.subscribe.expect("a result");
    assert!(sub.recoverable && sub.positioned);

    // A publication from the server API and one from a client both arrive, in order.
    let offset = h.publish("news", json!({"from": "api"})).await;
    let p = a.next_publication().await;
    assert_eq!(p.offset, offset);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(p.data.get()).expect("JSON"),
        json!({"from": "api"})
    );
    let mut b = Client::open_by_query(&h, "cf_protocol=protobuf").await;
    b.connect(&h.token("bob")).await;
    b.subscribe("news").await;
    let reply = b.call(publish("news", r#"{"from":"bob"}"#)).await;
    assert!(reply.publish.is_some(), "{reply:?}");
    for client in [&mut a, &mut b] {
        let p = client.next_publication().await;
        assert_eq!(p.data.get(), r#"{"from":"bob"}"#);
        assert_eq!(p.offset, offset + 1);
        assert_eq!(p.info.map(|i| i.user).as_deref(), Some("bob"));
    }

    let history = a
        .call(Command {
            history: Some(HistoryRequest {
                channel: "news".into(),
                limit: 10,
                ..HistoryRequest::default()
            }),
            ..Command::default()
        })
        .await
        .history
        .expect("a history result");
    assert_eq!(history.publications.len(), 2);
    assert_eq!(history.offset, offset + 1);
}

#[tokio::test]
async fn pings_are_a_zero_byte_and_a_zero_byte_pong_keeps_the_connection() {
    let h = Herald::start("[client]\nping_interval = \"1s\"\npong_timeout = \"500ms\"\n").await;
    let mut c = Client::open(&h).await;
    c.connect(&h.token("1")).await;
    for _ in 0..3 {
        let frame = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a ping in time");
        match frame {
            Some(Ok(Message::Binary(bytes))) => assert_eq!(&bytes[..], [0]),
            other => panic!("expected a ping, got {other:?}"),
        }
        c.send_bytes(vec![0]).await;
    }
    // Answered each time: still connected and serving.
    let reply = c.subscribe("news").await;
    assert!(reply.subscribe.is_some());
}

#[tokio::test]
async fn data_that_is_not_json_is_refused_with_107() {
    let h = Herald::start("").await;
    let mut c = Client::open(&h).await;
    c.connect(&h.token("1")).await;
    c.subscribe("news").await;
    // id 9, publish { channel "news", data 0xff 0xfe }.
    let raw = [
        0x08, 0x09, 0x3a, 0x0a, 0x0a, 0x04, b'n', b'e', b'w', b's', 0x12, 0x02, 0xff, 0xfe,
    ];
    let mut frame = vec![u8::try_from(raw.len()).expect("short")];
    frame.extend_from_slice(&raw);
    c.send_bytes(frame).await;
    match c.next().await {
        Next::Reply(r) => {
            assert_eq!(r.id, 9);
            assert_eq!(r.error.map(|e| e.code), Some(107));
        }
        other => panic!("expected the error reply, got {other:?}"),
    }
    // The connection goes on.
    let reply = c.call(publish("news", "[1,2,3]")).await;
    assert!(reply.publish.is_some(), "{reply:?}");
}

#[tokio::test]
async fn a_bad_length_prefix_closes_that_session_only() {
    let h = Herald::start("").await;
    let mut bystander = Client::open(&h).await;
    bystander.connect(&h.token("by")).await;
    bystander.subscribe("news").await;

    let bad_frames: [Vec<u8>; 4] = [
        // A length that runs past the frame.
        vec![0x05, 0x08, 0x01],
        // A varint that never ends.
        vec![0xff; 12],
        // A message that is not a Command (a string where `id` is).
        vec![0x03, 0x0a, 0x01, b'x'],
        // An empty frame.
        vec![],
    ];
    for bad in bad_frames {
        let mut c = Client::open(&h).await;
        c.connect(&h.token("1")).await;
        c.send_bytes(bad.clone()).await;
        match c.next().await {
            Next::Closed(code) => assert_eq!(code, 3501, "{bad:?}"),
            other => panic!("{bad:?}: expected a close, got {other:?}"),
        }
    }
    // A text frame on a Protobuf connection is refused the same way.
    let mut c = Client::open(&h).await;
    c.ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .expect("sent");
    assert!(matches!(c.next().await, Next::Closed(3501)));

    let offset = h.publish("news", json!("still here")).await;
    let p = bystander.next_publication().await;
    assert_eq!(p.offset, offset);
    assert_eq!(p.data.get(), r#""still here""#);
}
