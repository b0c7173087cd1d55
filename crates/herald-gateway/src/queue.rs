//! A connection's bounded queue: many senders (the hub, the connection's own
//! subscriptions), one receiver (the connection task).
//!
//! Every connection has one, so it is built for the idle case: it allocates nothing until
//! an item arrives, and gives a burst's buffer back when the receiver empties it, so
//! that neither an idle connection nor one that took a burst keeps more than a few
//! items' room.

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

/// The buffer an emptied queue keeps, in items (a larger one is let go).
const KEEP_ITEMS: usize = 8;

/// Why an item was not queued; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiving: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    waker: AtomicWaker,
}

// The queue shows its capacity only: its items are the connection's business.
impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// A queue holding at most `capacity` items (at least one).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiving: true,
        }),
        capacity: capacity.max(1),
        waker: AtomicWaker::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Queues items without waiting.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or its receiver is gone.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.state.lock();
        if !state.receiving {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.shared.waker.wake();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.shared.waker.wake();
        }
    }
}

/// Takes items in the order they were queued.
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item without waiting: `Ok(None)` when the queue is empty, `Err(())` when
    /// it is empty and every sender is gone.
    fn take(&self) -> Result<Option<T>, ()> {
        let mut state = self.shared.state.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEEP_ITEMS {
                    // Emptied: a burst's buffer goes back rather than staying at the
                    // size of the largest burst. A small one stays, so that one
                    // publication at a time does not cost an allocation each.
                    state.items = VecDeque::new();
                }
                Ok(Some(item))
            }
            None if state.senders == 0 => Err(()),
            None => Ok(None),
        }
    }

    /// The next item, waiting for one; `None` once the queue is empty and every sender
    /// is gone. Cancel-safe: an item is taken only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            match self.take() {
                Ok(Some(item)) => return Poll::Ready(Some(item)),
                Err(()) => return Poll::Ready(None),
                Ok(None) => {}
            }
            self.shared.waker.register(cx.waker());
            // An item queued between the first look and the registration woke nobody.
            match self.take() {
                Ok(Some(item)) => Poll::Ready(Some(item)),
                Err(()) => Poll::Ready(None),
                Ok(None) => Poll::Pending,
            }
        })
        .await
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        self.take().ok().flatten()
    }

    /// The buffer's capacity in items (for tests).
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.shared.state.lock().items.capacity()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.receiving = false;
        // What was queued goes now, not with the last sender.
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_in_order_and_a_full_queue_refuses() {
        let (tx, mut rx) = channel(3);
        for i in 0..3 {
            tx.try_send(i).expect("room");
        }
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(0));
        tx.try_send(4).expect("room");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn nothing_is_allocated_until_an_item_and_a_burst_buffer_is_let_go() {
        let (tx, mut rx) = channel(256);
        assert_eq!(rx.buffer_capacity(), 0);
        tx.try_send(0).expect("room");
        assert_eq!(rx.try_recv(), Some(0));
        let small = rx.buffer_capacity();
        assert!(
            small <= KEEP_ITEMS,
            "one item at a time keeps a small buffer"
        );
        for i in 0..200 {
            tx.try_send(i).expect("room");
        }
        assert!(rx.buffer_capacity() >= 200);
        while rx.try_recv().is_some() {}
        assert_eq!(
            rx.buffer_capacity(),
            0,
            "a drained burst's buffer goes back"
        );
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_an_item_from_another_task() {
        let (tx, mut rx) = channel(4);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let tx2 = tx.clone();
        std::thread::spawn(move || tx2.try_send(7).expect("room"))
            .join()
            .expect("sender thread");
        assert_eq!(waiting.await.expect("receiver task"), Some(7));
        drop(tx);
    }

    #[tokio::test]
    async fn the_receiver_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel::<u8>(4);
        let tx2 = tx.clone();
        tx.try_send(1).expect("room");
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(tx2);
        assert_eq!(waiting.await.expect("receiver task"), None);
    }

    #[tokio::test]
    async fn a_gone_receiver_refuses_items_and_frees_what_was_queued() {
        let (tx, rx) = channel(4);
        let item = Arc::new(());
        tx.try_send(item.clone()).expect("room");
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1, "the queued item was dropped");
        assert!(matches!(tx.try_send(item), Err(TrySendError::Closed(_))));
    }

    #[tokio::test]
    async fn many_senders_on_threads_lose_nothing() {
        let (tx, mut rx) = channel(1 << 20);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        tx.try_send(t * 1_000_000 + i).expect("room");
                    }
                })
            })
            .collect();
        drop(tx);
        let reader = tokio::spawn(async move {
            let mut last = [None::<u64>; 4];
            let mut n = 0;
            while let Some(v) = rx.recv().await {
                let (t, i) = ((v / 1_000_000) as usize, v % 1_000_000);
                assert!(last[t].is_none_or(|l| l + 1 == i), "out of order");
                last[t] = Some(i);
                n += 1;
            }
            n
        });
        for t in threads {
            t.join().expect("sender thread");
        }
        assert_eq!(reader.await.expect("reader task"), 40_000);
    }
}
