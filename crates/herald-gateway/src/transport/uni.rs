//! The unidirectional protocol: clients without an SDK send one connect request and
//! then only read. They get bare pushes (`{"connect":…}` first, then `{"channel":…,
//! "pub":…}` and the rest), `{}` as the ping, and `{"disconnect":…}` last. This module
//! turns what the connection task writes into that form, and adapts a WebSocket to it.

use crate::transport::websocket::AnySocket;
use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use herald_protocol::{Disconnect, DisconnectCode, ErrorCode, Reply};
use serde::Serialize;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What one reply of the connection task becomes for a unidirectional client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UniLine {
    /// Send this message.
    Send(String),
    /// Nothing to send (a reply the client never asked for).
    Skip,
    /// Send this disconnect (its message, and its code for a close frame) and end the
    /// stream.
    End(String, u16),
}

/// The connect command the connection task reads for a unidirectional connect request
/// (a bare `ConnectRequest` object; empty means `{}`).
///
/// The request is re-encoded on one line: pasted as it came, a pretty-printed request
/// would be split at its line breaks, and a request with a line break of its own could
/// carry further commands past the connect. Text that is not JSON at all is passed as
/// a JSON string, which the connection task refuses as it refuses any malformed
/// connect (3501).
pub(crate) fn connect_command(request: &str) -> String {
    let request = request.trim();
    let value = if request.is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(request).unwrap_or_else(|_| serde_json::Value::String(request.into()))
    };
    serde_json::json!({ "id": 1, "connect": value }).to_string()
}

/// The disconnect message of the unidirectional protocol.
pub(crate) fn disconnect(disconnect: &Disconnect) -> String {
    #[derive(Serialize)]
    struct Bare<'a> {
        disconnect: &'a Disconnect,
    }
    serde_json::to_string(&Bare { disconnect }).unwrap_or_default()
}

/// Converts one encoded reply (one line of a frame).
pub(crate) fn convert(line: &str) -> UniLine {
    // Pushes are by far the most common: unwrapped by slicing, not re-encoded. Herald's
    // encoder writes a push as exactly `{"push":<push>}`.
    if let Some(inner) = line
        .strip_prefix("{\"push\":")
        .and_then(|rest| rest.strip_suffix('}'))
    {
        return UniLine::Send(inner.to_owned());
    }
    if line == "{}" {
        return UniLine::Send(line.to_owned());
    }
    // Replies are rare: the one to the connect command, or an error.
    let Ok(reply) = serde_json::from_str::<Reply>(line) else {
        return UniLine::Skip;
    };
    if let Some(error) = reply.error {
        let code = ErrorCode::ALL
            .into_iter()
            .find(|c| c.code() == error.code)
            .map_or(DisconnectCode::Internal, refusal);
        let message = disconnect(&Disconnect {
            code: u32::from(code.code()),
            reason: code.reason().to_owned(),
        });
        return UniLine::End(message, code.code());
    }
    if let Some(connect) = reply.connect {
        #[derive(Serialize)]
        struct Bare {
            connect: herald_protocol::ConnectResult,
        }
        return serde_json::to_string(&Bare { connect }).map_or(UniLine::Skip, UniLine::Send);
    }
    UniLine::Skip
}

/// The close code for a unidirectional client whose connect (or a channel it asked
/// for) was refused with `code`: it cannot read error replies, only a disconnect.
pub(crate) fn refusal(code: ErrorCode) -> DisconnectCode {
    match code {
        ErrorCode::TokenExpired | ErrorCode::Expired => DisconnectCode::Expired,
        ErrorCode::TooManyRequests => DisconnectCode::TooManyRequests,
        ErrorCode::Unauthorized | ErrorCode::PermissionDenied | ErrorCode::UnknownChannel => {
            DisconnectCode::PermissionDenied
        }
        ErrorCode::UnrecoverablePosition => DisconnectCode::InsufficientState,
        ErrorCode::Internal => DisconnectCode::Internal,
        _ => DisconnectCode::BadRequest,
    }
}

/// A WebSocket speaking the unidirectional protocol, as the connection task's socket:
/// the first text message (or the `cf_connect` query parameter) is the connect request;
/// later messages are ignored; each push goes out as a text message of its own.
pub(crate) struct UniWebSocket {
    socket: AnySocket,
    /// The connect request from the URL, read before the socket.
    pending: Option<String>,
    connected: bool,
    ended: bool,
}

impl UniWebSocket {
    /// Wraps `socket`, with the connect request from the URL if there was one.
    pub(crate) fn new(socket: AnySocket, connect: Option<String>) -> Self {
        Self {
            socket,
            connected: connect.is_some(),
            pending: connect.map(|c| connect_command(&c)),
            ended: false,
        }
    }
}

impl Stream for UniWebSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(command) = self.pending.take() {
            return Poll::Ready(Some(Ok(Message::Text(command.into()))));
        }
        loop {
            match Pin::new(&mut self.socket).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Text(text)))) if !self.connected => {
                    self.connected = true;
                    let command = connect_command(text.as_str());
                    return Poll::Ready(Some(Ok(Message::Text(command.into()))));
                }
                // After the connect request the client has nothing to say.
                Poll::Ready(Some(Ok(Message::Text(_) | Message::Binary(_)))) => continue,
                other => return other,
            }
        }
    }
}

impl Sink<Message> for UniWebSocket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.socket).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), axum::Error> {
        let Message::Text(frame) = item else {
            if let Message::Close(Some(close)) = &item {
                // The close frame says it too, but clients reading only messages see this.
                let text = disconnect(&Disconnect {
                    code: u32::from(close.code),
                    reason: close.reason.as_str().to_owned(),
                });
                Pin::new(&mut self.socket).start_send(Message::Text(text.into()))?;
                // The sink was made ready once; the close is queued behind the message
                // by the library's own buffer.
                return Pin::new(&mut self.socket).start_send(item);
            }
            return Pin::new(&mut self.socket).start_send(item);
        };
        for line in frame.as_str().split('\n') {
            match convert(line) {
                UniLine::Send(text) => {
                    Pin::new(&mut self.socket).start_send(Message::Text(text.into()))?;
                }
                UniLine::Skip => {}
                UniLine::End(text, code) => {
                    self.ended = true;
                    // The message for clients that read only messages, then the close
                    // frame with the same code (queued behind it in the library's
                    // buffer, written by the flush that follows).
                    Pin::new(&mut self.socket).start_send(Message::Text(text.into()))?;
                    let reason = DisconnectCode::from_code(code).map_or("", DisconnectCode::reason);
                    let close = axum::extract::ws::CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    return Pin::new(&mut self.socket).start_send(Message::Close(Some(close)));
                }
            }
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.socket).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_unwrapped_and_pings_kept() {
        assert_eq!(
            convert(r#"{"push":{"channel":"news","pub":{"data":{"a":1},"offset":3}}}"#),
            UniLine::Send(r#"{"channel":"news","pub":{"data":{"a":1},"offset":3}}"#.to_owned())
        );
        assert_eq!(convert("{}"), UniLine::Send("{}".to_owned()));
    }

    #[test]
    fn the_connect_reply_becomes_a_connect_push() {
        let line = r#"{"id":1,"connect":{"client":"c1","version":"1","ping":25,"session":"s1"}}"#;
        let UniLine::Send(text) = convert(line) else {
            panic!("sent");
        };
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["connect"]["client"], "c1");
        assert_eq!(value["connect"]["session"], "s1");
        assert!(value.get("id").is_none());
    }

    #[test]
    fn an_error_reply_ends_the_stream_with_a_disconnect() {
        assert_eq!(
            convert(r#"{"id":1,"error":{"code":109,"message":"token expired"}}"#),
            UniLine::End(
                r#"{"disconnect":{"code":3005,"reason":"connection expired"}}"#.to_owned(),
                3005
            )
        );
        assert_eq!(
            convert(r#"{"id":1,"error":{"code":103,"message":"permission denied"}}"#),
            UniLine::End(
                r#"{"disconnect":{"code":3507,"reason":"permission denied"}}"#.to_owned(),
                3507
            )
        );
    }

    #[test]
    fn a_connect_request_becomes_the_connect_command() {
        let parsed = |text: &str| -> serde_json::Value {
            serde_json::from_str(&connect_command(text)).expect("one JSON object")
        };
        assert_eq!(parsed("")["connect"], serde_json::json!({}));
        assert_eq!(parsed(r#" {"token":"t"} "#)["connect"]["token"], "t");
        // Pretty-printed: one line, the same request.
        let pretty = "{\n  \"token\": \"t\",\n  \"subs\": {\"news\": {}}\n}";
        assert!(!connect_command(pretty).contains('\n'));
        assert_eq!(
            parsed(pretty)["connect"]["subs"]["news"],
            serde_json::json!({})
        );
        // A second command smuggled after a line break is not a command.
        let smuggled = "{}\n{\"id\":2,\"publish\":{\"channel\":\"c\",\"data\":1}}";
        let command = connect_command(smuggled);
        assert!(!command.contains('\n'));
        // It is one malformed connect (refused with 3501), not two commands.
        assert!(herald_protocol::decode_commands(&command).is_err());
        // Not JSON: a string in the connect field, refused downstream.
        assert_eq!(parsed("not json")["connect"], "not json");
    }
}
