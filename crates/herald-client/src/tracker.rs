//! Per-subscription stream bookkeeping: the last delivered offset and epoch, what a live
//! publication means after it, and what to ask for when resubscribing.

use herald_protocol::{Publication, Step, StreamPosition, SubscribeResult};

/// What to do with a live publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next one in order (or the channel has no offsets): deliver it.
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Publications are missing before it: resubscribe with recovery instead of
    /// delivering out of order.
    Gap,
}

/// The outcome of a successful subscribe reply.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// Recovered publications to deliver, in order, none already delivered.
    pub(crate) publications: Vec<Publication>,
    /// Where the subscription stands once they are delivered.
    pub(crate) position: StreamPosition,
}

/// Where one subscription stands in its channel's stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    /// The offset of the last publication handed to the application, and its epoch.
    position: Option<StreamPosition>,
    /// The channel's publications carry offsets, so order can be checked.
    positioned: bool,
    /// The channel keeps history, so a resubscribe can ask for recovery.
    recoverable: bool,
}

impl Tracker {
    /// A new subscription; with `since` the first subscribe already asks for recovery.
    pub(crate) fn new(since: Option<StreamPosition>) -> Self {
        Self {
            positioned: since.is_some(),
            recoverable: since.is_some(),
            position: since,
        }
    }

    /// The position to recover from on the next subscribe, if recovery is possible.
    pub(crate) fn recovery(&self) -> Option<&StreamPosition> {
        if self.recoverable {
            self.position.as_ref()
        } else {
            None
        }
    }

    /// The last delivered position (the stream top after a fresh subscribe).
    pub(crate) fn position(&self) -> StreamPosition {
        self.position.clone().unwrap_or_default()
    }

    /// Applies a subscribe reply: adopts the stream's epoch, and either keeps the local
    /// offset (recovered: the missed publications follow) or jumps to the stream's top
    /// (not recovered: what was missed is gone, and the application is told so).
    pub(crate) fn on_subscribed(&mut self, res: &mut SubscribeResult) -> Accepted {
        self.positioned = res.positioned || res.recoverable;
        self.recoverable = res.recoverable;
        let mut publications = std::mem::take(&mut res.publications);
        if !self.positioned {
            self.position = None;
            return Accepted {
                publications,
                position: StreamPosition::default(),
            };
        }
        let offset = match (&self.position, res.recovered) {
            (Some(p), true) => p.offset,
            _ => res.offset,
        };
        self.position = Some(StreamPosition {
            offset,
            epoch: res.epoch.clone(),
        });
        // Recovered publications are in order on the wire; sorting and de-duplicating
        // anyway costs little and keeps "once, in order" true even against a sloppy server.
        publications.sort_by_key(|p| p.offset);
        publications.dedup_by_key(|p| p.offset);
        publications.retain(|p| p.offset > offset);
        let last = publications.last().map_or(offset, |p| p.offset);
        Accepted {
            publications,
            position: StreamPosition {
                offset: last,
                epoch: res.epoch.clone(),
            },
        }
    }

    /// Judges a live publication against the last delivered offset.
    pub(crate) fn check(&self, publication: &Publication) -> Verdict {
        let Some(position) = &self.position else {
            return Verdict::Deliver;
        };
        if !self.positioned {
            return Verdict::Deliver;
        }
        // Live publications carry no epoch on the wire: only a subscribe reply changes it,
        // so the offset is judged in the subscription's own epoch.
        match position
            .as_position()
            .judge(publication.offset, &position.epoch)
        {
            // Every live publication of a positioned channel should carry its offset; one
            // that does not cannot be ordered, and dropping it would lose data.
            Step::Unpositioned | Step::Next => Verdict::Deliver,
            Step::Duplicate => Verdict::Duplicate,
            Step::Gap { .. } | Step::NewEpoch => Verdict::Gap,
        }
    }

    /// Records that a publication reached the application.
    pub(crate) fn delivered(&mut self, offset: u64) {
        if let Some(position) = &mut self.position
            && self.positioned
            && offset > position.offset
        {
            position.offset = offset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::RawJson;

    fn publication(offset: u64) -> Publication {
        Publication {
            data: RawJson::from_string(format!("{{\"n\":{offset}}}")).expect("json"),
            info: None,
            offset,
            tags: Default::default(),
            delta: false,
            origin: None,
        }
    }

    fn reply(offset: u64, epoch: &str) -> SubscribeResult {
        SubscribeResult {
            recoverable: true,
            positioned: true,
            epoch: epoch.to_owned(),
            offset,
            ..SubscribeResult::default()
        }
    }

    fn pos(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        }
    }

    /// Delivers what the tracker accepts, as the connection task does.
    fn feed(t: &mut Tracker, offsets: &[u64]) -> (Vec<u64>, Vec<Verdict>) {
        let mut out = Vec::new();
        let mut verdicts = Vec::new();
        for &o in offsets {
            let p = publication(o);
            let v = t.check(&p);
            verdicts.push(v);
            if v == Verdict::Deliver {
                t.delivered(p.offset);
                out.push(o);
            }
        }
        (out, verdicts)
    }

    #[test]
    fn fresh_subscribe_starts_at_the_top_and_drops_duplicates() {
        let mut t = Tracker::new(None);
        assert!(t.recovery().is_none());
        let acc = t.on_subscribed(&mut reply(17, "E"));
        assert!(acc.publications.is_empty());
        assert_eq!(acc.position, pos(17, "E"));
        let (delivered, verdicts) = feed(&mut t, &[17, 18, 18, 19, 5]);
        assert_eq!(delivered, [18, 19]);
        assert_eq!(
            verdicts,
            [
                Verdict::Duplicate,
                Verdict::Deliver,
                Verdict::Duplicate,
                Verdict::Deliver,
                Verdict::Duplicate
            ]
        );
        assert_eq!(t.recovery(), Some(&pos(19, "E")));
    }

    #[test]
    fn a_gap_is_detected_and_not_delivered() {
        let mut t = Tracker::new(None);
        t.on_subscribed(&mut reply(0, "E"));
        let (delivered, verdicts) = feed(&mut t, &[1, 2, 4]);
        assert_eq!(delivered, [1, 2]);
        assert_eq!(verdicts[2], Verdict::Gap);
        // The position stays at the last delivered offset, so recovery asks from there.
        assert_eq!(t.recovery(), Some(&pos(2, "E")));
    }

    #[test]
    fn recovered_publications_come_before_live_ones() {
        let mut t = Tracker::new(None);
        t.on_subscribed(&mut reply(10, "E"));
        feed(&mut t, &[11, 12]);
        // Reconnect: the resubscribe asks from 12 and the server returns 13..=15, one of
        // them twice and out of order, plus one the client already has.
        assert_eq!(t.recovery(), Some(&pos(12, "E")));
        let mut res = reply(12, "E");
        res.recovered = true;
        res.was_recovering = true;
        res.publications = [12, 14, 13, 15, 14].into_iter().map(publication).collect();
        let acc = t.on_subscribed(&mut res);
        let recovered: Vec<u64> = acc.publications.iter().map(|p| p.offset).collect();
        assert_eq!(recovered, [13, 14, 15]);
        assert_eq!(acc.position, pos(15, "E"));
        for p in &acc.publications {
            assert_eq!(t.check(p), Verdict::Deliver);
            t.delivered(p.offset);
        }
        // Live publications the server had buffered during recovery overlap the recovered
        // ones: the overlap is dropped, the rest continues in order.
        let (delivered, _) = feed(&mut t, &[14, 15, 16, 17]);
        assert_eq!(delivered, [16, 17]);
    }

    #[test]
    fn recovery_stops_where_delivery_stopped() {
        let mut t = Tracker::new(Some(pos(3, "E")));
        let mut res = reply(3, "E");
        res.recovered = true;
        res.publications = [4, 5, 6].into_iter().map(publication).collect();
        let acc = t.on_subscribed(&mut res);
        // Only the first recovered publication fits in the consumer's buffer.
        t.delivered(acc.publications[0].offset);
        assert_eq!(t.recovery(), Some(&pos(4, "E")));
    }

    #[test]
    fn since_asks_for_recovery_on_the_first_subscribe() {
        let t = Tracker::new(Some(pos(5, "X")));
        assert_eq!(t.recovery(), Some(&pos(5, "X")));
    }

    #[test]
    fn failed_recovery_jumps_to_the_new_epoch() {
        let mut t = Tracker::new(Some(pos(5, "OLD")));
        let mut res = reply(3, "NEW");
        res.was_recovering = true;
        let acc = t.on_subscribed(&mut res);
        assert_eq!(acc.position, pos(3, "NEW"));
        let (delivered, _) = feed(&mut t, &[4]);
        assert_eq!(delivered, [4]);
    }

    #[test]
    fn unpositioned_channels_deliver_everything_and_never_recover() {
        let mut t = Tracker::new(None);
        t.on_subscribed(&mut SubscribeResult::default());
        let (delivered, _) = feed(&mut t, &[0, 0, 0]);
        assert_eq!(delivered.len(), 3);
        assert!(t.recovery().is_none());
    }

    #[test]
    fn positioned_but_not_recoverable_orders_without_recovering() {
        let mut t = Tracker::new(None);
        let mut res = reply(7, "E");
        res.recoverable = false;
        t.on_subscribed(&mut res);
        assert!(t.recovery().is_none());
        let (delivered, verdicts) = feed(&mut t, &[7, 8, 10]);
        assert_eq!(delivered, [8]);
        assert_eq!(verdicts[2], Verdict::Gap);
    }
}
