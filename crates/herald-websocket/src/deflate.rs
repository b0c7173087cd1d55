//! permessage-deflate (RFC 7692): choosing the answer to a client's offers, and
//! compressing and decompressing one message at a time.
//!
//! Both directions go without context takeover, so each message is a deflate stream of
//! its own: the per-thread compressor and decompressor are reset before each message
//! and no connection holds deflate state. Windows are 15 bits (the pure-Rust deflate
//! backend has no other size), so an offer that limits the server's window below that
//! is declined.

use crate::Error;
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// The answer to an accepted offer.
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The answer to an accepted offer that named the server's window size (15): a server
/// accepting that parameter says so (RFC 7692 7.1.2.1).
const ANSWER_WINDOW: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// What the empty stored block of a sync flush ends with: the sender strips it from
/// every message, the receiver puts it back (RFC 7692 7.2.1–7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// How a connection that negotiated permessage-deflate compresses what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// zlib level, 1 (fastest) to 9 (smallest).
    pub level: u32,
    /// Messages shorter than this go uncompressed (RSV1 clear), as the extension
    /// allows per message.
    pub min_bytes: usize,
}

impl Default for Deflate {
    fn default() -> Self {
        Deflate {
            level: 1,
            min_bytes: 128,
        }
    }
}

/// The `Sec-WebSocket-Extensions` answer to a client's offers (every value of its
/// header, in order): the first permessage-deflate offer whose parameters Herald can
/// honour is accepted, answered without context takeover both ways. `None` when no
/// offer fits; the connection then goes uncompressed, as the negotiation allows.
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
            {
                return None;
            }
            match acceptable(parts)? {
                true => Some(ANSWER_WINDOW),
                false => Some(ANSWER),
            }
        })
}

/// Whether an offer's parameters are known, each at most once, with values Herald can
/// honour: `None` if not, else whether it named the server's window size.
fn acceptable<'a>(params: impl Iterator<Item = &'a str>) -> Option<bool> {
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            // Herald compresses with a 15-bit window only.
            "server_max_window_bits" if value == Some("15") => 2,
            "client_max_window_bits" if value.is_none_or(window_bits) => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(seen[2])
}

/// A window size parameter's value: 8 to 15, in decimal without leading zeros.
fn window_bits(value: &str) -> bool {
    matches!(value, "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15")
}

/// Whether an answer to a client's offer (the client side of [`negotiate`]) is the one
/// a [`crate::WebSocket`] client can work with: permessage-deflate with
/// `server_no_context_takeover`, since the client decompresses each message on its own.
/// The client compresses with a 15-bit window, so an answer limiting its window below
/// that is not usable either.
pub(crate) fn answer_usable(answer: &str) -> bool {
    let mut parts = answer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    let mut no_takeover = false;
    for part in parts {
        let (name, value) = part.split_once('=').map_or((part, None), |(n, v)| {
            (n.trim(), Some(v.trim().trim_matches('"')))
        });
        if name.eq_ignore_ascii_case("server_no_context_takeover") {
            no_takeover = true;
        } else if name.eq_ignore_ascii_case("client_max_window_bits") && value != Some("15") {
            return false;
        }
    }
    no_takeover
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    /// The last message this thread compressed, with the result.
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
}

/// A message and its compressed form.
struct Last {
    level: u32,
    input: Bytes,
    output: Option<Bytes>,
}

/// [`compress`] through a one-message memory per thread: a fan-out sends the same
/// frame to many connections one after another, and without context takeover the same
/// message always compresses to the same bytes, so each thread compresses it once and
/// compares the rest (a comparison costs a small fraction of a compression). `None`
/// when the message does not compress.
pub(crate) fn compress_shared(input: &Bytes, level: u32) -> Option<Bytes> {
    LAST.with_borrow_mut(|last| {
        if let Some(l) = last
            && l.level == level
            && l.input == *input
        {
            return l.output.clone();
        }
        let mut out = Vec::new();
        let output =
            (compress(input, level, &mut out) && out.len() < input.len()).then(|| Bytes::from(out));
        *last = Some(Last {
            level,
            input: input.clone(),
            output: output.clone(),
        });
        output
    })
}

/// Compresses one message for a frame with RSV1 set, into `out` (cleared first).
/// `false` if the compressor failed, when the message is sent uncompressed instead.
pub(crate) fn compress(input: &[u8], level: u32, out: &mut Vec<u8>) -> bool {
    out.clear();
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            _ => {
                let c = Compress::new(Compression::new(level), false);
                &mut slot.insert((level, c)).1
            }
        };
        let mut consumed = 0;
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = compressor.total_in();
            if compressor
                .compress_vec(&input[consumed..], out, FlushCompress::Sync)
                .is_err()
            {
                return false;
            }
            consumed += usize::try_from(compressor.total_in() - before).unwrap_or(usize::MAX);
            // Done when all input went in and the flush did not fill the buffer.
            if consumed >= input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
            true
        } else {
            false
        }
    })
}

/// Decompresses one received message (its frames' payloads joined) into `out`
/// (cleared first), refusing to produce more than `max` bytes.
pub(crate) fn decompress(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), Error> {
    out.clear();
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => {
                d.reset(false);
                d
            }
            None => slot.insert(Decompress::new(false)),
        };
        for chunk in [input, &TAIL[..]] {
            let mut consumed = 0;
            loop {
                if out.len() == out.capacity() {
                    // Grow by doubling, never past one byte over the limit.
                    let room = (max + 1).saturating_sub(out.len());
                    if room == 0 {
                        return Err(Error::TooBig(max));
                    }
                    out.reserve_exact(room.min(out.len().max(chunk.len() * 2).max(1024)));
                }
                let (before_in, before_out) = (decompressor.total_in(), decompressor.total_out());
                let status = decompressor
                    .decompress_vec(&chunk[consumed..], out, FlushDecompress::Sync)
                    .map_err(|_| Error::Inflate)?;
                consumed +=
                    usize::try_from(decompressor.total_in() - before_in).unwrap_or(usize::MAX);
                if out.len() > max {
                    return Err(Error::TooBig(max));
                }
                match status {
                    // A final block (the sender may set BFINAL): the message ends here.
                    Status::StreamEnd => return Ok(()),
                    _ if consumed >= chunk.len() && out.len() < out.capacity() => break,
                    _ if decompressor.total_in() == before_in
                        && decompressor.total_out() == before_out
                        && out.len() < out.capacity() =>
                    {
                        return Err(Error::Inflate);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_first_offer_herald_can_honour() {
        // What browsers and Node's ws offer.
        assert_eq!(
            negotiate(["permessage-deflate; client_max_window_bits"]),
            Some(ANSWER)
        );
        assert_eq!(negotiate(["permessage-deflate"]), Some(ANSWER));
        assert_eq!(
            negotiate([
                "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits=12"
            ]),
            Some(ANSWER),
            "the second offer fits"
        );
        assert_eq!(
            negotiate([
                "x-webkit-deflate-frame",
                "PerMessage-Deflate; Server_No_Context_Takeover; client_no_context_takeover; server_max_window_bits=\"15\""
            ]),
            Some(ANSWER_WINDOW),
            "an accepted window size is named in the answer"
        );
        for refused in [
            "permessage-deflate; server_max_window_bits=12",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown_param",
            "deflate-frame",
            "",
        ] {
            assert_eq!(negotiate([refused]), None, "{refused}");
        }
        assert_eq!(negotiate(Vec::<&str>::new()), None);
    }

    #[test]
    fn the_answer_is_usable_by_a_client() {
        assert!(answer_usable(ANSWER));
        assert!(answer_usable(ANSWER_WINDOW));
        assert!(answer_usable(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=15"
        ));
        assert!(!answer_usable(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
        ));
        assert!(!answer_usable("permessage-deflate"));
        assert!(!answer_usable("something-else; server_no_context_takeover"));
    }

    fn roundtrip(input: &[u8], level: u32) -> usize {
        let mut compressed = Vec::new();
        assert!(compress(input, level, &mut compressed));
        let mut back = Vec::new();
        decompress(&compressed, input.len(), &mut back).unwrap();
        assert_eq!(back, input);
        compressed.len()
    }

    #[test]
    fn messages_roundtrip_each_on_its_own() {
        let json = br#"{"push":{"channel":"kpi:tiles","pub":{"data":{"value":1234,"unit":"ms"},"offset":17}}}"#.repeat(20);
        for level in [1, 6, 9] {
            let size = roundtrip(&json, level);
            assert!(size < json.len() / 5, "{size} of {}", json.len());
            roundtrip(b"", level);
            roundtrip(b"x", level);
            let noise: Vec<u8> = (0..100_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            roundtrip(&noise, level);
        }
    }

    #[test]
    fn a_repeated_message_is_compressed_once_per_thread() {
        let first = Bytes::from("{\"push\":{\"channel\":\"kpi\"}}".repeat(20));
        let a = compress_shared(&first, 1).unwrap();
        // Equal content in another buffer: the same compressed bytes, shared.
        let again = compress_shared(&Bytes::from(first.to_vec()), 1).unwrap();
        assert_eq!(a.as_ptr(), again.as_ptr(), "not compressed again");
        // Another message or level: compressed anew, and correct.
        let other = Bytes::from("{\"push\":{\"channel\":\"ops\"}}".repeat(20));
        let b = compress_shared(&other, 1).unwrap();
        let mut back = Vec::new();
        decompress(&b, other.len(), &mut back).unwrap();
        assert_eq!(back, other);
        let c = compress_shared(&other, 9).unwrap();
        assert_ne!(b.as_ptr(), c.as_ptr());
        // A message that does not get smaller is remembered as such.
        assert_eq!(compress_shared(&Bytes::from_static(b"x"), 1), None);
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let mut compressed = Vec::new();
        assert!(compress(&zeros, 9, &mut compressed));
        assert!(compressed.len() < 2048);
        let mut out = Vec::new();
        assert!(matches!(
            decompress(&compressed, 64 * 1024, &mut out),
            Err(Error::TooBig(_))
        ));
        assert!(out.capacity() <= 64 * 1024 + 1, "{}", out.capacity());
        decompress(&compressed, 1 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 1 << 20);
    }

    #[test]
    fn garbage_is_an_inflate_error() {
        let mut out = Vec::new();
        assert!(matches!(
            decompress(&[0xFF, 0xFF, 0xFF, 0xFF], 1000, &mut out),
            Err(Error::Inflate)
        ));
    }
}
