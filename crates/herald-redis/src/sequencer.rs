//! Per-channel ordering on one node: decides, for each publication that pub/sub (or a
//! repair read) hands in, whether to deliver it, drop it as already delivered, repair a
//! gap first, or report that the stream was reset. Pure logic, no I/O.

/// What to do with an incoming publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it; it is the next offset (or the channel keeps no history).
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Offsets `from..=to` are missing before it: read them from the stream, deliver
    /// them, then offer this publication again.
    Gap {
        /// First missing offset.
        from: u64,
        /// Last missing offset.
        to: u64,
    },
    /// The stream has a new epoch (its history was lost): the node's subscribers cannot
    /// continue from what they have. They are told to resubscribe with recovery, which
    /// reports the loss; the publication itself is not delivered.
    Reset,
}

/// The node's position in one channel's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequencer {
    /// The epoch of `last`, once known.
    epoch: Option<String>,
    /// The last offset delivered (or known to be the top when the node subscribed).
    last: Option<u64>,
}

impl Sequencer {
    /// A sequencer that knows nothing yet: the first publication sets the baseline.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last delivered offset and its epoch, once known.
    pub fn position(&self) -> Option<(u64, &str)> {
        Some((self.last?, self.epoch.as_deref()?))
    }

    /// Sets the baseline from the stream's top when the node subscribed, unless a
    /// publication already set one.
    pub fn baseline(&mut self, top: u64, epoch: &str) {
        if self.last.is_none() {
            self.last = Some(top);
            self.epoch = Some(epoch.to_owned());
        }
    }

    /// Judges an incoming publication.
    pub fn judge(&self, offset: u64, epoch: &str) -> Verdict {
        if offset == 0 {
            return Verdict::Deliver;
        }
        match (&self.epoch, self.last) {
            (Some(known), _) if known != epoch => Verdict::Reset,
            (Some(_), Some(last)) if offset <= last => Verdict::Duplicate,
            (Some(_), Some(last)) if offset > last + 1 => Verdict::Gap {
                from: last + 1,
                to: offset - 1,
            },
            _ => Verdict::Deliver,
        }
    }

    /// Moves to `offset` in `epoch` unconditionally (also to offset 0 of a new epoch,
    /// which [`Sequencer::advance`] ignores as a publication without history).
    pub fn reset(&mut self, offset: u64, epoch: &str) {
        self.epoch = Some(epoch.to_owned());
        self.last = Some(offset);
    }

    /// Records that a publication was delivered (or passed over for good).
    pub fn advance(&mut self, offset: u64, epoch: &str) {
        if offset == 0 {
            return;
        }
        if self.epoch.as_deref() != Some(epoch) {
            self.epoch = Some(epoch.to_owned());
            self.last = Some(offset);
        } else {
            self.last = Some(self.last.map_or(offset, |l| l.max(offset)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_publication_sets_the_baseline() {
        let s = Sequencer::new();
        assert_eq!(s.judge(7, "e"), Verdict::Deliver);
        assert_eq!(s.position(), None);
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut s = Sequencer::new();
        s.baseline(4, "e");
        assert_eq!(s.judge(5, "e"), Verdict::Deliver);
        s.advance(5, "e");
        assert_eq!(s.judge(5, "e"), Verdict::Duplicate);
        assert_eq!(s.judge(3, "e"), Verdict::Duplicate);
        assert_eq!(s.judge(9, "e"), Verdict::Gap { from: 6, to: 8 });
        for o in 6..=9 {
            s.advance(o, "e");
        }
        assert_eq!(s.position(), Some((9, "e")));
        assert_eq!(s.judge(10, "e"), Verdict::Deliver);
    }

    #[test]
    fn a_new_epoch_is_a_reset_and_restarts_counting() {
        let mut s = Sequencer::new();
        s.baseline(10, "old");
        assert_eq!(s.judge(1, "new"), Verdict::Reset);
        s.advance(1, "new");
        assert_eq!(s.position(), Some((1, "new")));
        assert_eq!(s.judge(2, "new"), Verdict::Deliver);
    }

    #[test]
    fn baseline_never_moves_a_known_position_back() {
        let mut s = Sequencer::new();
        s.advance(12, "e");
        s.baseline(10, "e");
        assert_eq!(s.position(), Some((12, "e")));
    }

    #[test]
    fn reset_to_an_empty_new_epoch_sticks() {
        let mut s = Sequencer::new();
        s.baseline(10, "old");
        s.reset(0, "new");
        assert_eq!(s.position(), Some((0, "new")));
        assert_eq!(s.judge(1, "new"), Verdict::Deliver);
    }

    #[test]
    fn channels_without_history_always_deliver() {
        let mut s = Sequencer::new();
        s.baseline(3, "e");
        assert_eq!(s.judge(0, ""), Verdict::Deliver);
        s.advance(0, "");
        assert_eq!(s.position(), Some((3, "e")));
    }
}
