//! The top-offset checks: find channels whose stream moved on without the node hearing
//! (a lost tail that no later message reveals) or whose epoch changed, and have them
//! caught up.

use crate::delivery::Delivery;
use crate::stop::Stop;
use crate::store::{StreamMeta, Streams};
use herald_broker::Ended;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// Channels read per round of concurrent meta reads.
const CHUNK: usize = 256;

/// The rule of one pass over the followed channels.
///
/// A node is only caught up when it is still short of a top seen a whole interval
/// earlier: publications in flight on pub/sub arrive within milliseconds, a lost tail
/// never does. Acting at once would race them (and could call a healthy stream lost if
/// it was trimmed).
#[derive(Debug, Default)]
struct TopCheck {
    /// Channels found behind at the last pass, with the top seen then.
    behind: HashMap<String, u64>,
    /// The same, being filled by this pass.
    still_behind: HashMap<String, u64>,
}

impl TopCheck {
    /// Judges one channel the node has delivered up to `last` of `epoch`: true when it
    /// must be caught up now.
    fn sight(&mut self, channel: &str, last: u64, epoch: &str, meta: &StreamMeta) -> bool {
        match meta.epoch.as_deref() {
            Some(e) if e == epoch && meta.top > last => match self.behind.get(channel) {
                Some(&seen) if last < seen => true,
                _ => {
                    self.still_behind.insert(channel.to_owned(), meta.top);
                    false
                }
            },
            Some(e) if e == epoch => false,
            // A new epoch, or the meta is gone (Redis lost its data): the channel's
            // worker reads the new position and tells subscribers, in order with
            // everything else it does for the channel.
            _ => true,
        }
    }

    /// Ends a pass: what it found behind is what the next one compares with. A channel
    /// whose meta could not be read starts over.
    fn finish(&mut self) {
        self.behind = std::mem::take(&mut self.still_behind);
    }
}

/// Checks every followed channel each `every` until `stop`.
pub(crate) async fn top_checks(
    delivery: Arc<Delivery>,
    streams: Arc<dyn Streams>,
    every: Duration,
    stop: Stop,
) -> Ended {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut check = TopCheck::default();
    loop {
        tokio::select! {
            ended = stop.stopped() => return ended,
            _ = tick.tick() => {}
        }
        let known = delivery.positions();
        for chunk in known.chunks(CHUNK) {
            // Concurrent commands on one connection are pipelined by the client.
            let reads = chunk.iter().map(|(c, _, _)| streams.meta(c));
            let replies = tokio::select! {
                ended = stop.stopped() => return ended,
                replies = futures_util::future::join_all(reads) => replies,
            };
            for ((channel, last, epoch), reply) in chunk.iter().zip(replies) {
                let Ok(meta) = reply else { continue };
                if check.sight(channel, *last, epoch, &meta) {
                    delivery.catch_up(channel);
                }
            }
        }
        check.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, top: u64) -> StreamMeta {
        StreamMeta {
            epoch: Some(epoch.to_owned()),
            top,
        }
    }

    #[test]
    fn acts_only_when_still_behind_on_the_second_sighting() {
        let mut check = TopCheck::default();
        assert!(
            !check.sight("c", 5, "e", &at("e", 7)),
            "first sighting waits"
        );
        check.finish();
        assert!(check.sight("c", 5, "e", &at("e", 8)), "still short of 7");
        check.finish();
        // It was acted on, so it is not carried over.
        assert!(!check.sight("c", 5, "e", &at("e", 8)));
    }

    #[test]
    fn publications_that_arrived_in_between_clear_it() {
        let mut check = TopCheck::default();
        assert!(!check.sight("c", 5, "e", &at("e", 7)));
        check.finish();
        // Delivered up to 7 since; the stream moved on to 9: a new first sighting.
        assert!(!check.sight("c", 7, "e", &at("e", 9)));
        check.finish();
        assert!(!check.sight("c", 9, "e", &at("e", 9)), "caught up");
        check.finish();
        assert!(check.behind.is_empty());
    }

    #[test]
    fn a_channel_left_out_of_a_pass_starts_over() {
        let mut check = TopCheck::default();
        assert!(!check.sight("c", 5, "e", &at("e", 7)));
        check.finish();
        // Its read failed this pass.
        check.finish();
        assert!(!check.sight("c", 5, "e", &at("e", 7)));
    }

    #[test]
    fn a_new_epoch_or_lost_meta_acts_at_once() {
        let mut check = TopCheck::default();
        assert!(check.sight("c", 5, "e", &at("f", 1)));
        assert!(check.sight("c", 5, "e", &StreamMeta::default()));
        assert!(!check.sight("c", 5, "e", &at("e", 5)));
        assert!(!check.sight("c", 5, "e", &at("e", 3)), "behind the node");
    }
}
