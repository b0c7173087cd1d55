//! A server [`WebSocket`] against a client one and against frames written by hand.

use crate::frame::{self, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use crate::{CloseFrame, Config, Deflate, Error, Message, Role, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const MAX: usize = 64 * 1024;

fn config(role: Role, deflate: bool) -> Config {
    Config {
        role,
        max_message: MAX,
        read_buffer: 1024,
        write_buffer: 4096,
        deflate: deflate.then(Deflate::default),
    }
}

fn pair(deflate: bool) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (
        WebSocket::new(a, config(Role::Server, deflate), &[]),
        WebSocket::new(b, config(Role::Client, deflate), &[]),
    )
}

/// A server socket and the raw stream its client writes to.
fn server_and_raw(deflate: bool) -> (WebSocket<DuplexStream>, DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (WebSocket::new(a, config(Role::Server, deflate), &[]), b)
}

/// A masked client frame.
fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = BytesMut::new();
    frame::write_header(&mut out, fin, rsv1, opcode, payload.len(), Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    frame::apply_mask(&mut out[start..], mask);
    out.to_vec()
}

/// Reads the server's unmasked frames from the raw side until `n` have come.
async fn server_frames(raw: &mut DuplexStream, n: usize) -> Vec<(u8, bool, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < n {
        let mut chunk = [0u8; 4096];
        let read = raw.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the server closed after {} frames", frames.len());
        buf.extend_from_slice(&chunk[..read]);
        while let Some(h) = frame::parse(&buf, usize::MAX).unwrap() {
            if buf.len() < h.header_len + h.payload_len {
                break;
            }
            assert!(h.mask.is_none(), "server frames are not masked");
            frames.push((
                h.opcode,
                h.rsv1,
                buf[h.header_len..h.header_len + h.payload_len].to_vec(),
            ));
            buf.drain(..h.header_len + h.payload_len);
        }
    }
    frames
}

fn text(s: &str) -> Message {
    Message::Text(Bytes::copy_from_slice(s.as_bytes()))
}

#[tokio::test]
async fn messages_cross_both_ways_with_and_without_deflate() {
    for deflate in [false, true] {
        let (mut server, mut client) = pair(deflate);
        assert_eq!(server.compressed(), deflate);
        let long = "{\"push\":{\"channel\":\"kpi\",\"pub\":{\"data\":{\"value\":42}}}}".repeat(300);
        for message in [
            text(""),
            text("hello"),
            text(&long),
            Message::Binary(Bytes::from(vec![7u8; 50_000])),
        ] {
            server.send(message.clone()).await.unwrap();
            assert_eq!(client.next().await.unwrap().unwrap(), message);
            client.send(message.clone()).await.unwrap();
            assert_eq!(server.next().await.unwrap().unwrap(), message);
        }
    }
}

#[tokio::test]
async fn long_messages_are_compressed_short_ones_are_not() {
    let (mut server, mut raw) = server_and_raw(true);
    let long = "{\"value\":1234,\"unit\":\"ms\",\"trend\":\"flat\"}".repeat(50);
    server.send(text(&long)).await.unwrap();
    server.send(text("{}")).await.unwrap();
    let frames = server_frames(&mut raw, 2).await;
    assert!(frames[0].1, "RSV1 on the long message");
    assert!(
        frames[0].2.len() < long.len() / 10,
        "{} bytes",
        frames[0].2.len()
    );
    assert_eq!((frames[1].1, &frames[1].2[..]), (false, &b"{}"[..]));
}

#[tokio::test]
async fn fragments_reassemble_around_control_frames_and_pings_are_answered() {
    let (mut server, mut raw) = server_and_raw(false);
    let mut bytes = client_frame(false, false, TEXT, "héllo ".as_bytes());
    bytes.extend(client_frame(true, false, PING, b"p1"));
    // A two-byte character cut between frames.
    bytes.extend(client_frame(
        false,
        false,
        CONTINUATION,
        &"wörld".as_bytes()[..2],
    ));
    bytes.extend(client_frame(
        true,
        false,
        CONTINUATION,
        &"wörld".as_bytes()[2..],
    ));
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(server.next().await.unwrap().unwrap(), text("héllo wörld"));
    let frames = server_frames(&mut raw, 1).await;
    assert_eq!(frames[0], (PONG, false, b"p1".to_vec()));
}

#[tokio::test]
async fn a_compressed_message_may_come_in_fragments() {
    let message = "state ".repeat(500);
    let mut compressed = Vec::new();
    assert!(crate::deflate::compress(
        message.as_bytes(),
        6,
        &mut compressed
    ));
    let (first, rest) = compressed.split_at(compressed.len() / 2);
    let (mut server, mut raw) = server_and_raw(true);
    let mut bytes = client_frame(false, true, TEXT, first);
    bytes.extend(client_frame(true, false, CONTINUATION, rest));
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(server.next().await.unwrap().unwrap(), text(&message));
}

async fn error_for(bytes: Vec<u8>, deflate: bool) -> Error {
    let (mut server, mut raw) = server_and_raw(deflate);
    raw.write_all(&bytes).await.unwrap();
    let error = match server.next().await {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(
        server.next().await.is_none(),
        "nothing is read after an error"
    );
    error
}

#[tokio::test]
async fn broken_rules_are_errors() {
    let protocol = |e: Error| matches!(e, Error::Protocol(_));
    // Unmasked.
    assert!(protocol(
        error_for(vec![0x81, 0x02, b'h', b'i'], false).await
    ));
    // RSV1 without the extension, and on a control frame with it.
    assert!(protocol(
        error_for(client_frame(true, true, TEXT, b"x"), false).await
    ));
    assert!(protocol(
        error_for(client_frame(true, true, PING, b""), true).await
    ));
    // A continuation with nothing to continue; a new message inside a fragmented one.
    assert!(protocol(
        error_for(client_frame(true, false, CONTINUATION, b"x"), false).await
    ));
    let mut interleaved = client_frame(false, false, TEXT, b"a");
    interleaved.extend(client_frame(true, false, BINARY, b"b"));
    assert!(protocol(error_for(interleaved, false).await));
    // A one-byte Close.
    assert!(protocol(
        error_for(client_frame(true, false, CLOSE, b"x"), false).await
    ));
    // Invalid UTF-8, failing at the first fragment that shows it.
    assert!(matches!(
        error_for(client_frame(true, false, TEXT, &[0xC0, 0xAF]), false).await,
        Error::Utf8
    ));
    assert!(matches!(
        error_for(client_frame(false, false, TEXT, &[b'o', 0xFF]), false).await,
        Error::Utf8
    ));
    // Too big, as one frame and as fragments.
    assert!(matches!(
        error_for(client_frame(true, false, BINARY, &vec![0; MAX + 1]), false).await,
        Error::TooBig(MAX)
    ));
    let mut pieces = client_frame(false, false, BINARY, &vec![0; MAX / 2 + 1]);
    pieces.extend(client_frame(
        true,
        false,
        CONTINUATION,
        &vec![0; MAX / 2 + 1],
    ));
    assert!(matches!(error_for(pieces, false).await, Error::TooBig(MAX)));
    // A compression bomb stops at the limit.
    let mut bomb = Vec::new();
    assert!(crate::deflate::compress(
        &vec![b'a'; 10 * MAX],
        9,
        &mut bomb
    ));
    assert!(matches!(
        error_for(client_frame(true, true, TEXT, &bomb), true).await,
        Error::TooBig(MAX)
    ));
    // Not deflate at all.
    assert!(matches!(
        error_for(client_frame(true, true, BINARY, &[0xFF; 8]), true).await,
        Error::Inflate
    ));
}

#[tokio::test]
async fn a_close_is_echoed_or_answered_with_1002() {
    for (payload, answer) in [
        (
            &[0x03, 0xE8, b'b', b'y', b'e'][..],
            &[0x03, 0xE8, b'b', b'y', b'e'][..],
        ),
        (&[][..], &[][..]),
        // 1005 may not be sent.
        (&[0x03, 0xED][..], &[0x03, 0xEA][..]),
    ] {
        let (mut server, mut raw) = server_and_raw(false);
        raw.write_all(&client_frame(true, false, CLOSE, payload))
            .await
            .unwrap();
        let expected = match payload {
            [] => None,
            [hi, lo, reason @ ..] => Some(CloseFrame {
                code: u16::from_be_bytes([*hi, *lo]),
                reason: String::from_utf8(reason.to_vec()).unwrap(),
            }),
            _ => unreachable!(),
        };
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            Message::Close(expected)
        );
        assert!(server.next().await.is_none());
        server.close().await.unwrap();
        assert_eq!(
            server_frames(&mut raw, 1).await[0],
            (CLOSE, false, answer.to_vec())
        );
        assert!(matches!(
            server.send(text("late")).await,
            Err(Error::Closing)
        ));
    }
}

#[tokio::test]
async fn a_server_close_carries_its_code_and_a_cut_reason() {
    let (mut server, mut raw) = server_and_raw(false);
    let reason = "é".repeat(100);
    server
        .send(Message::Close(Some(CloseFrame {
            code: 3001,
            reason: reason.clone(),
        })))
        .await
        .unwrap();
    let (opcode, _, payload) = server_frames(&mut raw, 1).await.remove(0);
    assert_eq!(opcode, CLOSE);
    assert_eq!(payload[..2], 3001u16.to_be_bytes());
    assert_eq!(payload.len(), 2 + 122, "123 bytes would split a character");
    assert!(reason.starts_with(std::str::from_utf8(&payload[2..]).unwrap()));
}

#[tokio::test]
async fn the_end_of_the_stream_without_a_close_ends_the_messages() {
    let (mut server, raw) = server_and_raw(false);
    drop(raw);
    assert!(server.next().await.is_none());
}

#[tokio::test]
async fn bytes_read_past_the_handshake_are_not_lost() {
    let (a, mut raw) = tokio::io::duplex(1024);
    let first = client_frame(true, false, TEXT, b"first");
    let mut server = WebSocket::new(a, config(Role::Server, false), &first);
    raw.write_all(&client_frame(true, false, TEXT, b"second"))
        .await
        .unwrap();
    assert_eq!(server.next().await.unwrap().unwrap(), text("first"));
    assert_eq!(server.next().await.unwrap().unwrap(), text("second"));
}

#[tokio::test]
async fn a_peer_that_pings_without_reading_cannot_fill_the_server() {
    // A small pipe that the client side never reads from.
    let (a, mut raw) = tokio::io::duplex(2048);
    let mut server = WebSocket::new(a, config(Role::Server, false), &[]);
    let pinger = tokio::spawn(async move {
        let ping = client_frame(true, false, PING, &[7; 125]);
        for _ in 0..20_000 {
            if raw.write_all(&ping).await.is_err() {
                break;
            }
        }
        raw
    });
    // The server reads until its pongs cannot go out, then stops reading.
    let waited = tokio::time::timeout(std::time::Duration::from_millis(300), server.next()).await;
    assert!(
        waited.is_err(),
        "no message, no error: the server just waits"
    );
    let (queued, _) = server.write_buffer();
    assert!(queued < 4096 + 200, "{queued} bytes of pongs queued");
    assert!(
        !pinger.is_finished(),
        "the pinger is held back, not absorbed"
    );
    pinger.abort();
}

#[tokio::test]
async fn a_written_buffer_is_let_go() {
    let (mut server, mut raw) = server_and_raw(false);
    let reader = tokio::spawn(async move {
        let frames = server_frames(&mut raw, 1).await;
        (frames, raw)
    });
    server
        .send(Message::Binary(Bytes::from(vec![1u8; 300_000])))
        .await
        .unwrap();
    let (frames, _raw) = reader.await.unwrap();
    assert_eq!(frames[0].2.len(), 300_000);
    assert_eq!(
        server.write_buffer(),
        (0, 0),
        "the 300 KB buffer was dropped"
    );
    server.send(text("small")).await.unwrap();
    assert_eq!(
        server.write_buffer(),
        (0, 0),
        "an idle connection keeps no write buffer"
    );
}

#[tokio::test]
async fn a_connection_between_messages_holds_no_read_buffer() {
    let (mut server, mut raw) = server_and_raw(false);
    // A message in one piece, then one larger than a scratch read, in pieces.
    raw.write_all(&client_frame(true, false, TEXT, b"hello"))
        .await
        .unwrap();
    assert_eq!(server.next().await.unwrap().unwrap(), text("hello"));
    assert_eq!(server.read_buffer(), (0, 0), "nothing kept after a message");
    let big = "x".repeat(crate::socket::SCRATCH_BYTES * 3);
    let frame = client_frame(true, false, TEXT, big.as_bytes());
    let writer = tokio::spawn(async move {
        for piece in frame.chunks(1000) {
            raw.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        raw
    });
    assert_eq!(server.next().await.unwrap().unwrap(), text(&big));
    let _raw = writer.await.unwrap();
    // The next poll finds nothing to read and lets the last allocation go.
    let polled = tokio::time::timeout(std::time::Duration::from_millis(20), server.next()).await;
    assert!(polled.is_err(), "no message is waiting");
    assert_eq!(server.read_buffer(), (0, 0), "nothing kept while waiting");
}
