//! Fossil delta delivery for the JSON protocol: a delta subscriber receives every
//! publication's `data` as a JSON string, holding either the full JSON text or a patch
//! against the previous publication it received. The hub builds both forms of a
//! publication at most once per node, on first use, whatever the number of subscribers.

use bytes::Bytes;
use herald_broker::StoredPublication;
use herald_protocol::{Publication, RawJson, fossil};
use std::sync::{Arc, OnceLock};

/// The two delta forms of one publication, shared by the delta subscribers of a node.
#[derive(Debug)]
pub(crate) struct DeltaForms {
    current: Arc<StoredPublication>,
    /// The channel's previous publication (the offset before, same epoch), when this
    /// node received it: the base every patch is made against.
    base: Option<Arc<StoredPublication>>,
    full: OnceLock<Bytes>,
    patch: OnceLock<Option<Bytes>>,
}

impl DeltaForms {
    /// The forms of `current`; `previous` (the channel's last publication this node
    /// received) becomes the patch base only when it immediately precedes `current`.
    pub(crate) fn new(
        current: Arc<StoredPublication>,
        previous: Option<Arc<StoredPublication>>,
    ) -> Self {
        let offset = current.publication.offset;
        let base = previous.filter(|p| {
            offset > 0 && p.publication.offset + 1 == offset && p.epoch == current.epoch
        });
        Self {
            current,
            base,
            full: OnceLock::new(),
            patch: OnceLock::new(),
        }
    }

    /// The push whose `data` is the full JSON text as a string.
    pub(crate) fn full(&self, channel: &str) -> &Bytes {
        self.full.get_or_init(|| {
            let publication = as_string(&self.current.publication);
            crate::hub::encode_publication(channel, &publication)
        })
    }

    /// The push whose `data` is a patch against the previous offset's publication, or
    /// `None` when this node did not see that publication or the patch saves nothing.
    pub(crate) fn patch(&self, channel: &str) -> Option<&Bytes> {
        self.patch
            .get_or_init(|| {
                let base = self.base.as_ref()?;
                let publication = as_patch(&base.publication.data, &self.current.publication)?;
                Some(crate::hub::encode_publication(channel, &publication))
            })
            .as_ref()
    }
}

/// The publication with its data as one JSON string holding the JSON text.
fn as_string(publication: &Publication) -> Publication {
    Publication {
        data: string_of(publication.data.get()),
        delta: false,
        ..publication.clone()
    }
}

/// The publication with its data as a patch against `base`, unless the patch is not
/// smaller than the data itself.
fn as_patch(base: &RawJson, publication: &Publication) -> Option<Publication> {
    let target = publication.data.get();
    let patch = fossil::create(base.get().as_bytes(), target.as_bytes());
    if patch.len() >= target.len() {
        return None;
    }
    // The target is JSON text, hence UTF-8, and `create` keeps patches of UTF-8 text
    // UTF-8; a failure here would only cost the saving.
    let patch = String::from_utf8(patch).ok()?;
    Some(Publication {
        data: string_of(&patch),
        delta: true,
        ..publication.clone()
    })
}

fn string_of(text: &str) -> RawJson {
    // A string always serializes; `null` would only stand in for an impossible failure.
    RawJson::from_value(text).unwrap_or_else(|_| RawJson::null())
}

/// Recovered publications for a delta subscription: the first with its full text, each
/// later one patched against the one before it (or full when that saves nothing).
pub(crate) fn recovered(publications: Vec<Publication>) -> Vec<Publication> {
    let mut out = Vec::with_capacity(publications.len());
    let mut previous: Option<RawJson> = None;
    for publication in publications {
        let sent = previous
            .as_ref()
            .and_then(|base| as_patch(base, &publication))
            .unwrap_or_else(|| as_string(&publication));
        previous = Some(publication.data);
        out.push(sent);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(offset: u64, epoch: &str, data: &str) -> Arc<StoredPublication> {
        Arc::new(StoredPublication {
            publication: Publication {
                data: RawJson::from_string(data.to_owned()).expect("json"),
                info: None,
                offset,
                tags: Default::default(),
                delta: false,
                origin: None,
            },
            epoch: epoch.to_owned(),
        })
    }

    fn state(n: u32) -> String {
        // One of forty values differs between two states.
        let fields: Vec<String> = (0..40)
            .map(|i| format!("\"k{i}\":{}", if i == n % 40 { n * 7919 } else { i * 1000 }))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    fn pub_of(frame: &Bytes) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(frame).expect("json");
        v["push"]["pub"].clone()
    }

    #[test]
    fn full_form_carries_the_text_as_a_string() {
        let forms = DeltaForms::new(stored(3, "e", r#"{"a": [1, "é"]}"#), None);
        let p = pub_of(forms.full("ch"));
        assert_eq!(p["data"], r#"{"a": [1, "é"]}"#);
        assert_eq!(p["offset"], 3);
        assert!(p.get("delta").is_none());
        assert!(forms.patch("ch").is_none(), "no base, no patch");
    }

    #[test]
    fn patch_form_applies_to_the_previous_text() {
        let (a, b) = (state(1), state(2));
        let forms = DeltaForms::new(stored(5, "e", &b), Some(stored(4, "e", &a)));
        let p = pub_of(forms.patch("ch").expect("patch"));
        assert_eq!(p["delta"], true);
        let patch = p["data"].as_str().expect("string");
        assert!(patch.len() < b.len() / 2);
        let out = fossil::apply(a.as_bytes(), patch.as_bytes()).expect("applies");
        assert_eq!(out, b.as_bytes());
    }

    #[test]
    fn only_the_immediately_preceding_publication_is_a_base() {
        let (a, b) = (state(1), state(2));
        for previous in [
            stored(3, "e", &a),
            stored(4, "other", &a),
            stored(5, "e", &a),
        ] {
            let forms = DeltaForms::new(stored(5, "e", &b), Some(previous));
            assert!(forms.patch("ch").is_none());
        }
    }

    #[test]
    fn a_patch_that_saves_nothing_is_not_sent() {
        let forms = DeltaForms::new(stored(2, "e", "[1,2]"), Some(stored(1, "e", "[3,4]")));
        assert!(forms.patch("ch").is_none());
    }

    #[test]
    fn recovery_starts_full_then_patches() {
        let texts = [state(1), state(2), "[]".to_owned(), state(3)];
        let pubs: Vec<Publication> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| stored(i as u64 + 1, "e", t).publication.clone())
            .collect();
        let out = recovered(pubs);
        let flags: Vec<bool> = out.iter().map(|p| p.delta).collect();
        assert_eq!(flags, [false, true, false, false]);
        let mut previous: Vec<u8> = Vec::new();
        for (p, text) in out.iter().zip(&texts) {
            let data: String = serde_json::from_str(p.data.get()).expect("a string");
            let full = if p.delta {
                fossil::apply(&previous, data.as_bytes()).expect("applies")
            } else {
                data.into_bytes()
            };
            assert_eq!(full, text.as_bytes());
            previous = full;
        }
    }
}
