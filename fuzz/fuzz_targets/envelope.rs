//! The Redis envelope decoder (`herald_redis::envelope`): what arrives on a channel's
//! pub/sub (a MessagePack publication envelope or a join/leave event), and the stored
//! fields of a stream entry. Whatever decodes, packed again the way `herald.lua` packs
//! it, decodes to the same thing.

#![no_main]

use herald_redis::envelope::{
    Decoded, Incoming, decode_envelope, decode_incoming, encode_info, encode_join_leave,
    encode_tags, publication,
};
use libfuzzer_sys::fuzz_target;

/// `cmsgpack.pack({offset, epoch, data, info, tags})`, as the publish function does (the
/// origin travels in the tags).
fn pack(decoded: &Decoded) -> Vec<u8> {
    let p = &decoded.publication;
    rmp_serde::to_vec(&(
        p.offset,
        decoded.epoch.as_str(),
        p.data.get(),
        encode_info(p.info.as_ref()),
        encode_tags(&p.tags, p.origin.as_deref().unwrap_or_default()),
    ))
    .expect("an envelope packs")
}

fuzz_target!(|data: &[u8]| {
    match decode_incoming(data) {
        Ok(Incoming::Publication(decoded)) => {
            assert_eq!(decode_envelope(&pack(&decoded)).expect("repacked"), decoded);
        }
        Ok(Incoming::JoinLeave(event)) => {
            let again = decode_incoming(&encode_join_leave(&event)).expect("re-encoded");
            assert_eq!(again, Incoming::JoinLeave(event));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(decoded) = decode_envelope(data) {
        assert_eq!(decode_envelope(&pack(&decoded)).expect("repacked"), decoded);
    }
    // A stream entry's fields (data, info, tags), as history reads take them apart:
    // here the input split at its first two NUL bytes.
    let mut fields = data.splitn(3, |&b| b == 0);
    let (d, i, t) = (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    let p = publication(7, d, i, t);
    let decoded = Decoded {
        publication: p,
        epoch: "e".to_owned(),
    };
    assert_eq!(decode_envelope(&pack(&decoded)).expect("repacked"), decoded);
});
