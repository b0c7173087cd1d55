//! The application's side of a subscription: the handle that yields its events.

use crate::error::ClientError;
use crate::event::SubscriptionEvent;
use crate::task::Control;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A subscription to one channel. Yields [`SubscriptionEvent`]s until it ends; keeps the
/// client's connection task alive while it exists. Dropping it unsubscribes.
///
/// Events are buffered per subscription. A consumer that falls further behind than the
/// buffer ([`ClientBuilder::subscription_buffer`](crate::ClientBuilder::subscription_buffer))
/// is unsubscribed on the server and resubscribed with recovery once it has read half of
/// the backlog, so the connection never waits for it and no publication is silently skipped.
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    key: u64,
    events: mpsc::Receiver<SubscriptionEvent>,
    control: mpsc::UnboundedSender<Control>,
    timeout: Duration,
    unsubscribed: bool,
}

impl Subscription {
    pub(crate) fn new(
        channel: String,
        key: u64,
        events: mpsc::Receiver<SubscriptionEvent>,
        control: mpsc::UnboundedSender<Control>,
        timeout: Duration,
    ) -> Self {
        Self {
            channel,
            key,
            events,
            control,
            timeout,
            unsubscribed: false,
        }
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event; `None` once the subscription has ended (after a final
    /// [`SubscriptionEvent::Unsubscribed`] or [`SubscriptionEvent::Error`], or when the
    /// client was shut down).
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }

    /// Ends the subscription: removes it locally at once (the stream yields
    /// `Unsubscribed` with code 0, then `None`) and, when connected, waits for the
    /// server's `unsubscribe` reply.
    pub async fn unsubscribe(&mut self) -> Result<(), ClientError> {
        if self.unsubscribed {
            return Ok(());
        }
        self.unsubscribed = true;
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Unsubscribe {
                channel: self.channel.clone(),
                key: self.key,
                reply: Some(tx),
            })
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result.map(drop),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.unsubscribed {
            let _ = self.control.send(Control::Unsubscribe {
                channel: std::mem::take(&mut self.channel),
                key: self.key,
                reply: None,
            });
        }
    }
}
