//! The fossil patch decoder (`herald_protocol::fossil::apply`, which a client runs on
//! every delta publication it receives) and the encoder. Input: `source NUL rest`, or
//! all of it as `rest` with an empty source when there is no NUL. `rest` is applied to
//! the source as a patch (any error is fine, a panic is not), then used as a target:
//! its patch against the source must rebuild exactly it, and be UTF-8 when it is.

#![no_main]

use herald_protocol::fossil::{apply, create};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (source, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    if let Ok(out) = apply(source, rest) {
        // The output is bounded by the inputs: a copy takes at least four patch bytes and
        // yields at most the whole source, an insert yields its own bytes.
        assert!(out.len() <= source.len() * rest.len() + rest.len());
    }
    let patch = create(source, rest);
    assert_eq!(apply(source, &patch).as_deref(), Ok(rest), "round trip");
    if std::str::from_utf8(rest).is_ok() {
        assert!(
            std::str::from_utf8(&patch).is_ok(),
            "a text target's patch is text"
        );
    }
});
