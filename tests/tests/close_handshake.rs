//! The WebSocket close handshake and the RFC 6455 close codes, checked on the wire:
//! every client Close gets a Close back (its code echoed, or 1002 for a code that must
//! not be sent), every framing violation gets its RFC code, and the server then closes
//! the TCP connection. Each check runs on Herald's frame layer (which serves every
//! HTTP/1.1 WebSocket) with permessage-deflate not allowed and allowed
//! (`client.websocket_compression`).

use herald_tests::Herald;
use herald_tests::wire::{FrameBuilder, Wire, op};
use serde_json::json;
use std::time::Duration;

/// How long the server may take to close the TCP connection after its Close frame.
const TCP_CLOSE: Duration = Duration::from_secs(2);

const MAX_FRAME: usize = 4096;

/// A node without permessage-deflate and one that allows it.
async fn nodes() -> [Herald; 2] {
    let config = |own: bool| {
        format!("[client]\nmax_frame_bytes = {MAX_FRAME}\nwebsocket_compression = {own}\n")
    };
    [
        Herald::start(&config(false)).await,
        Herald::start(&config(true)).await,
    ]
}

/// An authenticated connection at the byte level.
async fn connected(h: &Herald) -> Wire {
    let mut wire = Wire::open(h.port, "/connection/websocket").await;
    let connect = json!({"id": 1, "connect": {"token": h.token("1")}}).to_string();
    wire.send(&FrameBuilder::text(connect)).await;
    let reply = wire.frame(Duration::from_secs(5)).await.expect("reply");
    assert_eq!(reply.opcode, op::TEXT);
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    wire
}

/// Sends the frames, then expects the server's Close frame and the end of the TCP
/// connection; returns the close code (`None` for a Close without one).
async fn answer(h: &Herald, frames: &[FrameBuilder]) -> Option<u16> {
    let mut wire = connected(h).await;
    for f in frames {
        wire.send(f).await;
    }
    let close = wire.close_frame().await;
    assert!(close.fin);
    assert!(
        wire.closed_by_server(TCP_CLOSE).await,
        "the server kept the TCP connection open after its Close frame"
    );
    close.close_code()
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code_then_the_connection_ends() {
    for h in nodes().await {
        for code in [1000, 1001, 1003, 1007, 1011, 3000, 3999, 4000, 4999] {
            let mut wire = connected(&h).await;
            wire.send(&FrameBuilder::close(code, b"bye")).await;
            let close = wire.close_frame().await;
            assert_eq!(close.close_code(), Some(code));
            assert_eq!(&close.payload[2..], b"bye", "the reason is echoed");
            assert!(wire.closed_by_server(TCP_CLOSE).await, "{code}");
        }
        // Before the connect command too.
        let mut wire = Wire::open(h.port, "/connection/websocket").await;
        wire.send(&FrameBuilder::close(1000, b"")).await;
        assert_eq!(wire.close_frame().await.close_code(), Some(1000));
        assert!(wire.closed_by_server(TCP_CLOSE).await);
    }
}

#[tokio::test]
async fn a_close_without_a_code_is_answered_without_one() {
    // RFC 6455 section 5.5.1: the answer echoes the status; a Close without a code
    // gets one without a code (which the client reads as 1005, "no status"). The
    // WebSocket library queues this answer itself and cannot be made to send 1000.
    for h in nodes().await {
        let close = FrameBuilder::new(op::CLOSE, Vec::new());
        let mut wire = connected(&h).await;
        wire.send(&close).await;
        let answer = wire.close_frame().await;
        assert!(answer.payload.is_empty(), "{:?}", answer.payload);
        assert!(wire.closed_by_server(TCP_CLOSE).await);
    }
}

#[tokio::test]
async fn an_invalid_close_code_is_never_echoed_but_answered_with_1002() {
    for h in nodes().await {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                answer(&h, &[FrameBuilder::close(code, b"")]).await,
                Some(1002),
                "close code {code}"
            );
        }
        // A one-byte close payload cannot hold a code.
        let truncated = FrameBuilder::new(op::CLOSE, vec![0x03]);
        assert_eq!(answer(&h, &[truncated]).await, Some(1002));
    }
}

#[tokio::test]
async fn framing_violations_close_with_1002() {
    for h in nodes().await {
        let ping = json!({}).to_string();
        let cases: Vec<(&str, Vec<FrameBuilder>)> = vec![
            (
                "unmasked frame",
                vec![FrameBuilder::text(ping.clone()).unmasked()],
            ),
            ("RSV1", vec![FrameBuilder::text(ping.clone()).rsv(0b100)]),
            ("RSV2", vec![FrameBuilder::text(ping.clone()).rsv(0b010)]),
            (
                "RSV3 on a ping",
                vec![FrameBuilder::new(op::PING, b"x".to_vec()).rsv(0b001)],
            ),
            (
                "reserved data opcode",
                vec![FrameBuilder::new(0x3, b"x".to_vec())],
            ),
            (
                "reserved control opcode",
                vec![FrameBuilder::new(0xb, Vec::new())],
            ),
            (
                "fragmented ping",
                vec![FrameBuilder::new(op::PING, b"x".to_vec()).fin(false)],
            ),
            (
                "ping over 125 bytes",
                vec![FrameBuilder::new(op::PING, vec![b'x'; 126])],
            ),
            (
                "continuation with nothing to continue",
                vec![FrameBuilder::new(op::CONTINUATION, b"x".to_vec())],
            ),
            (
                "new message inside a fragmented one",
                vec![
                    FrameBuilder::text(b"{".to_vec()).fin(false),
                    FrameBuilder::text(b"}".to_vec()),
                ],
            ),
        ];
        for (name, frames) in cases {
            assert_eq!(answer(&h, &frames).await, Some(1002), "{name}");
        }
        assert!(h.metric("herald_disconnects_total{code=\"1002\"}").await >= 10.0);
    }
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    for h in nodes().await {
        let bad_text = FrameBuilder::text(vec![b'{', 0xff, 0xfe, b'}']);
        assert_eq!(answer(&h, &[bad_text]).await, Some(1007));
        // Split across fragments, each of them valid only together.
        let euro = "€".as_bytes();
        let split = vec![
            FrameBuilder::text(euro[..1].to_vec()).fin(false),
            FrameBuilder::new(op::CONTINUATION, vec![b'x']),
        ];
        assert_eq!(answer(&h, &split).await, Some(1007));
        // In a close reason.
        let bad_reason = FrameBuilder::close(1000, &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf]);
        assert_eq!(answer(&h, &[bad_reason]).await, Some(1007));
    }
}

#[tokio::test]
async fn an_oversize_frame_or_message_closes_with_1009() {
    for h in nodes().await {
        let big = FrameBuilder::text(vec![b' '; MAX_FRAME + 1]);
        assert_eq!(answer(&h, &[big]).await, Some(1009));
        // Fragments each under the limit, together over it.
        let half = MAX_FRAME / 2 + 1;
        let fragments = vec![
            FrameBuilder::text(vec![b' '; half]).fin(false),
            FrameBuilder::new(op::CONTINUATION, vec![b' '; half]),
        ];
        assert_eq!(answer(&h, &fragments).await, Some(1009));
        assert!(h.metric("herald_disconnects_total{code=\"1009\"}").await >= 2.0);
    }
}

#[tokio::test]
async fn protocol_errors_keep_their_centrifuge_code() {
    for h in nodes().await {
        assert_eq!(
            answer(&h, &[FrameBuilder::text(b"{not json".to_vec())]).await,
            Some(3501)
        );
        let binary = FrameBuilder::new(op::BINARY, vec![1, 2, 3]);
        assert_eq!(answer(&h, &[binary]).await, Some(3501));
    }
}

/// A client that is still sending when the server closes it (commands in flight, as
/// any client has) gets the Close frame with its code, and, once it answers with its own
/// Close, an orderly end of the TCP connection: the server reads what is still arriving
/// up to the client's Close instead of closing over unread bytes, which makes the kernel
/// reset the connection (and a reset can take the Close frame with it).
#[tokio::test]
async fn a_client_still_sending_gets_the_close_code_and_an_orderly_end() {
    for h in nodes().await {
        let mut wire = connected(&h).await;
        // One write: a malformed command (3501), then 90 KiB of commands behind it that
        // the server has not read when it decides to close.
        let mut burst = FrameBuilder::text(b"{not json".to_vec()).encode();
        for id in 0..2_000 {
            let command = json!({"id": 100 + id, "presence_stats": {"channel": "x"}});
            burst.extend(FrameBuilder::text(command.to_string()).encode());
        }
        assert!(burst.len() > 64 * 1024, "{}", burst.len());
        wire.send_bytes(&burst).await;
        let close = wire.close_frame().await;
        assert_eq!(close.close_code(), Some(3501));
        assert!(
            wire.try_send_bytes(&FrameBuilder::close(1000, b"").encode())
                .await,
            "the server reset the connection before the client's Close"
        );
        wire.orderly_end(TCP_CLOSE)
            .await
            .expect("an orderly end after the client's Close");
    }
}

#[tokio::test]
async fn pings_get_pongs_and_fragmented_messages_with_control_frames_between_work() {
    for h in nodes().await {
        let mut wire = connected(&h).await;
        wire.send(&FrameBuilder::new(op::PING, b"hi".to_vec()))
            .await;
        let pong = wire.frame(Duration::from_secs(5)).await.expect("pong");
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (op::PONG, &b"hi"[..])
        );
        // A command split over three fragments with a ping between them.
        let cmd = json!({"id": 2, "subscribe": {"channel": "news"}}).to_string();
        let (a, rest) = cmd.as_bytes().split_at(5);
        let (b, c) = rest.split_at(5);
        wire.send(&FrameBuilder::text(a.to_vec()).fin(false)).await;
        wire.send(&FrameBuilder::new(op::CONTINUATION, b.to_vec()).fin(false))
            .await;
        wire.send(&FrameBuilder::new(op::PING, Vec::new())).await;
        wire.send(&FrameBuilder::new(op::CONTINUATION, c.to_vec()))
            .await;
        let pong = wire.frame(Duration::from_secs(5)).await.expect("pong");
        assert_eq!(pong.opcode, op::PONG);
        let reply = wire.frame(Duration::from_secs(5)).await.expect("reply");
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
        assert_eq!(reply["id"], 2, "{reply}");
        assert!(reply.get("error").is_none(), "{reply}");
    }
}
