//! When the broker's loops stop: at the node's shutdown, or when the broker is dropped
//! first; and which of the two it was.

use herald_broker::Ended;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The stop signal every loop of one broker waits on.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    node: CancellationToken,
    broker: CancellationToken,
}

impl Stop {
    /// A stop that follows `node` and also fires when the returned guard is dropped
    /// (the broker owns it, so its loops end with it).
    pub(crate) fn new(node: &CancellationToken) -> (Self, DropGuard) {
        let broker = node.child_token();
        let guard = broker.clone().drop_guard();
        (
            Self {
                node: node.clone(),
                broker,
            },
            guard,
        )
    }

    /// Resolves when the loops must end, with the reason.
    pub(crate) async fn stopped(&self) -> Ended {
        self.broker.cancelled().await;
        self.reason()
    }

    fn reason(&self) -> Ended {
        if self.node.is_cancelled() {
            Ended::Shutdown
        } else {
            Ended::OwnerGone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tells_a_shutdown_from_a_dropped_broker() {
        let node = CancellationToken::new();
        let (stop, guard) = Stop::new(&node);
        drop(guard);
        assert_eq!(stop.stopped().await, Ended::OwnerGone);
        assert!(!node.is_cancelled(), "the node goes on");

        let (stop, _guard) = Stop::new(&node);
        node.cancel();
        assert_eq!(stop.stopped().await, Ended::Shutdown);
    }
}
