//! Property test of the stream-position rules: `judge` against a reader modelled as the
//! set of offsets it holds, and `covers` against its definition by enumeration.

use herald_protocol::{Position, Step};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// One publication reaching a reader, and whether the reader repairs a gap before it.
#[derive(Debug, Clone)]
struct Arrival {
    offset: u64,
    epoch: &'static str,
    repair: bool,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0u64..12,
        prop_oneof![4 => Just("a"), 1 => Just("b")],
        any::<bool>(),
    )
        .prop_map(|(offset, epoch, repair)| Arrival {
            offset,
            epoch,
            repair,
        })
}

/// A reader as the set of offsets it holds in its epoch: what a position means, spelled
/// out without arithmetic on it.
struct Model {
    epoch: &'static str,
    held: BTreeSet<u64>,
}

impl Model {
    fn at(top: u64, epoch: &'static str) -> Self {
        Self {
            epoch,
            held: (1..=top).collect(),
        }
    }

    fn position(&self) -> Position<'static> {
        Position::new(self.held.last().copied().unwrap_or(0), self.epoch)
    }

    fn expect(&self, offset: u64, epoch: &str) -> Step {
        if offset == 0 {
            Step::Unpositioned
        } else if epoch != self.epoch {
            Step::NewEpoch
        } else if self.held.contains(&offset) {
            Step::Duplicate
        } else if offset == 1 || self.held.contains(&(offset - 1)) {
            Step::Next
        } else {
            let from = (1..offset)
                .find(|o| !self.held.contains(o))
                .expect("a missing offset");
            Step::Gap {
                from,
                to: offset - 1,
            }
        }
    }

    /// What each site does with its verdict: deliver, repair then deliver, drop, or
    /// start over in the new epoch.
    fn react(&mut self, a: &Arrival, step: Step) {
        match step {
            Step::Next => {
                self.held.insert(a.offset);
            }
            Step::Gap { from, .. } if a.repair => self.held.extend(from..=a.offset),
            Step::NewEpoch => *self = Self::at(a.offset, a.epoch),
            Step::Unpositioned | Step::Duplicate | Step::Gap { .. } => {}
        }
    }
}

/// A page that is often exactly the run a reader needs, or that run slightly wrong.
fn page(from: u64, top: u64) -> impl Strategy<Value = Vec<u64>> {
    let exact: Vec<u64> = (from + 1..=top).collect();
    let len = exact.len();
    prop_oneof![
        Just(exact.clone()),
        (0..len.max(1)).prop_map({
            let exact = exact.clone();
            move |i| {
                let mut v = exact.clone();
                if i < v.len() {
                    v.remove(i);
                }
                v
            }
        }),
        (0..len.max(1)).prop_map({
            let exact = exact.clone();
            move |i| {
                let mut v = exact.clone();
                if let Some(&o) = v.get(i) {
                    v.insert(i, o);
                }
                v
            }
        }),
        Just({
            let mut v = exact;
            v.push(top + 1);
            v
        }),
        prop::collection::vec(0u64..12, 0..8),
    ]
}

fn cover_case() -> impl Strategy<Value = (u64, u64, &'static str, &'static str, Vec<u64>)> {
    (
        0u64..9,
        0u64..9,
        prop_oneof![Just("a"), Just("b")],
        prop_oneof![Just("a"), Just("b")],
    )
        .prop_flat_map(|(from, top, mine, theirs)| {
            (
                Just(from),
                Just(top),
                Just(mine),
                Just(theirs),
                page(from, top),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn judge_matches_a_reader_that_holds_offsets(
        top in 0u64..5,
        arrivals in prop::collection::vec(arrival(), 0..40),
    ) {
        let mut model = Model::at(top, "a");
        for a in &arrivals {
            let step = model.position().judge(a.offset, a.epoch);
            prop_assert_eq!(step, model.expect(a.offset, a.epoch), "{:?}", a);
            model.react(a, step);
        }
    }

    #[test]
    fn covers_means_exactly_everything_after_up_to_the_top(
        (from, top, mine, theirs, offsets) in cover_case(),
    ) {
        let definition =
            mine == theirs && from <= top && offsets == (from + 1..=top).collect::<Vec<_>>();
        let got = Position::new(from, mine).covers(Position::new(top, theirs), offsets.iter().copied());
        prop_assert_eq!(got, definition);
    }
}
