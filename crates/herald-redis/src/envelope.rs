//! The wire format between Redis and gateways: the MessagePack envelope the publish
//! function sends on pub/sub, and the fields of a stream entry.

use herald_protocol::{ClientInfo, Publication, RawJson};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The pub/sub envelope `[offset, epoch, data, info, tags]`, packed by `herald_publish`.
#[derive(Debug, Deserialize)]
struct Envelope(
    u64,
    #[serde(with = "serde_bytes")] Vec<u8>,
    #[serde(with = "serde_bytes")] Vec<u8>,
    #[serde(with = "serde_bytes")] Vec<u8>,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

/// A pub/sub message Herald cannot read (not published by `herald_publish`).
#[derive(Debug, thiserror::Error)]
#[error("malformed publication envelope")]
pub struct EnvelopeError(#[source] rmp_serde::decode::Error);

/// A decoded publication and the epoch of its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The publication.
    pub publication: Publication,
    /// Its epoch ("" without history).
    pub epoch: String,
}

/// What arrives on a channel's pub/sub: a publication, or a join/leave event, which
/// share the channel so they stay in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A publication.
    Publication(Decoded),
    /// A client joined or left.
    JoinLeave(herald_broker::JoinLeave),
}

/// Encodes a join/leave event: `["join"|"leave", info json]`.
pub fn encode_join_leave(event: &herald_broker::JoinLeave) -> Vec<u8> {
    let (kind, info) = match event {
        herald_broker::JoinLeave::Join(i) => ("join", i),
        herald_broker::JoinLeave::Leave(i) => ("leave", i),
    };
    rmp_serde::to_vec(&(kind, encode_info(Some(info)))).unwrap_or_default()
}

/// Decodes anything that arrives on a channel's pub/sub.
pub fn decode_incoming(bytes: &[u8]) -> Result<Incoming, EnvelopeError> {
    // A two-element array is a join/leave; publications have five elements.
    if let Ok((kind, info)) = rmp_serde::from_slice::<(String, String)>(bytes) {
        let info: ClientInfo = serde_json::from_str(&info).unwrap_or_default();
        return Ok(Incoming::JoinLeave(match kind.as_str() {
            "leave" => herald_broker::JoinLeave::Leave(info),
            _ => herald_broker::JoinLeave::Join(info),
        }));
    }
    decode_envelope(bytes).map(Incoming::Publication)
}

/// Decodes a pub/sub envelope.
pub fn decode_envelope(bytes: &[u8]) -> Result<Decoded, EnvelopeError> {
    let Envelope(offset, epoch, data, info, tags) =
        rmp_serde::from_slice(bytes).map_err(EnvelopeError)?;
    Ok(Decoded {
        publication: publication(offset, &data, &info, &tags),
        epoch: String::from_utf8_lossy(&epoch).into_owned(),
    })
}

/// Builds a publication from stored fields. Data that is not valid JSON (a foreign
/// publisher's mistake) is delivered as a JSON string of its text, so the offset
/// sequence stays whole; unreadable info or tags are left out.
pub fn publication(offset: u64, data: &[u8], info: &[u8], tags: &[u8]) -> Publication {
    let text = String::from_utf8_lossy(data).into_owned();
    let data = match RawJson::from_string(text.clone()) {
        Ok(raw) => raw,
        Err(_) => {
            tracing::warn!(
                offset,
                "publication data is not valid JSON; delivering it as a string"
            );
            RawJson::from_value(&text).unwrap_or_else(|_| RawJson::null())
        }
    };
    let info: Option<ClientInfo> = if info.is_empty() {
        None
    } else {
        serde_json::from_slice(info).ok()
    };
    let mut tags: BTreeMap<String, String> = if tags.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_slice(tags).unwrap_or_default()
    };
    // An empty origin is none, as `encode_tags` writes it.
    let origin = tags.remove(ORIGIN_TAG).filter(|o| !o.is_empty());
    Publication {
        data,
        info,
        offset,
        tags,
        delta: false,
        origin,
    }
}

/// Encodes publisher info for the publish function ("" when absent).
pub fn encode_info(info: Option<&ClientInfo>) -> String {
    info.and_then(|i| serde_json::to_string(i).ok())
        .unwrap_or_default()
}

/// The tag under which a publication's origin is stored with its tags (the stream
/// and the pub/sub envelope have no field of their own for it). A key no client or
/// API tag can have: the gateway refuses tags whose key starts with NUL. Decoding
/// moves it back out of the tags.
pub const ORIGIN_TAG: &str = "\u{0}origin";

/// Encodes tags, and the origin when there is one, for the publish function ("" when
/// neither).
pub fn encode_tags(tags: &BTreeMap<String, String>, origin: &str) -> String {
    if tags.is_empty() && origin.is_empty() {
        String::new()
    } else if origin.is_empty() {
        serde_json::to_string(tags).unwrap_or_default()
    } else {
        let mut with_origin = tags.clone();
        with_origin.insert(ORIGIN_TAG.to_owned(), origin.to_owned());
        serde_json::to_string(&with_origin).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(offset: u64, epoch: &str, data: &str, info: &str, tags: &str) -> Vec<u8> {
        // The same shape Lua's cmsgpack.pack({offset, epoch, data, info, tags}) writes.
        rmp_serde::to_vec(&(offset, epoch, data, info, tags)).expect("pack")
    }

    #[test]
    fn decodes_what_the_function_packs() {
        let info = encode_info(Some(&ClientInfo {
            user: "42".into(),
            client: "c".into(),
            ..ClientInfo::default()
        }));
        let tags = encode_tags(&BTreeMap::from([("k".to_owned(), "v".to_owned())]), "");
        let d = decode_envelope(&pack(7, "ep", r#"{"a":[1,2]}"#, &info, &tags)).expect("decode");
        assert_eq!(d.epoch, "ep");
        assert_eq!(d.publication.offset, 7);
        assert_eq!(d.publication.data.get(), r#"{"a":[1,2]}"#);
        assert_eq!(d.publication.info.expect("info").user, "42");
        assert_eq!(d.publication.tags.get("k").map(String::as_str), Some("v"));
        assert_eq!(d.publication.origin, None);
    }

    #[test]
    fn the_origin_travels_with_the_tags_and_comes_back_out_of_them() {
        let tags = encode_tags(&BTreeMap::from([("k".to_owned(), "v".to_owned())]), "tab-1");
        let d = decode_envelope(&pack(3, "ep", "1", "", &tags)).expect("decode");
        assert_eq!(d.publication.origin.as_deref(), Some("tab-1"));
        assert_eq!(
            d.publication.tags,
            BTreeMap::from([("k".to_owned(), "v".to_owned())])
        );
        let alone = encode_tags(&BTreeMap::new(), "42");
        let p = publication(4, b"1", b"", alone.as_bytes());
        assert_eq!(p.origin.as_deref(), Some("42"));
        assert!(p.tags.is_empty());
        assert_eq!(encode_tags(&BTreeMap::new(), ""), "");
    }

    #[test]
    fn keeps_big_numbers_verbatim_and_wraps_invalid_json() {
        let d = decode_envelope(&pack(1, "e", "123456789012345678901234567890", "", ""))
            .expect("decode");
        assert_eq!(d.publication.data.get(), "123456789012345678901234567890");
        let p = publication(2, b"not json", b"", b"");
        assert_eq!(p.data.get(), r#""not json""#);
        assert!(p.info.is_none() && p.tags.is_empty());
    }

    #[test]
    fn join_leave_round_trips_and_is_told_apart_from_publications() {
        let info = ClientInfo {
            user: "7".into(),
            client: "c".into(),
            ..ClientInfo::default()
        };
        let event = herald_broker::JoinLeave::Leave(info);
        assert_eq!(
            decode_incoming(&encode_join_leave(&event)).expect("decode"),
            Incoming::JoinLeave(event)
        );
        assert!(matches!(
            decode_incoming(&pack(3, "e", "1", "", "")),
            Ok(Incoming::Publication(_))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_envelope(b"\xc1garbage").is_err());
        assert!(decode_envelope(&rmp_serde::to_vec(&(1u64, "e")).expect("pack")).is_err());
    }
}
