//! Stream-position rules every reader of a channel shares: what an incoming offset means
//! after a position, whether a history page covers a gap, and how much a read asks for.

use crate::StreamPosition;
use std::num::NonZeroUsize;

/// A position in one channel's stream, borrowed from wherever its owner keeps it (a
/// [`StreamPosition`], or a connection's subscription that stores the epoch shared).
/// Judging a publication must not allocate: the gateway does it for every delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    /// The last offset the reader has (0 = before the first publication).
    pub offset: u64,
    /// The epoch `offset` belongs to.
    pub epoch: &'a str,
}

/// What a publication at some offset is to a reader at a [`Position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Offset 0: the channel keeps no history, so the publication cannot be ordered and
    /// must be delivered (dropping it would lose data).
    Unpositioned,
    /// Exactly the offset after the position: deliver it and move there.
    Next,
    /// At or before the position in the same epoch: already delivered.
    Duplicate,
    /// Offsets `from..=to` are missing before it.
    Gap {
        /// First missing offset.
        from: u64,
        /// Last missing offset.
        to: u64,
    },
    /// Another epoch: the stream's history was lost, and the position means nothing in it.
    NewEpoch,
}

impl<'a> Position<'a> {
    /// The position `offset` in `epoch`.
    pub fn new(offset: u64, epoch: &'a str) -> Self {
        Self { offset, epoch }
    }

    /// Judges a publication at `offset` in `epoch` against this position.
    pub fn judge(self, offset: u64, epoch: &str) -> Step {
        if offset == 0 {
            return Step::Unpositioned;
        }
        if epoch != self.epoch {
            return Step::NewEpoch;
        }
        // Past this check `self.offset < offset`, so `self.offset + 1` cannot overflow.
        if offset <= self.offset {
            Step::Duplicate
        } else if offset == self.offset + 1 {
            Step::Next
        } else {
            Step::Gap {
                from: self.offset + 1,
                to: offset - 1,
            }
        }
    }

    /// Whether `offsets` (of a page read forwards from this position) are exactly every
    /// publication after it up to `top`, the stream's position when the page was read,
    /// in the same epoch. Only then has a reader that was at this position missed
    /// nothing: a trimmed or holed page, a new epoch or a reader ahead of the stream
    /// leaves a loss the reader must be told about.
    pub fn covers(self, top: Position<'_>, offsets: impl IntoIterator<Item = u64>) -> bool {
        if self.epoch != top.epoch || self.offset > top.offset {
            return false;
        }
        let mut reached = self.offset;
        for offset in offsets {
            // `reached < top.offset` before the addition, so it cannot overflow.
            if reached == top.offset || offset != reached + 1 {
                return false;
            }
            reached = offset;
        }
        reached == top.offset
    }
}

impl StreamPosition {
    /// This position, borrowed, to judge publications or pages against.
    pub fn as_position(&self) -> Position<'_> {
        Position::new(self.offset, &self.epoch)
    }
}

impl<'a> From<&'a StreamPosition> for Position<'a> {
    fn from(p: &'a StreamPosition) -> Self {
        p.as_position()
    }
}

/// How many publications a history read returns.
///
/// On the wire a limit is a signed number: 0 asks only for the stream's position, a
/// negative number for everything, a positive one for at most that many. Redis's
/// function library takes the same numbers with −1 for everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HistoryLimit {
    /// No publications, only the stream's position.
    PositionOnly,
    /// At most this many publications.
    AtMost(NonZeroUsize),
    /// Every publication the stream still holds.
    #[default]
    All,
}

impl HistoryLimit {
    /// At most `n` publications; 0 is [`HistoryLimit::PositionOnly`].
    pub fn at_most(n: usize) -> Self {
        NonZeroUsize::new(n).map_or(Self::PositionOnly, Self::AtMost)
    }

    /// The limit a client or API request sends: 0 = position only, negative = all. A
    /// count beyond what this machine can address means all it can.
    pub fn from_wire(limit: i64) -> Self {
        match limit {
            0 => Self::PositionOnly,
            n if n < 0 => Self::All,
            n => Self::at_most(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    /// This limit, but never more than `size` publications (a namespace's history size).
    pub fn capped(self, size: usize) -> Self {
        match self {
            Self::PositionOnly => Self::PositionOnly,
            Self::AtMost(n) => Self::at_most(n.get().min(size)),
            Self::All => Self::at_most(size),
        }
    }

    /// The most publications a read may return: 0, `n`, or `usize::MAX` for all.
    pub fn max_items(self) -> usize {
        match self {
            Self::PositionOnly => 0,
            Self::AtMost(n) => n.get(),
            Self::All => usize::MAX,
        }
    }

    /// The signed form a script takes: 0 = position only, −1 = all, else the count
    /// (saturating at `i64::MAX`, more than any stream holds).
    pub fn to_signed(self) -> i64 {
        match self {
            Self::PositionOnly => 0,
            Self::AtMost(n) => i64::try_from(n.get()).unwrap_or(i64::MAX),
            Self::All => -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> Position<'_> {
        Position::new(offset, epoch)
    }

    #[test]
    fn judge_names_each_case() {
        let p = at(4, "e");
        assert_eq!(p.judge(0, ""), Step::Unpositioned);
        assert_eq!(p.judge(0, "other"), Step::Unpositioned);
        assert_eq!(p.judge(5, "e"), Step::Next);
        assert_eq!(p.judge(4, "e"), Step::Duplicate);
        assert_eq!(p.judge(1, "e"), Step::Duplicate);
        assert_eq!(p.judge(9, "e"), Step::Gap { from: 5, to: 8 });
        assert_eq!(p.judge(3, "f"), Step::NewEpoch);
        assert_eq!(at(0, "e").judge(1, "e"), Step::Next);
        assert_eq!(at(u64::MAX, "e").judge(u64::MAX, "e"), Step::Duplicate);
        assert_eq!(
            at(0, "e").judge(u64::MAX, "e"),
            Step::Gap {
                from: 1,
                to: u64::MAX - 1
            }
        );
    }

    #[test]
    fn covers_only_when_contiguous_to_top_in_same_epoch() {
        let covers = |offsets: &[u64], from, top, client_epoch, epoch| {
            at(from, client_epoch).covers(at(top, epoch), offsets.iter().copied())
        };
        assert!(covers(&[4, 5, 6], 3, 6, "e", "e"));
        assert!(covers(&[], 6, 6, "e", "e"));
        assert!(!covers(&[5, 6], 3, 6, "e", "e"), "trimmed history");
        assert!(!covers(&[4, 6], 3, 6, "e", "e"), "hole");
        assert!(!covers(&[4, 5], 3, 6, "e", "e"), "short of top");
        assert!(!covers(&[4, 5, 6], 3, 6, "old", "e"), "epoch changed");
        assert!(!covers(&[], 9, 6, "e", "e"), "client ahead of stream");
        assert!(!covers(&[4, 5, 6, 7], 3, 6, "e", "e"), "past the top");
        assert!(covers(&[], u64::MAX, u64::MAX, "e", "e"), "no overflow");
    }

    #[test]
    fn limits_from_the_wire() {
        assert_eq!(HistoryLimit::from_wire(0), HistoryLimit::PositionOnly);
        assert_eq!(HistoryLimit::from_wire(-1), HistoryLimit::All);
        assert_eq!(HistoryLimit::from_wire(i64::MIN), HistoryLimit::All);
        assert_eq!(HistoryLimit::from_wire(3), HistoryLimit::at_most(3));
        assert_eq!(HistoryLimit::from_wire(3).max_items(), 3);
        assert_eq!(HistoryLimit::at_most(0), HistoryLimit::PositionOnly);
        assert_eq!(HistoryLimit::default(), HistoryLimit::All);
    }

    #[test]
    fn limits_capped_by_a_namespace() {
        assert_eq!(
            HistoryLimit::PositionOnly.capped(10),
            HistoryLimit::PositionOnly
        );
        assert_eq!(HistoryLimit::All.capped(10), HistoryLimit::at_most(10));
        assert_eq!(
            HistoryLimit::at_most(3).capped(10),
            HistoryLimit::at_most(3)
        );
        assert_eq!(
            HistoryLimit::from_wire(500).capped(10),
            HistoryLimit::at_most(10)
        );
        assert_eq!(HistoryLimit::All.capped(0), HistoryLimit::PositionOnly);
    }

    #[test]
    fn limits_to_a_script_and_a_count() {
        assert_eq!(HistoryLimit::PositionOnly.to_signed(), 0);
        assert_eq!(HistoryLimit::All.to_signed(), -1);
        assert_eq!(HistoryLimit::at_most(7).to_signed(), 7);
        assert_eq!(HistoryLimit::at_most(usize::MAX).to_signed(), i64::MAX);
        assert_eq!(HistoryLimit::PositionOnly.max_items(), 0);
        assert_eq!(HistoryLimit::All.max_items(), usize::MAX);
        for wire in [-5, -1, 0, 1, 2, 1000] {
            let limit = HistoryLimit::from_wire(wire);
            assert_eq!(
                HistoryLimit::from_wire(limit.to_signed()),
                limit,
                "{wire} survives the script's encoding"
            );
        }
    }
}
