//! The Protobuf frame decoder the gateway runs on every binary WebSocket frame
//! (`herald_protocol::protobuf::decode_commands`, then `Command::request`), the server
//! frame decoder a Protobuf client runs (`protobuf::decode_replies`), and the round trip
//! through a Protobuf `FrameWriter`: whatever decodes, encoded again, decodes to the same
//! messages. The input is the frame's bytes, as they arrive.

#![no_main]

use herald_protocol::protobuf::{decode_commands, decode_replies};
use herald_protocol::{Encoding, FrameWriter, WireMessage};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

fuzz_target!(|data: &[u8]| {
    if let Ok(commands) = decode_commands(data) {
        let commands: Vec<_> = commands.into_iter().filter_map(Result::ok).collect();
        for command in &commands {
            let _ = command.request();
        }
        if !commands.is_empty() {
            round_trip(&commands, |frame| {
                decode_commands(frame).map(|cs| {
                    cs.into_iter()
                        .map(|c| c.expect("an encoded payload is JSON"))
                        .collect()
                })
            });
        }
    }
    if let Ok(replies) = decode_replies(data) {
        round_trip(&replies, decode_replies);
    }
});

fn round_trip<T, E>(messages: &[T], decode: impl Fn(&[u8]) -> Result<Vec<T>, E>)
where
    T: WireMessage + PartialEq + Debug,
    E: Debug,
{
    let mut writer = FrameWriter::new(Encoding::Protobuf, 256);
    for message in messages {
        writer.push(message).expect("Protobuf encoding cannot fail");
    }
    let frame = writer.take();
    let again = decode(&frame).expect("an encoded frame decodes");
    assert_eq!(messages, &again[..], "frame {frame:?}");
}
