//! End-to-end behaviour of the SDK against a scripted in-process WebSocket server: the
//! test plays the server line by line, so every protocol step is visible and checked.

use futures_util::{SinkExt, StreamExt};
use herald_client::{
    Client, ClientError, ConnectionEvent, ConnectionState, RawJson, SubscribeOptions, Subscription,
    SubscriptionEvent, connecting_code, disconnected_code,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const WAIT: Duration = Duration::from_secs(5);

struct MockServer {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl MockServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                    let _ = tx.send(Conn {
                        ws,
                        queued: VecDeque::new(),
                    });
                }
            }
        });
        Self {
            url: format!("ws://{addr}/connection/websocket"),
            conns,
        }
    }

    fn client(&self) -> herald_client::ClientBuilder {
        Client::builder(self.url.clone())
            .min_backoff(Duration::from_millis(5))
            .max_backoff(Duration::from_millis(20))
            .timeout(Duration::from_secs(3))
    }

    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("client connects in time")
            .expect("listener alive")
    }

    async fn no_connection_within(&mut self, d: Duration) {
        assert!(
            tokio::time::timeout(d, self.conns.recv()).await.is_err(),
            "unexpected reconnect"
        );
    }
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
    queued: VecDeque<Value>,
}

impl Conn {
    /// The commands of the next frame.
    async fn frame(&mut self) -> Vec<Value> {
        assert!(self.queued.is_empty(), "unread commands: {:?}", self.queued);
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("client sends in time")
                .expect("socket open")
                .expect("read");
            if let Message::Text(text) = msg {
                return text
                    .split('\n')
                    .map(|line| serde_json::from_str(line).expect("json line"))
                    .collect();
            }
        }
    }

    /// The next command, whatever frame it came in.
    async fn command(&mut self) -> Value {
        if self.queued.is_empty() {
            let frame = self.frame().await;
            self.queued.extend(frame);
        }
        self.queued.pop_front().expect("a command")
    }

    async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    async fn reply(&mut self, id: &Value, body: Value) {
        let mut reply = body;
        reply["id"] = id.clone();
        self.send(&reply.to_string()).await;
    }

    /// Answers the `connect` command and returns it.
    async fn handshake(&mut self, connect_result: Value) -> Value {
        let cmd = self.command().await;
        assert!(cmd.get("connect").is_some(), "expected connect, got {cmd}");
        self.reply(&cmd["id"], json!({ "connect": connect_result }))
            .await;
        cmd
    }

    async fn expect_subscribe(&mut self, channel: &str) -> Value {
        let cmd = self.command().await;
        assert_eq!(
            cmd["subscribe"]["channel"], channel,
            "expected subscribe, got {cmd}"
        );
        cmd
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }

    async fn silent_for(&mut self, d: Duration) {
        assert!(self.queued.is_empty(), "unread commands: {:?}", self.queued);
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("unexpected message {msg:?}");
        }
    }
}

fn publication(channel: &str, offset: u64) -> String {
    json!({"push": {"channel": channel, "pub": {"data": {"n": offset}, "offset": offset}}})
        .to_string()
}

async fn next_event(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("event in time")
        .expect("subscription open")
}

async fn expect_offsets(sub: &mut Subscription, offsets: &[u64]) {
    for &want in offsets {
        match next_event(sub).await {
            SubscriptionEvent::Publication(p) => {
                assert_eq!(p.offset, want);
                assert_eq!(p.data.get(), format!("{{\"n\":{want}}}"));
            }
            other => panic!("expected publication {want}, got {other:?}"),
        }
    }
}

async fn expect_subscribed(sub: &mut Subscription) -> (bool, bool, u64, String) {
    match next_event(sub).await {
        SubscriptionEvent::Subscribed {
            recovered,
            was_recovering,
            position,
            ..
        } => (recovered, was_recovering, position.offset, position.epoch),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// The next connection event other than a [`ConnectionEvent::Retrying`] notice.
async fn next_connection_event(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
) -> ConnectionEvent {
    loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("event in time")
            .expect("event")
        {
            ConnectionEvent::Retrying { .. } => continue,
            event => return event,
        }
    }
}

async fn subscribed_default(
    server: &mut MockServer,
    channel: &str,
    offset: u64,
) -> (Client, Conn, Subscription) {
    let builder = server.client();
    connected_and_subscribed(server, builder, channel, offset).await
}

/// Connects a client and subscribes it to `channel` at `offset` in epoch `E`.
async fn connected_and_subscribed(
    server: &mut MockServer,
    builder: herald_client::ClientBuilder,
    channel: &str,
    offset: u64,
) -> (Client, Conn, Subscription) {
    let client = builder.build().expect("build");
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c1", "version": "mock"}))
        .await;
    connect.await.expect("join").expect("connected");
    let mut sub = client
        .subscribe(channel, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let cmd = conn.expect_subscribe(channel).await;
    assert!(cmd["subscribe"].get("recover").is_none());
    conn.reply(
        &cmd["id"],
        json!({"subscribe": {"recoverable": true, "positioned": true, "epoch": "E", "offset": offset}}),
    )
    .await;
    assert_eq!(
        expect_subscribed(&mut sub).await,
        (false, false, offset, "E".to_owned())
    );
    (client, conn, sub)
}

#[tokio::test]
async fn connects_subscribes_and_delivers_in_order_without_duplicates() {
    let mut server = MockServer::start().await;
    let builder = server.client().token("T1").name("mock-test");
    let client = builder.build().expect("build");
    let mut events = client.events();
    assert_eq!(client.state(), ConnectionState::Disconnected);

    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    let cmd = conn
        .handshake(json!({"client": "c1", "version": "mock"}))
        .await;
    assert_eq!(cmd["connect"]["token"], "T1");
    assert_eq!(cmd["connect"]["name"], "mock-test");
    connect.await.expect("join").expect("connected");
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(client.client_id().as_deref(), Some("c1"));
    assert!(matches!(
        next_connection_event(&mut events).await,
        ConnectionEvent::Connecting {
            code: connecting_code::CONNECT_CALLED,
            ..
        }
    ));
    assert!(matches!(
        next_connection_event(&mut events).await,
        ConnectionEvent::Connected { client_id } if client_id == "c1"
    ));

    let mut sub = client
        .subscribe("chat:1", SubscribeOptions::default())
        .await
        .expect("subscribe");
    assert!(matches!(
        client
            .subscribe("chat:1", SubscribeOptions::default())
            .await,
        Err(ClientError::AlreadySubscribed { .. })
    ));
    let cmd = conn.expect_subscribe("chat:1").await;
    // A reply and pushes batched in one frame, with a duplicate and a stale publication.
    let frame = [
        json!({"id": cmd["id"], "subscribe": {"recoverable": true, "positioned": true, "epoch": "E", "offset": 5}}).to_string(),
        publication("chat:1", 5),
        publication("chat:1", 6),
        publication("chat:1", 6),
        publication("chat:1", 7),
        publication("other", 1),
    ]
    .join("\n");
    conn.send(&frame).await;
    assert_eq!(
        expect_subscribed(&mut sub).await,
        (false, false, 5, "E".into())
    );
    expect_offsets(&mut sub, &[6, 7]).await;
    client.disconnect().await;
}

#[tokio::test]
async fn concurrent_calls_share_one_frame_and_match_replies_by_id() {
    let mut server = MockServer::start().await;
    let (client, mut conn, _sub) = subscribed_default(&mut server, "chat:1", 0).await;
    let data = RawJson::from_string("{\"x\":1}".to_owned()).expect("json");
    let calls = tokio::spawn({
        let client = client.clone();
        async move {
            tokio::join!(
                client.publish("chat:1", data.clone()),
                client.presence_stats("chat:1"),
                client.publish("chat:2", data),
            )
        }
    });
    let frame = conn.frame().await;
    assert_eq!(frame.len(), 3, "one frame for the three calls: {frame:?}");
    assert_eq!(frame[0]["publish"]["data"], json!({"x": 1}));
    // Replies in reverse order, in one frame.
    let replies = [
        json!({"id": frame[2]["id"], "error": {"code": 103, "message": "permission denied"}})
            .to_string(),
        json!({"id": frame[1]["id"], "presence_stats": {"num_clients": 3, "num_users": 2}})
            .to_string(),
        json!({"id": frame[0]["id"], "publish": {}}).to_string(),
    ]
    .join("\n");
    conn.send(&replies).await;
    let (first, stats, third) = calls.await.expect("join");
    first.expect("publish ok");
    let stats = stats.expect("stats");
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));
    assert!(matches!(third, Err(ClientError::Server { code: 103, .. })));
}

#[tokio::test]
async fn reconnects_and_recovers_exactly_once() {
    let mut server = MockServer::start().await;
    let (client, mut conn, mut sub) = subscribed_default(&mut server, "chat:1", 5).await;
    let mut events = client.events();
    conn.send(&publication("chat:1", 6)).await;
    expect_offsets(&mut sub, &[6]).await;

    // A call in flight when the connection drops is interrupted, not retried.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.presence("chat:1").await }
    });
    let cmd = conn.command().await;
    assert!(cmd.get("presence").is_some());
    conn.close(3001, "shutdown").await;
    assert!(matches!(
        call.await.expect("join"),
        Err(ClientError::Interrupted)
    ));
    assert!(matches!(
        next_connection_event(&mut events).await,
        ConnectionEvent::Connecting { code: 3001, .. }
    ));

    // A call made while reconnecting waits for the connection.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.history("chat:1", Default::default()).await }
    });

    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c2"})).await;
    let mut sub_cmd = None;
    let mut history_cmd = None;
    for _ in 0..2 {
        let cmd = conn.command().await;
        if cmd.get("subscribe").is_some() {
            sub_cmd = Some(cmd);
        } else {
            history_cmd = Some(cmd);
        }
    }
    let sub_cmd = sub_cmd.expect("resubscribe");
    assert_eq!(sub_cmd["subscribe"]["recover"], true);
    assert_eq!(sub_cmd["subscribe"]["offset"], 6);
    assert_eq!(sub_cmd["subscribe"]["epoch"], "E");
    let history_cmd = history_cmd.expect("history sent after reconnect");
    conn.reply(
        &history_cmd["id"],
        json!({"history": {"epoch": "E", "offset": 9}}),
    )
    .await;
    assert_eq!(waiting.await.expect("join").expect("history").offset, 9);

    let frame = [
        json!({"id": sub_cmd["id"], "subscribe": {
            "recoverable": true, "positioned": true, "epoch": "E", "offset": 6,
            "was_recovering": true, "recovered": true,
            "publications": [{"data": {"n": 7}, "offset": 7}, {"data": {"n": 8}, "offset": 8}]
        }})
        .to_string(),
        publication("chat:1", 8),
        publication("chat:1", 9),
    ]
    .join("\n");
    conn.send(&frame).await;
    assert_eq!(
        expect_subscribed(&mut sub).await,
        (true, true, 8, "E".into())
    );
    expect_offsets(&mut sub, &[7, 8, 9]).await;
    assert!(matches!(
        next_connection_event(&mut events).await,
        ConnectionEvent::Connected { client_id } if client_id == "c2"
    ));
}

#[tokio::test]
async fn a_gap_resubscribes_with_recovery_instead_of_delivering_out_of_order() {
    let mut server = MockServer::start().await;
    let (_client, mut conn, mut sub) = subscribed_default(&mut server, "chat:1", 5).await;
    conn.send(&[publication("chat:1", 6), publication("chat:1", 8)].join("\n"))
        .await;
    expect_offsets(&mut sub, &[6]).await;
    let frame = conn.frame().await;
    assert_eq!(
        frame.len(),
        2,
        "unsubscribe and subscribe together: {frame:?}"
    );
    assert_eq!(frame[0]["unsubscribe"]["channel"], "chat:1");
    assert_eq!(frame[1]["subscribe"]["recover"], true);
    assert_eq!(frame[1]["subscribe"]["offset"], 6);
    conn.reply(&frame[0]["id"], json!({"unsubscribe": {}}))
        .await;
    conn.reply(
        &frame[1]["id"],
        json!({"subscribe": {"recoverable": true, "positioned": true, "epoch": "E", "offset": 6,
            "was_recovering": true, "recovered": true,
            "publications": [{"data": {"n": 7}, "offset": 7}, {"data": {"n": 8}, "offset": 8}]}}),
    )
    .await;
    assert_eq!(
        expect_subscribed(&mut sub).await,
        (true, true, 8, "E".into())
    );
    expect_offsets(&mut sub, &[7, 8]).await;
}

#[tokio::test]
async fn unsubscribe_pushes_end_or_resubscribe() {
    let mut server = MockServer::start().await;
    let (client, mut conn, mut sub) = subscribed_default(&mut server, "a", 3).await;
    // 2500: insufficient state, resubscribe with recovery.
    conn.send(&json!({"push": {"channel": "a", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}}).to_string())
        .await;
    let cmd = conn.expect_subscribe("a").await;
    assert_eq!(cmd["subscribe"]["recover"], true);
    assert_eq!(cmd["subscribe"]["offset"], 3);
    conn.reply(
        &cmd["id"],
        json!({"subscribe": {"recoverable": true, "positioned": true, "epoch": "E", "offset": 3, "was_recovering": true, "recovered": true}}),
    )
    .await;
    assert_eq!(
        expect_subscribed(&mut sub).await,
        (true, true, 3, "E".into())
    );
    // 2000: final.
    conn.send(&json!({"push": {"channel": "a", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}}).to_string())
        .await;
    assert_eq!(
        next_event(&mut sub).await,
        SubscriptionEvent::Unsubscribed {
            code: 2000,
            reason: "server unsubscribe".into()
        }
    );
    assert!(sub.next().await.is_none());
    // The channel can be subscribed again.
    let mut again = client
        .subscribe("a", SubscribeOptions::default())
        .await
        .expect("subscribe again");
    let cmd = conn.expect_subscribe("a").await;
    conn.reply(&cmd["id"], json!({"subscribe": {}})).await;
    assert_eq!(
        expect_subscribed(&mut again).await,
        (false, false, 0, String::new())
    );
    // Client-side unsubscribe waits for the reply and ends the stream.
    let unsubscribing = tokio::spawn(async move {
        let result = again.unsubscribe().await;
        (result, again)
    });
    let cmd = conn.command().await;
    assert_eq!(cmd["unsubscribe"]["channel"], "a");
    conn.reply(&cmd["id"], json!({"unsubscribe": {}})).await;
    let (result, mut again) = unsubscribing.await.expect("join");
    result.expect("unsubscribed");
    assert!(matches!(
        next_event(&mut again).await,
        SubscriptionEvent::Unsubscribed { code: 0, .. }
    ));
    assert!(again.next().await.is_none());
}

#[tokio::test]
async fn reject_unrecovered_surfaces_error_112_and_stops() {
    let mut server = MockServer::start().await;
    let client = server.client().build().expect("build");
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c1"})).await;
    connect.await.expect("join").expect("connected");
    let options = SubscribeOptions {
        since: Some(herald_client::StreamPosition {
            offset: 10,
            epoch: "OLD".into(),
        }),
        reject_unrecovered: true,
        ..SubscribeOptions::default()
    };
    let mut sub = client.subscribe("a", options).await.expect("subscribe");
    let cmd = conn.expect_subscribe("a").await;
    assert_eq!(cmd["subscribe"]["recover"], true);
    assert_eq!(cmd["subscribe"]["offset"], 10);
    assert_eq!(cmd["subscribe"]["epoch"], "OLD");
    assert_eq!(cmd["subscribe"]["flag"], 2);
    conn.reply(
        &cmd["id"],
        json!({"error": {"code": 112, "message": "unrecoverable position"}}),
    )
    .await;
    assert!(matches!(
        next_event(&mut sub).await,
        SubscriptionEvent::Error { code: 112, .. }
    ));
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn answers_pings_and_reconnects_when_they_stop() {
    let mut server = MockServer::start().await;
    let client = server.client().build().expect("build");
    let mut events = client.events();
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c1", "ping": 1, "pong": true}))
        .await;
    connect.await.expect("join").expect("connected");
    conn.send("{}").await;
    assert_eq!(conn.command().await, json!({}));
    // Silence: after ping + 3 s the connection is considered dead.
    let started = tokio::time::Instant::now();
    let _ = next_connection_event(&mut events).await; // Connecting (connect called)
    let _ = next_connection_event(&mut events).await; // Connected
    match tokio::time::timeout(Duration::from_secs(8), events.recv()).await {
        Ok(Ok(ConnectionEvent::Connecting { code, .. })) => {
            assert_eq!(code, connecting_code::NO_PING)
        }
        other => panic!("expected no-ping reconnect, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c2"})).await;
}

#[tokio::test]
async fn terminal_close_codes_stop_reconnecting() {
    let mut server = MockServer::start().await;
    let client = server.client().build().expect("build");
    let mut events = client.events();
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    let cmd = conn.command().await;
    assert!(cmd.get("connect").is_some());
    conn.close(3500, "invalid token").await;
    match connect.await.expect("join") {
        Err(ClientError::Disconnected { code: 3500, reason }) => {
            assert_eq!(reason, "invalid token")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.state(), ConnectionState::Disconnected);
    let _ = next_connection_event(&mut events).await; // Connecting
    assert!(matches!(
        next_connection_event(&mut events).await,
        ConnectionEvent::Disconnected { code: 3500, .. }
    ));
    server
        .no_connection_within(Duration::from_millis(300))
        .await;
    // A call made while disconnected waits for the next connection.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.presence_stats("a").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c2"})).await;
    connect.await.expect("join").expect("connected");
    let cmd = conn.command().await;
    conn.reply(
        &cmd["id"],
        json!({"presence_stats": {"num_clients": 1, "num_users": 1}}),
    )
    .await;
    assert_eq!(call.await.expect("join").expect("stats").num_clients, 1);
}

#[tokio::test]
async fn token_expired_on_connect_fetches_a_new_token() {
    let mut server = MockServer::start().await;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fetches = counter.clone();
    let client = server
        .client()
        .token("OLD")
        .token_refresher(move || {
            let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { Ok::<_, std::io::Error>(format!("NEW{n}")) }
        })
        .build()
        .expect("build");
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    let cmd = conn.command().await;
    assert_eq!(cmd["connect"]["token"], "OLD");
    conn.reply(
        &cmd["id"],
        json!({"error": {"code": 109, "message": "token expired"}}),
    )
    .await;
    let mut conn = server.accept().await;
    let cmd = conn
        .handshake(json!({"client": "c1", "expires": true, "ttl": 1}))
        .await;
    assert_eq!(cmd["connect"]["token"], "NEW1");
    connect.await.expect("join").expect("connected");
    // ttl 1 s: the refresher runs again before it runs out and a refresh is sent.
    let cmd = conn.command().await;
    assert_eq!(cmd["refresh"]["token"], "NEW2");
    conn.reply(&cmd["id"], json!({"refresh": {"expires": false}}))
        .await;
    conn.silent_for(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_slow_consumer_is_resubscribed_with_recovery_not_skipped() {
    let mut server = MockServer::start().await;
    let builder = server.client().subscription_buffer(16);
    let (_client, mut conn, mut sub) =
        connected_and_subscribed(&mut server, builder, "fast", 0).await;
    // The Subscribed event was read; 16 slots, 8 reserved for final events.
    let burst: Vec<String> = (1..=40).map(|o| publication("fast", o)).collect();
    conn.send(&burst.join("\n")).await;
    let cmd = conn.command().await;
    assert_eq!(cmd["unsubscribe"]["channel"], "fast");
    conn.reply(&cmd["id"], json!({"unsubscribe": {}})).await;
    // Read what was buffered; the SDK then resubscribes from the last delivered offset.
    expect_offsets(&mut sub, &[1, 2, 3, 4, 5, 6, 7, 8]).await;
    let cmd = conn.expect_subscribe("fast").await;
    assert_eq!(cmd["subscribe"]["recover"], true);
    assert_eq!(cmd["subscribe"]["offset"], 8);
    let recovered: Vec<Value> = (9..=40)
        .map(|o| json!({"data": {"n": o}, "offset": o}))
        .collect();
    conn.reply(
        &cmd["id"],
        json!({"subscribe": {"recoverable": true, "positioned": true, "epoch": "E", "offset": 8,
            "was_recovering": true, "recovered": true, "publications": recovered}}),
    )
    .await;
    // Again more than fits: delivery resumes in order as the consumer keeps reading.
    assert_eq!(
        expect_subscribed(&mut sub).await,
        (true, true, 40, "E".into())
    );
    let mut next = 9;
    let mut resubscribes = 0;
    while next <= 40 {
        // Read events and serve the resubscribes each overflow causes, concurrently.
        tokio::select! {
            event = sub.next() => match event.expect("subscription open") {
                SubscriptionEvent::Publication(p) => {
                    assert_eq!(p.offset, next);
                    next += 1;
                }
                SubscriptionEvent::Subscribed { recovered, .. } => assert!(recovered),
                other => panic!("unexpected {other:?}"),
            },
            cmd = conn.command() => {
                if let Some(s) = cmd.get("subscribe") {
                    resubscribes += 1;
                    let from = s["offset"].as_u64().unwrap_or(0);
                    assert_eq!(from, next - 1, "recovers from the last delivered offset");
                    let pubs: Vec<Value> = (from + 1..=40)
                        .map(|o| json!({"data": {"n": o}, "offset": o}))
                        .collect();
                    let result = json!({"subscribe": {"recoverable": true, "positioned": true,
                        "epoch": "E", "offset": from, "was_recovering": true, "recovered": true,
                        "publications": pubs}});
                    conn.reply(&cmd["id"], result).await;
                } else {
                    assert_eq!(cmd["unsubscribe"]["channel"], "fast");
                    conn.reply(&cmd["id"], json!({"unsubscribe": {}})).await;
                }
            }
            () = tokio::time::sleep(WAIT) => panic!("stuck at offset {next}"),
        }
    }
    assert!(resubscribes >= 1);
}

#[tokio::test]
async fn disconnect_closes_cleanly_and_stops() {
    let mut server = MockServer::start().await;
    let (client, mut conn, _sub) = subscribed_default(&mut server, "a", 0).await;
    let mut events = client.events();
    client.disconnect().await;
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert!(matches!(
        next_connection_event(&mut events).await,
        ConnectionEvent::Disconnected {
            code: disconnected_code::DISCONNECT_CALLED,
            ..
        }
    ));
    match tokio::time::timeout(WAIT, conn.ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
    server
        .no_connection_within(Duration::from_millis(300))
        .await;
    // A call waiting for a connection fails once disconnect() is called.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.presence("a").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.disconnect().await;
    assert!(matches!(
        call.await.expect("join"),
        Err(ClientError::Closed)
    ));
    // connect() again resubscribes with recovery.
    let connecting = client.clone();
    let connect = tokio::spawn(async move { connecting.connect().await });
    let mut conn = server.accept().await;
    conn.handshake(json!({"client": "c3"})).await;
    connect.await.expect("join").expect("connected");
    let cmd = conn.expect_subscribe("a").await;
    assert_eq!(cmd["subscribe"]["recover"], true);
}
