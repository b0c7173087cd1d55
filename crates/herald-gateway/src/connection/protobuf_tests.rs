//! The Protobuf encoding end to end through a connection task: binary frames in and
//! out, the same command path as JSON, and refusals of what does not belong.

use crate::testing::{self, TestClient};
use axum::extract::ws::Message;
use herald_broker::memory::MemoryBroker;
use herald_protocol::protobuf::decode_replies;
use herald_protocol::{
    Command, ConnectRequest, DisconnectCode, Encoding, ErrorCode, FrameWriter, PublishRequest,
    RawJson, Reply, SubscribeRequest,
};
use std::sync::Arc;
use std::time::Duration;

fn encode(commands: &[Command]) -> Vec<u8> {
    let mut w = FrameWriter::new(Encoding::Protobuf, 64);
    for c in commands {
        w.push(c).expect("encode");
    }
    w.take().to_vec()
}

async fn replies(client: &mut TestClient) -> Vec<Reply> {
    match client.recv_message().await {
        Some(Message::Binary(bytes)) => decode_replies(&bytes).expect("the server writes Protobuf"),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

async fn reply(client: &mut TestClient, id: u32) -> Reply {
    loop {
        if let Some(r) = replies(client).await.into_iter().find(|r| r.id == id) {
            return r;
        }
    }
}

async fn closed(client: &mut TestClient) -> u16 {
    loop {
        match client.recv_message().await {
            Some(Message::Close(Some(frame))) => return frame.code,
            Some(Message::Binary(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

fn connect(id: u32) -> Command {
    Command {
        id,
        connect: Some(ConnectRequest::default()),
        ..Command::default()
    }
}

fn publish(id: u32, channel: &str, data: &str) -> Command {
    Command {
        id,
        publish: Some(PublishRequest {
            channel: channel.into(),
            data: Some(RawJson::from_string(data.to_owned()).expect("json")),
            ..PublishRequest::default()
        }),
        ..Command::default()
    }
}

async fn protobuf_client(config: crate::Config) -> (Arc<crate::node::Node>, TestClient) {
    let node = testing::node(config, Arc::new(MemoryBroker::new())).await;
    let mut client = testing::connect_with(&node, Encoding::Protobuf);
    client.send_binary(&encode(&[connect(1)])).await;
    let r = reply(&mut client, 1).await;
    assert!(r.connect.as_ref().is_some_and(|c| c.pong), "{r:?}");
    (node, client)
}

#[tokio::test(start_paused = true)]
async fn subscribes_publishes_and_answers_pings_in_binary_frames() {
    let mut config = testing::config();
    config.client.ping_interval = Duration::from_secs(25);
    let (node, mut client) = protobuf_client(config).await;
    let subscribe = Command {
        id: 2,
        subscribe: Some(SubscribeRequest {
            channel: "news".into(),
            ..SubscribeRequest::default()
        }),
        ..Command::default()
    };
    client.send_binary(&encode(&[subscribe])).await;
    assert!(reply(&mut client, 2).await.subscribe.is_some());

    // A JSON subscriber of the same channel gets the same publication in its encoding.
    let mut json = testing::connect(&node);
    json.connect("").await;
    json.subscribe("news").await;

    client
        .send_binary(&encode(&[publish(3, "news", r#"{"n":1}"#)]))
        .await;
    let mut got_reply = false;
    let mut got_pub = false;
    while !(got_reply && got_pub) {
        for r in replies(&mut client).await {
            got_reply |= r.id == 3 && r.publish.is_some();
            if let Some(p) = r.push.and_then(|p| p.publication) {
                assert_eq!(p.data.get(), r#"{"n":1}"#);
                got_pub = true;
            }
        }
    }
    let frame = json.frame().await;
    assert_eq!(frame[0]["push"]["pub"]["data"]["n"], 1, "{frame:?}");

    // The ping is the single byte 0; the pong an empty command, also 0.
    match client.recv_message().await {
        Some(Message::Binary(bytes)) => assert_eq!(&bytes[..], [0]),
        other => panic!("expected a ping, got {other:?}"),
    }
    client.send_binary(&[0]).await;
    match client.recv_message().await {
        Some(Message::Binary(bytes)) => assert_eq!(&bytes[..], [0], "the next ping, no close"),
        other => panic!("expected a ping, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_payload_that_is_not_json_gets_107_and_the_connection_stays() {
    let (_node, mut client) = protobuf_client(testing::config()).await;
    // A publish whose data is raw bytes, then a valid one in the same frame.
    let mut frame = Vec::new();
    let bad = [
        0x08, 0x02, // id 2
        0x3a, 0x07, // publish, 7 bytes
        0x0a, 0x01, b'c', // channel "c"
        0x12, 0x02, 0xff, 0x00, // data: two bytes that are not JSON
    ];
    frame.push(u8::try_from(bad.len()).expect("short"));
    frame.extend_from_slice(&bad);
    frame.extend_from_slice(&encode(&[publish(3, "c", "1")]));
    client.send_binary(&frame).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(replies(&mut client).await.into_iter().filter(|r| r.id > 0));
    }
    assert_eq!(got[0].id, 2);
    assert_eq!(
        got[0].error.as_ref().map(|e| e.code),
        Some(ErrorCode::BadRequest.code())
    );
    assert_eq!(got[1].id, 3);
    assert!(got[1].publish.is_some(), "{:?}", got[1]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_length_prefix_or_a_text_frame_closes_with_3501() {
    let (node, mut client) = protobuf_client(testing::config()).await;
    client.send_binary(&[0x05, 0x08]).await;
    assert_eq!(closed(&mut client).await, DisconnectCode::BadRequest.code());

    let mut client = testing::connect_with(&node, Encoding::Protobuf);
    client.send(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(closed(&mut client).await, DisconnectCode::BadRequest.code());

    let mut client = testing::connect(&node);
    client.send_binary(&encode(&[connect(1)])).await;
    assert_eq!(closed(&mut client).await, DisconnectCode::BadRequest.code());
}
