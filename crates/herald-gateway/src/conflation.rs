//! Per-subscription conflation: "at most one publication per key every `interval`,
//! the latest wins", for tiles that redraw a value and need not see every step of it.
//!
//! A subscription's publications pass through a window. When none is open, a
//! publication goes out at once and opens one; while it is open, publications are
//! held, one per key (the value of the `key` tag; publications without it share one
//! key), each replacing the one held for its key. When the window ends, what is held
//! goes out in offset order and the next window opens; with nothing held, the window
//! just closes. So every key gets at most one publication per window, the client's
//! offsets only grow, and a publication replaced while held is never sent: the
//! client's position moves past it, and recovery from that position brings only the
//! newest publication of each key (`newest_per_key`).

use herald_protocol::Publication;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The most keys one subscription holds at once; a publication of a further key goes
/// out at once, so that a channel with unbounded keys cannot grow a connection's
/// memory without bound.
pub(crate) const MAX_HELD_KEYS: usize = 1024;

/// How a subscription is conflated (a namespace default, a subscription token claim,
/// or the subscribe hook's result): `{"key": "tile", "interval": "2s"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConflationConfig {
    /// The tag whose value is the key.
    pub key: String,
    /// At most one publication per key this often (10ms to 1h).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl ConflationConfig {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        if self.key.is_empty() || self.key.len() > 64 {
            Some("key must be a tag name of 1 to 64 bytes")
        } else if self.interval < Duration::from_millis(10)
            || self.interval > Duration::from_secs(3600)
        {
            Some("interval must be from 10ms to 1h")
        } else {
            None
        }
    }
}

/// One subscription's window and what it holds.
#[derive(Debug)]
pub(crate) struct Conflation<T> {
    key: Arc<str>,
    interval: Duration,
    /// When the open window ends (`None`: no window is open).
    window_until: Option<Instant>,
    /// Held publications with their key's value, at most one per key.
    held: Vec<(Option<Box<str>>, u64, T)>,
}

/// What to do with a publication that arrives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Send it now.
    Send,
    /// It is held (and replaced what was held for its key, if anything).
    Held,
}

impl<T> Conflation<T> {
    /// A conflation by `config` (already checked).
    pub(crate) fn new(config: &ConflationConfig) -> Self {
        Self {
            key: Arc::from(config.key.as_str()),
            interval: config.interval,
            window_until: None,
            held: Vec::new(),
        }
    }

    /// A publication with `tags` at `offset` arrives at `now`.
    pub(crate) fn arrive(
        &mut self,
        now: Instant,
        tags: &std::collections::BTreeMap<String, String>,
        offset: u64,
        item: T,
    ) -> Arrival {
        match self.window_until {
            Some(end) if now < end => {
                let key = tags.get(&*self.key).map(String::as_str);
                // The key's slot keeps its name: a replacement allocates nothing.
                if let Some(slot) = self.held.iter_mut().find(|(k, ..)| k.as_deref() == key) {
                    slot.1 = offset;
                    slot.2 = item;
                    return Arrival::Held;
                }
                if self.held.len() < MAX_HELD_KEYS {
                    self.held.push((key.map(Box::from), offset, item));
                    return Arrival::Held;
                }
                Arrival::Send
            }
            _ => {
                self.window_until = Some(now + self.interval);
                Arrival::Send
            }
        }
    }

    /// When something held is due (the end of the open window, while it holds any).
    pub(crate) fn due(&self) -> Option<Instant> {
        self.window_until.filter(|_| !self.held.is_empty())
    }

    /// At `now`, what is due: the held publications in offset order, and the next
    /// window opens. Nothing before the window ends.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<T> {
        match self.window_until {
            Some(end) if now >= end && !self.held.is_empty() => {
                self.window_until = Some(now + self.interval);
                let mut held = std::mem::take(&mut self.held);
                held.sort_by_key(|(_, offset, _)| *offset);
                held.into_iter().map(|(.., item)| item).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The tag whose value is the key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

/// The newest publication of each key, in offset order: what a conflated subscription
/// recovers.
pub(crate) fn newest_per_key(publications: &mut Vec<Publication>, key: &str) {
    let mut seen: Vec<Option<&str>> = Vec::new();
    let mut keep = vec![false; publications.len()];
    for (i, p) in publications.iter().enumerate().rev() {
        let k = p.tags.get(key).map(String::as_str);
        if !seen.contains(&k) {
            seen.push(k);
            keep[i] = true;
        }
    }
    let mut keep = keep.into_iter();
    publications.retain(|_| keep.next().unwrap_or(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tags(tile: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("tile".to_owned(), tile.to_owned())])
    }

    fn config() -> ConflationConfig {
        ConflationConfig {
            key: "tile".into(),
            interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_latest_of_each_key_goes_out_once_per_window_in_offset_order() {
        let t0 = Instant::now();
        let mut c: Conflation<u64> = Conflation::new(&config());
        // The first goes at once and opens a window.
        assert_eq!(c.arrive(t0, &tags("a"), 1, 1), Arrival::Send);
        assert_eq!(c.due(), None);
        for (offset, tile) in [(2, "a"), (3, "b"), (4, "a"), (5, "b"), (6, "c")] {
            let at = t0 + Duration::from_millis(100 * offset);
            assert_eq!(c.arrive(at, &tags(tile), offset, offset), Arrival::Held);
        }
        assert_eq!(c.due(), Some(t0 + Duration::from_secs(2)));
        assert!(c.take_due(t0 + Duration::from_secs(1)).is_empty());
        let t1 = t0 + Duration::from_secs(2);
        // a's newest (4), b's (5), c's (6): 2 and 3 were replaced and never go out.
        assert_eq!(c.take_due(t1), [4, 5, 6]);
        // The next window is open: a new one is held until it ends.
        assert_eq!(
            c.arrive(t1 + Duration::from_millis(1), &tags("a"), 7, 7),
            Arrival::Held
        );
        assert_eq!(c.take_due(t1 + Duration::from_secs(2)), [7]);
        // A quiet window closes by itself: the next goes at once.
        let later = t1 + Duration::from_secs(10);
        assert_eq!(c.due(), None);
        assert_eq!(c.arrive(later, &tags("b"), 8, 8), Arrival::Send);
    }

    #[test]
    fn a_window_that_ended_before_its_timer_goes_out_before_the_next_publication() {
        // What the connection does with each publication: first what is due, then the
        // publication itself.
        let t0 = Instant::now();
        let mut c: Conflation<u64> = Conflation::new(&config());
        assert_eq!(c.arrive(t0, &tags("a"), 1, 1), Arrival::Send);
        assert_eq!(c.arrive(t0, &tags("b"), 2, 2), Arrival::Held);
        // The window ended 10 ms ago and its timer has not fired yet.
        let late = t0 + Duration::from_millis(2010);
        assert_eq!(c.take_due(late), [2]);
        // The next window opened then: the new one is held, after what went out.
        assert_eq!(c.arrive(late, &tags("a"), 3, 3), Arrival::Held);
        assert_eq!(c.take_due(late + Duration::from_secs(2)), [3]);
    }

    #[test]
    fn publications_without_the_tag_share_one_key_and_the_held_keys_are_bounded() {
        let t0 = Instant::now();
        let mut c: Conflation<u64> = Conflation::new(&config());
        c.arrive(t0, &BTreeMap::new(), 1, 1);
        assert_eq!(c.arrive(t0, &BTreeMap::new(), 2, 2), Arrival::Held);
        assert_eq!(c.arrive(t0, &BTreeMap::new(), 3, 3), Arrival::Held);
        for n in 0..MAX_HELD_KEYS as u64 - 1 {
            assert_eq!(
                c.arrive(t0, &tags(&n.to_string()), 10 + n, 10 + n),
                Arrival::Held
            );
        }
        // One key too many goes out at once.
        assert_eq!(c.arrive(t0, &tags("extra"), 99_999, 0), Arrival::Send);
        let out = c.take_due(t0 + Duration::from_secs(2));
        assert_eq!(out.len(), MAX_HELD_KEYS);
        assert_eq!(out[0], 3);
    }

    #[test]
    fn recovery_keeps_the_newest_of_each_key() {
        let p = |offset: u64, tile: &str| Publication {
            data: herald_protocol::RawJson::null(),
            info: None,
            offset,
            tags: tags(tile),
            delta: false,
            origin: None,
        };
        let mut ps = vec![p(1, "a"), p(2, "b"), p(3, "a"), p(4, "c"), p(5, "b")];
        newest_per_key(&mut ps, "tile");
        let offsets: Vec<u64> = ps.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(config().problem(), None);
        let mut c = config();
        c.interval = Duration::from_millis(1);
        assert!(c.problem().is_some());
        c = config();
        c.key.clear();
        assert!(c.problem().is_some());
    }
}
