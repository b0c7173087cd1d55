//! The client frame decoder the gateway runs on every WebSocket text frame
//! (`herald_protocol::decode_commands`, then `Command::request`), the server frame decoder
//! the Rust client runs (`decode_replies`), and the round trip through `FrameWriter`:
//! whatever decodes, encoded again, decodes to the same messages.

#![no_main]

use herald_protocol::frame::FrameWriter;
use herald_protocol::{WireMessage, decode_commands, decode_replies};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time the gateway sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(commands) = decode_commands(text) {
        for command in &commands {
            let _ = command.request();
        }
        round_trip(&commands, decode_commands);
    }
    if let Ok(replies) = decode_replies(text) {
        round_trip(&replies, decode_replies);
    }
});

fn round_trip<T, E>(messages: &[T], decode: fn(&str) -> Result<Vec<T>, E>)
where
    T: WireMessage + DeserializeOwned + PartialEq + Debug,
    E: Debug,
{
    let mut writer = FrameWriter::with_capacity(256);
    for message in messages {
        writer.push(message).expect("a decoded message encodes");
    }
    let frame = writer.take();
    let text = std::str::from_utf8(&frame).expect("an encoded frame is UTF-8");
    let again = decode(text).expect("an encoded frame decodes");
    assert_eq!(messages, &again[..], "frame {text:?}");
}
