//! Per-channel ordering on one node: decides, for each publication that pub/sub (or a
//! repair read) hands in, whether to deliver it, drop it as already delivered, repair a
//! gap first, or report that the stream was reset; and keeps the channel's replay
//! window, the newest publications the node delivered. Pure logic, no I/O.

use herald_broker::{HistoryPage, StoredPublication};
use herald_protocol::{HistoryLimit, Step, StreamPosition};
use std::collections::VecDeque;
use std::sync::Arc;

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
    /// The last offset delivered (or known to be the top when the node subscribed) and
    /// its epoch, once known.
    position: Option<StreamPosition>,
    /// The newest publications delivered, for recoveries served without Redis.
    window: ReplayWindow,
}

impl Sequencer {
    /// A sequencer that knows nothing yet: the first publication sets the baseline.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last delivered offset and its epoch, once known.
    pub fn position(&self) -> Option<(u64, &str)> {
        self.position.as_ref().map(|p| (p.offset, p.epoch.as_str()))
    }

    /// A sequencer whose replay window keeps up to `window` publications.
    pub fn with_window(window: usize) -> Self {
        Self {
            window: ReplayWindow::new(window),
            ..Self::default()
        }
    }

    /// Sets the baseline from the stream's top when the node subscribed, unless a
    /// publication already set one.
    pub fn baseline(&mut self, top: u64, epoch: &str) {
        if self.position.is_none() {
            self.reset(top, epoch);
        }
    }

    /// Records a delivered publication: moves the position and keeps it in the replay
    /// window.
    pub fn delivered(&mut self, publication: &Arc<StoredPublication>) {
        self.advance(publication.publication.offset, &publication.epoch);
        self.window.push(publication);
    }

    /// The replay window, which answers recoveries of the recent past.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Judges an incoming publication by the protocol's position rule; before the node
    /// knows its position, everything is delivered (the first sets the baseline).
    pub fn judge(&self, offset: u64, epoch: &str) -> Verdict {
        let Some(known) = &self.position else {
            return Verdict::Deliver;
        };
        match known.as_position().judge(offset, epoch) {
            Step::Unpositioned | Step::Next => Verdict::Deliver,
            Step::Duplicate => Verdict::Duplicate,
            Step::Gap { from, to } => Verdict::Gap { from, to },
            Step::NewEpoch => Verdict::Reset,
        }
    }

    /// Moves to `offset` in `epoch` unconditionally (also to offset 0 of a new epoch,
    /// which [`Sequencer::advance`] ignores as a publication without history).
    pub fn reset(&mut self, offset: u64, epoch: &str) {
        self.position = Some(StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        });
        self.window.restart(offset, epoch);
    }

    /// Records that a publication was delivered (or passed over for good).
    pub fn advance(&mut self, offset: u64, epoch: &str) {
        if offset == 0 {
            return;
        }
        match &mut self.position {
            Some(p) if p.epoch == epoch => p.offset = p.offset.max(offset),
            _ => {
                self.position = Some(StreamPosition {
                    offset,
                    epoch: epoch.to_owned(),
                })
            }
        }
    }
}

/// The newest publications a node delivered in one channel: a contiguous run of offsets
/// `start + 1 ..= top` of one epoch, ending at the node's position. A subscriber that has
/// registered for live publications can recover from it instead of reading Redis: every
/// publication after `top` reaches it live, in order, because the node delivers the
/// channel in order (repairing gaps from the stream first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    capacity: usize,
    /// `None` until the node knows its position in the stream.
    epoch: Option<String>,
    /// The offset just before the first publication kept.
    start: u64,
    publications: VecDeque<Arc<StoredPublication>>,
}

impl ReplayWindow {
    /// An empty window that keeps up to `capacity` publications.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The newest offset covered.
    fn top(&self) -> u64 {
        self.start + self.publications.len() as u64
    }

    /// Continues, empty, from `offset` in `epoch` (a baseline or a reset).
    fn restart(&mut self, offset: u64, epoch: &str) {
        self.epoch = Some(epoch.to_owned());
        self.start = offset;
        self.publications.clear();
    }

    /// Appends a delivered publication; one that does not follow the newest kept (a new
    /// epoch, or a position the node jumped to) starts the window over from it.
    fn push(&mut self, p: &Arc<StoredPublication>) {
        let offset = p.publication.offset;
        if offset == 0 {
            return;
        }
        let follows = self.epoch.as_deref() == Some(p.epoch.as_str()) && offset == self.top() + 1;
        if !follows {
            self.restart(offset - 1, &p.epoch);
        }
        self.publications.push_back(p.clone());
        while self.publications.len() > self.capacity {
            self.publications.pop_front();
            self.start += 1;
        }
    }

    /// The page a recovery read asks for, if the window holds all of it: the
    /// publications after `since` (at most `limit`) and the node's position, or only the
    /// position when `since` is `None` and the limit asks for nothing else. `None` sends
    /// the read to Redis.
    pub fn page(&self, since: Option<u64>, limit: HistoryLimit) -> Option<HistoryPage> {
        let epoch = self.epoch.as_ref()?;
        let top = self.top();
        let position = StreamPosition {
            offset: top,
            epoch: epoch.clone(),
        };
        let Some(since) = since else {
            return (limit == HistoryLimit::PositionOnly).then(|| HistoryPage {
                publications: Vec::new(),
                position,
            });
        };
        if since < self.start || since > top {
            return None;
        }
        let skip = usize::try_from(since - self.start).ok()?;
        let take = limit.max_items();
        Some(HistoryPage {
            publications: self
                .publications
                .iter()
                .skip(skip)
                .take(take)
                .map(|p| p.publication.clone())
                .collect(),
            position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(offset: u64, epoch: &str) -> Arc<StoredPublication> {
        Arc::new(StoredPublication {
            publication: herald_protocol::Publication {
                data: herald_protocol::RawJson::null(),
                info: None,
                offset,
                tags: Default::default(),
                delta: false,
                origin: None,
            },
            epoch: epoch.to_owned(),
        })
    }

    fn offsets(page: &HistoryPage) -> Vec<u64> {
        page.publications.iter().map(|p| p.offset).collect()
    }

    #[test]
    fn the_window_answers_what_it_holds_and_nothing_else() {
        let mut s = Sequencer::with_window(3);
        assert_eq!(
            s.window().page(Some(0), HistoryLimit::All),
            None,
            "position unknown"
        );
        s.baseline(10, "e");
        let empty = s
            .window()
            .page(Some(10), HistoryLimit::All)
            .expect("at the top");
        assert_eq!((offsets(&empty), empty.position.offset), (vec![], 10));
        for o in 11..=14 {
            s.delivered(&stored(o, "e"));
        }
        // Holds 12..=14: since 11, 12, 13 and 14 are answerable, 10 is not.
        assert_eq!(s.window().page(Some(10), HistoryLimit::All), None);
        let page = s
            .window()
            .page(Some(11), HistoryLimit::All)
            .expect("in the window");
        assert_eq!(
            (offsets(&page), page.position.offset),
            (vec![12, 13, 14], 14)
        );
        assert_eq!(
            offsets(
                &s.window()
                    .page(Some(12), HistoryLimit::at_most(1))
                    .expect("limited")
            ),
            vec![13]
        );
        assert_eq!(
            s.window().page(Some(15), HistoryLimit::All),
            None,
            "ahead of the node"
        );
        let position = s
            .window()
            .page(None, HistoryLimit::PositionOnly)
            .expect("position only");
        assert_eq!(
            (position.position.offset, position.position.epoch.as_str()),
            (14, "e")
        );
        assert_eq!(
            s.window().page(None, HistoryLimit::at_most(5)),
            None,
            "a full read goes to Redis"
        );
    }

    #[test]
    fn a_jump_or_a_new_epoch_starts_the_window_over() {
        let mut s = Sequencer::with_window(10);
        s.baseline(0, "e");
        s.delivered(&stored(1, "e"));
        s.delivered(&stored(2, "e"));
        // The node was told the stream continues from 7 (what was between is lost).
        s.reset(7, "e");
        assert_eq!(s.window().page(Some(2), HistoryLimit::All), None);
        s.delivered(&stored(8, "e"));
        assert_eq!(
            offsets(
                &s.window()
                    .page(Some(7), HistoryLimit::All)
                    .expect("after the reset")
            ),
            vec![8]
        );
        // A publication of another epoch restarts from itself.
        s.delivered(&stored(3, "f"));
        let page = s
            .window()
            .page(Some(2), HistoryLimit::All)
            .expect("new epoch");
        assert_eq!(
            (offsets(&page), page.position.epoch.as_str()),
            (vec![3], "f")
        );
        assert_eq!(s.window().page(Some(7), HistoryLimit::All), None);
    }

    #[test]
    fn without_a_baseline_the_first_delivery_anchors_the_window() {
        let mut s = Sequencer::with_window(10);
        s.delivered(&stored(5, "e"));
        s.delivered(&stored(6, "e"));
        assert_eq!(
            offsets(
                &s.window()
                    .page(Some(4), HistoryLimit::All)
                    .expect("anchored")
            ),
            vec![5, 6]
        );
        assert_eq!(s.window().page(Some(3), HistoryLimit::All), None);
        // A later baseline does not move a position that publications already set.
        s.baseline(2, "e");
        assert_eq!(
            offsets(&s.window().page(Some(4), HistoryLimit::All).expect("kept")),
            vec![5, 6]
        );
    }

    #[test]
    fn a_zero_capacity_window_only_knows_the_position() {
        let mut s = Sequencer::with_window(0);
        s.baseline(3, "e");
        s.delivered(&stored(4, "e"));
        assert_eq!(s.window().page(Some(3), HistoryLimit::All), None);
        let at_top = s
            .window()
            .page(Some(4), HistoryLimit::All)
            .expect("at the top");
        assert_eq!((offsets(&at_top), at_top.position.offset), (vec![], 4));
    }

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
