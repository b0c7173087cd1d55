//! `RawJson`: a JSON value carried through Herald verbatim, never re-parsed or re-encoded,
//! except that its line breaks become spaces.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

/// A piece of valid JSON text (publication `data`, `info`, ...) that Herald embeds in
/// frames as-is. Equality compares the text, so `{"a":1}` and `{ "a": 1 }` differ.
///
/// Line breaks are the one change: every transport separates messages with `\n` (JSON
/// frames, HTTP-streaming lines, SSE events), so a pretty-printed payload would split
/// into pieces. Valid JSON has line breaks only between tokens (inside strings they are
/// escaped), so each one is replaced by a space, which leaves the value the same.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

/// The text given to [`RawJson::from_string`] is not a single valid JSON value.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON: {0}")]
pub struct RawJsonError(#[source] serde_json::Error);

impl RawJson {
    /// Validates `text` as one JSON value and keeps it unchanged.
    pub fn from_string(text: String) -> Result<Self, RawJsonError> {
        RawValue::from_string(one_line(text))
            .map(Self)
            .map_err(RawJsonError)
    }

    /// Validates `bytes` as UTF-8 text holding one JSON value and keeps it unchanged
    /// (the Protobuf encoding carries payloads as bytes).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, RawJsonError> {
        match String::from_utf8(bytes) {
            Ok(text) => Self::from_string(text),
            Err(_) => Err(RawJsonError(serde::de::Error::custom("not UTF-8"))),
        }
    }

    /// Serializes any value into raw JSON.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, RawJsonError> {
        serde_json::value::to_raw_value(value)
            .map(Self)
            .map_err(RawJsonError)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// `null` as raw JSON.
    pub fn null() -> Self {
        Self(serde_json::value::to_raw_value(&()).unwrap_or_else(|_| unreachable_null()))
    }
}

// `()` always serializes to `null`; this keeps `null()` free of `unwrap`.
fn unreachable_null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable_null())
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !has_line_break(raw.get()) {
            return Ok(Self(raw));
        }
        RawValue::from_string(raw.get().replace(['\n', '\r'], " "))
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

fn has_line_break(text: &str) -> bool {
    text.bytes().any(|b| b == b'\n' || b == b'\r')
}

/// `text` with each line break replaced by a space (see [`RawJson`]).
fn one_line(text: String) -> String {
    if has_line_break(&text) {
        text.replace(['\n', '\r'], " ")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_become_spaces_and_nothing_else_changes() {
        let raw: RawJson =
            serde_json::from_str("{\n  \"text\": \"a\\nb\",\r\n  \"n\": 1\n}").expect("valid");
        assert_eq!(raw.get(), "{   \"text\": \"a\\nb\",    \"n\": 1 }");
        let value: serde_json::Value = serde_json::from_str(raw.get()).expect("still JSON");
        assert_eq!(value["text"], "a\nb");
        let direct = RawJson::from_string("[1,\n2]".to_owned()).expect("valid");
        assert_eq!(direct.get(), "[1, 2]");
    }

    #[test]
    fn keeps_text_verbatim() {
        let raw = RawJson::from_string(r#"{ "b": [1, 2] }"#.to_owned()).expect("valid");
        assert_eq!(raw.get(), r#"{ "b": [1, 2] }"#);
        assert_eq!(
            serde_json::to_string(&raw).expect("ser"),
            r#"{ "b": [1, 2] }"#
        );
    }

    #[test]
    fn rejects_invalid_and_trailing_text() {
        assert!(RawJson::from_string("{".to_owned()).is_err());
        assert!(RawJson::from_string("1 2".to_owned()).is_err());
        assert!(RawJson::from_string(String::new()).is_err());
    }

    #[test]
    fn bytes_must_be_utf8_json() {
        let raw = RawJson::from_bytes(br#"{"a":1}"#.to_vec()).expect("valid");
        assert_eq!(raw.get(), r#"{"a":1}"#);
        assert!(RawJson::from_bytes(vec![0xff, b'1']).is_err());
        assert!(RawJson::from_bytes(b"abc".to_vec()).is_err());
    }

    #[test]
    fn null_is_null() {
        assert_eq!(RawJson::null().get(), "null");
    }
}
