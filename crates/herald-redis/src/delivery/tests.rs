//! Delivery's ordering, repair and catch-up against a stream held in memory.

use super::*;
use crate::store::StreamMeta;
use async_trait::async_trait;
use herald_broker::JoinLeave;
use herald_protocol::{HistoryLimit, Publication, RawJson, StreamPosition};

/// One channel's stream: an epoch, the offsets it still holds, and its top.
#[derive(Default)]
struct Stream {
    epoch: String,
    held: Vec<u64>,
    top: u64,
    reads: usize,
}

#[derive(Default)]
struct FakeStreams(Mutex<Stream>);

fn publication(offset: u64) -> Publication {
    Publication {
        data: RawJson::null(),
        info: None,
        offset,
        tags: Default::default(),
        delta: false,
        origin: None,
    }
}

#[async_trait]
impl Streams for FakeStreams {
    async fn read(
        &self,
        _channel: &str,
        since: Option<u64>,
        limit: HistoryLimit,
        _reverse: bool,
    ) -> Result<HistoryPage, BrokerError> {
        let mut s = self.0.lock();
        s.reads += 1;
        let since = since.unwrap_or(0);
        let take = limit.max_items();
        Ok(HistoryPage {
            publications: s
                .held
                .iter()
                .filter(|&&o| o > since)
                .take(take)
                .map(|&o| publication(o))
                .collect(),
            position: StreamPosition {
                offset: s.top,
                epoch: s.epoch.clone(),
            },
        })
    }

    async fn meta(&self, _channel: &str) -> Result<StreamMeta, BrokerError> {
        let s = self.0.lock();
        Ok(StreamMeta {
            epoch: Some(s.epoch.clone()),
            top: s.top,
        })
    }
}

#[derive(Default)]
struct Seen {
    offsets: Mutex<Vec<u64>>,
    lost: Mutex<usize>,
}

impl BrokerHandler for Seen {
    fn on_publication(&self, _: &str, p: Arc<StoredPublication>) {
        self.offsets.lock().push(p.publication.offset);
    }
    fn on_join_leave(&self, _: &str, _: JoinLeave) {}
    fn on_insufficient_state(&self, _: &str) {
        *self.lost.lock() += 1;
    }
}

struct Rig {
    delivery: Delivery,
    streams: Arc<FakeStreams>,
    seen: Arc<Seen>,
}

/// A delivery following "c" from offset `at` of epoch "e", over a stream holding `held`
/// up to `top`.
fn rig(at: u64, held: impl IntoIterator<Item = u64>, top: u64) -> Rig {
    let streams = Arc::new(FakeStreams(Mutex::new(Stream {
        epoch: "e".into(),
        held: held.into_iter().collect(),
        top,
        reads: 0,
    })));
    let metrics = RedisMetrics::new().expect("metrics");
    let delivery = Delivery::new(streams.clone(), metrics, 16);
    let seen = Arc::new(Seen::default());
    let handler: Arc<dyn BrokerHandler> = seen.clone();
    let _ = delivery.handler.set(handler);
    delivery.track(&["c".to_owned()]);
    delivery.baseline("c", at, "e");
    Rig {
        delivery,
        streams,
        seen,
    }
}

fn live(offset: u64, epoch: &str) -> Decoded {
    Decoded {
        publication: publication(offset),
        epoch: epoch.to_owned(),
    }
}

impl Rig {
    fn offsets(&self) -> Vec<u64> {
        self.seen.offsets.lock().clone()
    }
    fn lost(&self) -> usize {
        *self.seen.lost.lock()
    }
    fn reads(&self) -> usize {
        self.streams.0.lock().reads
    }
}

#[tokio::test]
async fn delivers_in_order_and_drops_duplicates_without_reading() {
    let r = rig(4, [], 4);
    for o in [5, 6, 6, 3, 7] {
        r.delivery.offer("c", live(o, "e")).await;
    }
    assert_eq!(r.offsets(), vec![5, 6, 7]);
    assert_eq!((r.reads(), r.lost()), (0, 0));
    assert_eq!(
        r.delivery.positions(),
        vec![("c".to_owned(), 7, "e".to_owned())]
    );
}

#[tokio::test]
async fn a_gap_is_repaired_from_the_stream_before_the_publication() {
    let r = rig(4, 1..=9, 9);
    r.delivery.offer("c", live(9, "e")).await;
    assert_eq!(r.offsets(), vec![5, 6, 7, 8, 9]);
    assert_eq!((r.reads(), r.lost()), (1, 0));
    let page = r
        .delivery
        .window_page("c", Some(6), HistoryLimit::All)
        .expect("in the window");
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
}

#[tokio::test]
async fn a_gap_the_stream_no_longer_holds_is_reported_once_and_passed_over() {
    // 5 and 6 were trimmed away.
    let r = rig(4, 7..=9, 9);
    r.delivery.offer("c", live(8, "e")).await;
    assert_eq!(r.lost(), 1);
    assert_eq!(r.offsets(), vec![8], "continues after the hole");
    r.delivery.offer("c", live(9, "e")).await;
    assert_eq!((r.offsets(), r.lost()), (vec![8, 9], 1));
}

#[tokio::test]
async fn a_new_epoch_is_a_reset_not_a_delivery() {
    let r = rig(4, [], 4);
    r.delivery.offer("c", live(1, "f")).await;
    assert_eq!((r.offsets(), r.lost()), (vec![], 1));
    r.delivery.offer("c", live(2, "f")).await;
    assert_eq!(r.offsets(), vec![2]);
}

#[tokio::test]
async fn catching_up_delivers_what_the_stream_holds_past_the_node() {
    let r = rig(4, 1..=7, 7);
    r.delivery.read_up("c").await;
    assert_eq!((r.offsets(), r.lost()), (vec![5, 6, 7], 0));
    // At the top already: nothing more, nothing lost.
    r.delivery.read_up("c").await;
    assert_eq!((r.offsets().len(), r.lost()), (3, 0));
}

#[tokio::test]
async fn catching_up_past_a_trimmed_tail_or_into_a_new_epoch_is_a_loss() {
    let r = rig(4, [], 7);
    r.delivery.read_up("c").await;
    assert_eq!((r.offsets(), r.lost()), (vec![], 1));
    assert_eq!(
        r.delivery.positions(),
        vec![("c".to_owned(), 7, "e".to_owned())]
    );

    let r = rig(4, [], 2);
    r.streams.0.lock().epoch = "f".into();
    r.delivery.read_up("c").await;
    assert_eq!(r.lost(), 1);
    assert_eq!(
        r.delivery.positions(),
        vec![("c".to_owned(), 2, "f".to_owned())]
    );
}

#[tokio::test]
async fn channels_not_followed_are_ignored() {
    let r = rig(4, 1..=9, 9);
    r.delivery.untrack(&["c".to_owned()]);
    r.delivery.offer("c", live(9, "e")).await;
    r.delivery.read_up("c").await;
    assert_eq!((r.offsets(), r.lost(), r.reads()), (vec![], 0, 0));
}
