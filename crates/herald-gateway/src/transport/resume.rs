//! Resuming a unidirectional SSE client after the browser reconnects by itself.
//!
//! An `EventSource` reopens its URL after a drop, with the `cf_connect` request it was
//! created with, whose positions are stale by then. So each publication event carries
//! an `id:` naming the stream's position in every channel of the connection; the
//! browser sends the last one back as `Last-Event-ID`, and the new connection recovers
//! each channel from there: every publication once, with no application code.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest `Last-Event-ID` read; a longer one is ignored (the connect request's own
/// positions apply).
const MAX_ID_BYTES: usize = 8 * 1024;

/// A channel's position: the last offset seen and the stream's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position(pub u64, pub String);

/// Positions by channel.
pub(crate) type Positions = BTreeMap<String, Position>;

/// The positions an event id names, if it is one Herald wrote.
pub(crate) fn decode(id: &str) -> Option<Positions> {
    if id.len() > MAX_ID_BYTES {
        return None;
    }
    serde_json::from_str(id).ok()
}

/// Follows the positions of one SSE stream from the pushes written to it.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    positions: Positions,
}

#[derive(Deserialize)]
struct ConnectPush {
    connect: ConnectSubs,
}

#[derive(Deserialize)]
struct ConnectSubs {
    #[serde(default)]
    subs: BTreeMap<String, SubPosition>,
}

#[derive(Deserialize)]
struct SubPosition {
    #[serde(default)]
    positioned: bool,
    #[serde(default)]
    recoverable: bool,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    publications: Vec<PubOffset>,
}

#[derive(Deserialize)]
struct PubOffset {
    #[serde(default)]
    offset: u64,
}

#[derive(Deserialize)]
struct ChannelPush {
    channel: String,
    #[serde(rename = "pub")]
    publication: Option<PubOffset>,
    unsubscribe: Option<serde::de::IgnoredAny>,
}

impl Tracker {
    /// Notes what one push (unidirectional form) changes. Returns the event id to write
    /// with it: for a publication, the positions after it.
    pub(crate) fn observe(&mut self, push: &str) -> Option<String> {
        if push.starts_with("{\"connect\":") {
            if let Ok(connect) = serde_json::from_str::<ConnectPush>(push) {
                for (channel, sub) in connect.connect.subs {
                    if sub.positioned || sub.recoverable {
                        // Recovered publications come in the connect push itself, and
                        // the live ones continue from the last of them.
                        let offset = sub.publications.last().map_or(sub.offset, |p| p.offset);
                        self.positions.insert(channel, Position(offset, sub.epoch));
                    }
                }
            }
            return if self.positions.is_empty() {
                None
            } else {
                self.usable_id()
            };
        }
        if !push.starts_with("{\"channel\":") {
            return None;
        }
        let parsed = serde_json::from_str::<ChannelPush>(push).ok()?;
        if parsed.unsubscribe.is_some() {
            self.positions.remove(&parsed.channel);
            return None;
        }
        let offset = parsed.publication?.offset;
        let position = self.positions.get_mut(&parsed.channel)?;
        position.0 = offset;
        self.usable_id()
    }

    fn id(&self) -> String {
        serde_json::to_string(&self.positions).unwrap_or_default()
    }

    /// The id to write, unless it is too long to be read back (see [`decode`]).
    fn usable_id(&self) -> Option<String> {
        Some(self.id()).filter(|id| id.len() <= MAX_ID_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_advance_the_id_and_the_id_decodes() {
        let mut tracker = Tracker::default();
        let id = tracker.observe(
            r#"{"connect":{"client":"c","subs":{"news":{"recoverable":true,"positioned":true,"epoch":"E1","offset":4},"plain":{}}}}"#,
        );
        assert_eq!(id.as_deref(), Some(r#"{"news":[4,"E1"]}"#));
        let id = tracker
            .observe(r#"{"channel":"news","pub":{"data":{"a":"}"},"offset":5}}"#)
            .expect("an id");
        let positions = decode(&id).expect("decodes");
        assert_eq!(positions["news"], Position(5, "E1".into()));
        // Channels without history have no position; pings and joins carry no id.
        assert_eq!(
            tracker.observe(r#"{"channel":"plain","pub":{"data":1}}"#),
            None
        );
        assert_eq!(tracker.observe("{}"), None);
        assert_eq!(
            tracker.observe(r#"{"channel":"news","join":{"info":{"user":"u"}}}"#),
            None
        );
    }

    #[test]
    fn recovered_publications_in_the_connect_push_count() {
        let mut tracker = Tracker::default();
        let id = tracker.observe(
            r#"{"connect":{"subs":{"news":{"recoverable":true,"positioned":true,"epoch":"E","offset":9,"publications":[{"data":1,"offset":8},{"data":2,"offset":9}],"recovered":true}}}}"#,
        );
        assert_eq!(id.as_deref(), Some(r#"{"news":[9,"E"]}"#));
    }

    #[test]
    fn foreign_or_oversized_ids_are_ignored() {
        assert_eq!(decode("42"), None);
        assert_eq!(decode("not json"), None);
        let long = format!(r#"{{"a":[1,"{}"]}}"#, "x".repeat(MAX_ID_BYTES));
        assert_eq!(decode(&long), None);
    }
}
