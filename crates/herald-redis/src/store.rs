//! The command connection's side of the backbone: publishing, reading streams and their
//! meta, presence and join/leave events, each turned into the library's keys and
//! arguments and its replies read back.

use crate::envelope;
use crate::error::{protocol, unavailable};
use crate::keys::Keys;
use crate::library::Library;
use crate::metrics::RedisMetrics;
use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::*;
use herald_broker::{
    BrokerError, HistoryPage, JoinLeave, PublishOutcome, PublishRequest, new_epoch,
};
use herald_protocol::{ClientInfo, HistoryLimit, StreamPosition};
use std::time::Duration;
use tokio::time::Instant;

/// The largest offset passed to the Lua functions (see [`Store::read`]).
const MAX_LUA_OFFSET: u64 = 99_999_999_999_999;

/// A channel's epoch and top offset as its meta key holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StreamMeta {
    /// `None` when the meta is gone (never published, or Redis lost its data).
    pub(crate) epoch: Option<String>,
    /// The newest offset (0 when unknown).
    pub(crate) top: u64,
}

/// What the delivery safety nets read from Redis: a seam, so their logic can be tested
/// without a server.
#[async_trait]
pub(crate) trait Streams: Send + Sync + 'static {
    /// Reads a channel's history after (or, `reverse`, before) `since` and its position;
    /// at most `limit` publications.
    async fn read(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: HistoryLimit,
        reverse: bool,
    ) -> Result<HistoryPage, BrokerError>;

    /// Reads a channel's meta.
    async fn meta(&self, channel: &str) -> Result<StreamMeta, BrokerError>;
}

/// Settings the commands need.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    /// Sharded pub/sub (Redis Cluster).
    pub(crate) cluster: bool,
    /// How long a channel's meta outlives its last publication.
    pub(crate) meta_ttl: Duration,
    /// How long an idempotent publish is remembered.
    pub(crate) idempotency_ttl: Duration,
}

/// Commands on the command connection.
#[derive(Clone)]
pub(crate) struct Store {
    client: Client,
    library: Library,
    keys: Keys,
    settings: StoreSettings,
    metrics: RedisMetrics,
}

/// Whole seconds for a TTL argument, at least 1 (0 would mean "expire now").
fn secs(d: Duration) -> String {
    d.as_secs().max(1).to_string()
}

impl Store {
    /// Commands through `client`, naming keys with `keys`.
    pub(crate) fn new(
        client: Client,
        keys: Keys,
        settings: StoreSettings,
        metrics: RedisMetrics,
    ) -> Self {
        Self {
            library: Library::new(client.clone(), settings.cluster),
            client,
            keys,
            settings,
            metrics,
        }
    }

    /// Whether the command connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Publishes through `herald_publish`.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError> {
        let keys = &self.keys;
        let mut names = vec![keys.stream(channel), keys.meta(channel)];
        if let Some(k) = &request.idempotency_key {
            names.push(keys.idempotency(channel, k));
        }
        let size = if request.keeps_history() {
            request.history_size
        } else {
            0
        };
        let args = vec![
            keys.pubsub(channel),
            request.data.get().to_owned(),
            size.to_string(),
            secs(request.history_ttl),
            secs(self.settings.meta_ttl),
            new_epoch(),
            envelope::encode_info(request.info.as_ref()),
            envelope::encode_tags(&request.tags, &request.origin),
            secs(self.settings.idempotency_ttl),
            if self.settings.cluster { "1" } else { "0" }.to_owned(),
            request.version.to_string(),
            request.version_epoch.clone(),
        ];
        let started = Instant::now();
        let reply = self.library.call("herald_publish", names, args).await?;
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        let mut parts = reply.into_array().into_iter();
        let offset = parts
            .next()
            .and_then(|v| v.as_u64())
            .ok_or_else(|| protocol("publish reply without offset"))?;
        let epoch = parts.next().and_then(|v| v.as_string()).unwrap_or_default();
        let outcome = parts.next().and_then(|v| v.as_u64());
        Ok(PublishOutcome {
            position: StreamPosition { offset, epoch },
            duplicate: outcome == Some(1),
            suppressed: outcome == Some(2),
        })
    }

    /// Removes a channel's stored publications (its meta, and so its position, stays).
    pub(crate) async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        self.client
            .del::<i64, _>(self.keys.stream(channel))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn presence_keys(&self, channel: &str) -> Vec<String> {
        vec![
            self.keys.presence(channel),
            self.keys.presence_expiry(channel),
        ]
    }

    /// Adds or refreshes a present client for `ttl`.
    pub(crate) async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let args = vec![
            info.client.clone(),
            envelope::encode_info(Some(info)),
            ttl_ms.to_string(),
        ];
        self.library
            .call("herald_presence_add", self.presence_keys(channel), args)
            .await
            .map(|_| ())
    }

    /// Removes a present client.
    pub(crate) async fn remove_presence(
        &self,
        channel: &str,
        client: &str,
    ) -> Result<(), BrokerError> {
        self.library
            .call(
                "herald_presence_remove",
                self.presence_keys(channel),
                vec![client.to_owned()],
            )
            .await
            .map(|_| ())
    }

    /// Everyone present; entries that cannot be read are left out.
    pub(crate) async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let reply = self
            .library
            .call("herald_presence", self.presence_keys(channel), Vec::new())
            .await?;
        let mut out = Vec::new();
        let mut it = reply.into_array().into_iter();
        while let (Some(_client), Some(info)) = (it.next(), it.next()) {
            let bytes = info.into_bytes().unwrap_or_default();
            if let Ok(info) = serde_json::from_slice::<ClientInfo>(&bytes) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Takes one token from a user's publish bucket (`herald_rate`).
    pub(crate) async fn take_user_publish(
        &self,
        user: &str,
        quota: herald_broker::Quota,
    ) -> Result<bool, BrokerError> {
        let interval_us = u64::try_from(quota.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let reply = self
            .library
            .call(
                "herald_rate",
                vec![self.keys.user_publishes(user)],
                vec![interval_us.to_string(), quota.burst().to_string()],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    /// Admits (or refreshes) one connection of a user (`herald_conn_admit`).
    pub(crate) async fn admit_connection(
        &self,
        user: &str,
        client: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply = self
            .library
            .call(
                "herald_conn_admit",
                vec![self.keys.user_connections(user)],
                vec![client.to_owned(), limit.to_string(), ttl_ms.to_string()],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    /// Gives back a connection's slot (`herald_conn_release`).
    pub(crate) async fn release_connection(
        &self,
        user: &str,
        client: &str,
    ) -> Result<(), BrokerError> {
        self.library
            .call(
                "herald_conn_release",
                vec![self.keys.user_connections(user)],
                vec![client.to_owned()],
            )
            .await
            .map(|_| ())
    }

    /// Sends a join or leave on the channel's pub/sub, in order with its publications.
    pub(crate) async fn publish_join_leave(
        &self,
        channel: &str,
        event: &JoinLeave,
    ) -> Result<(), BrokerError> {
        let payload = Bytes::from(envelope::encode_join_leave(event));
        self.send(self.keys.pubsub(channel), payload)
            .await
            .map_err(unavailable)
    }

    /// Sends a liveness probe to a node's own probe channel.
    pub(crate) async fn send_probe(&self, probe_channel: &str) -> Result<(), fred::error::Error> {
        self.send(probe_channel.to_owned(), Bytes::from_static(b"probe"))
            .await
    }

    /// Sends a message to a node's control channel: `false` when no node listens there.
    pub(crate) async fn send_to_node(
        &self,
        node: &str,
        payload: Bytes,
    ) -> Result<bool, BrokerError> {
        let name = self.keys.node(node);
        let receivers: i64 = if self.settings.cluster {
            self.client.spublish(name, payload).await
        } else {
            self.client.publish(name, payload).await
        }
        .map_err(unavailable)?;
        Ok(receivers > 0)
    }

    /// Redis's own clock, in Unix milliseconds (read on the shard of the reports hash),
    /// so that nodes whose clocks differ still agree on when a report expires.
    async fn server_ms(&self) -> Result<u64, BrokerError> {
        let slot = fred::util::redis_keyslot(self.keys.nodes().as_bytes());
        let reply: Vec<String> = self
            .client
            .custom(
                fred::types::CustomCommand::new_static(
                    "TIME",
                    fred::types::ClusterHash::Custom(slot),
                    false,
                ),
                Vec::<String>::new(),
            )
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [secs, micros] => match (secs.parse::<u64>(), micros.parse::<u64>()) {
                (Ok(secs), Ok(micros)) => Ok(secs * 1000 + micros / 1000),
                _ => Err(protocol(&format!("TIME answered {reply:?}"))),
            },
            _ => Err(protocol(&format!("TIME answered {reply:?}"))),
        }
    }

    /// Stores a node's report in the reports hash as `<expiry in Unix ms> <report>`,
    /// the expiry by Redis's clock.
    pub(crate) async fn report_node(
        &self,
        node: &str,
        report: &[u8],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let until = self
            .server_ms()
            .await?
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut value = Vec::with_capacity(report.len() + 21);
        value.extend_from_slice(until.to_string().as_bytes());
        value.push(b' ');
        value.extend_from_slice(report);
        self.client
            .hset::<(), _, _>(self.keys.nodes(), (node, Bytes::from(value)))
            .await
            .map_err(unavailable)
    }

    /// The unexpired reports. Fields expired for over a minute (nodes that died) are
    /// removed on the way, so a live node that reports again meanwhile is never removed.
    pub(crate) async fn nodes(&self) -> Result<Vec<Bytes>, BrokerError> {
        let now = self.server_ms().await?;
        let all: std::collections::HashMap<String, Bytes> = self
            .client
            .hgetall(self.keys.nodes())
            .await
            .map_err(unavailable)?;
        let mut live = Vec::with_capacity(all.len());
        let mut dead = Vec::new();
        for (node, value) in all {
            let Some(space) = value.iter().position(|b| *b == b' ') else {
                dead.push(node);
                continue;
            };
            let until = std::str::from_utf8(&value[..space])
                .ok()
                .and_then(|t| t.parse::<u64>().ok());
            match until {
                Some(until) if until > now => live.push(value.slice(space + 1..)),
                Some(until) if now - until < 60_000 => {}
                _ => dead.push(node),
            }
        }
        if !dead.is_empty()
            && let Err(e) = self.client.hdel::<(), _, _>(self.keys.nodes(), dead).await
        {
            // The list is right without the clean-up; the next read tries again.
            tracing::debug!(error = %herald_broker::Chain(&e), "stale node reports not removed");
        }
        Ok(live)
    }

    /// Removes a node's report.
    pub(crate) async fn forget_node(&self, node: &str) -> Result<(), BrokerError> {
        self.client
            .hdel::<(), _, _>(self.keys.nodes(), node)
            .await
            .map_err(unavailable)
    }

    async fn send(&self, name: String, payload: Bytes) -> Result<(), fred::error::Error> {
        if self.settings.cluster {
            self.client.spublish::<(), _, _>(name, payload).await
        } else {
            self.client.publish::<(), _, _>(name, payload).await
        }
    }
}

#[async_trait]
impl Streams for Store {
    async fn read(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: HistoryLimit,
        reverse: bool,
    ) -> Result<HistoryPage, BrokerError> {
        let keys = vec![self.keys.stream(channel), self.keys.meta(channel)];
        // Lua prints numbers of 1e14 and above in exponent form, which no stream ID
        // parses as; no real stream gets near, so a larger position means "past the top".
        let since = since.map_or_else(|| "-1".to_owned(), |s| s.min(MAX_LUA_OFFSET).to_string());
        let args = vec![
            since,
            limit.to_signed().to_string(),
            if reverse { "1" } else { "0" }.to_owned(),
            new_epoch(),
            secs(self.settings.meta_ttl),
        ];
        let reply = self.library.call("herald_history", keys, args).await?;
        parse_history(reply)
    }

    async fn meta(&self, channel: &str) -> Result<StreamMeta, BrokerError> {
        let fields = self
            .client
            .hmget::<Vec<Option<String>>, _, _>(self.keys.meta(channel), vec!["epoch", "top"])
            .await
            .map_err(unavailable)?;
        Ok(StreamMeta {
            epoch: fields.first().cloned().flatten(),
            top: fields
                .get(1)
                .cloned()
                .flatten()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// Reads `herald_history`'s `{top, epoch, entries}`.
fn parse_history(reply: Value) -> Result<HistoryPage, BrokerError> {
    let mut parts = reply.into_array().into_iter();
    let top = parts
        .next()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| protocol("history reply without top"))?;
    let epoch = parts
        .next()
        .and_then(|v| v.as_string())
        .ok_or_else(|| protocol("history reply without epoch"))?;
    let entries = parts.next().map(Value::into_array).unwrap_or_default();
    let mut publications = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut e = entry.into_array().into_iter();
        let id = e.next().and_then(|v| v.as_string()).unwrap_or_default();
        let offset: u64 = id
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| protocol("stream entry id is not <offset>-0"))?;
        let fields = e.next().map(Value::into_array).unwrap_or_default();
        let (mut data, mut info, mut tags) = (Bytes::new(), Bytes::new(), Bytes::new());
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let v = v.into_bytes().unwrap_or_default();
            match k.as_string().as_deref() {
                Some("d") => data = v,
                Some("i") => info = v,
                Some("t") => tags = v,
                _ => {}
            }
        }
        publications.push(envelope::publication(offset, &data, &info, &tags));
    }
    Ok(HistoryPage {
        publications,
        position: StreamPosition { offset: top, epoch },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, data: &str) -> Value {
        Value::Array(vec![
            Value::from(id),
            Value::Array(vec![
                Value::from("d"),
                Value::from(data),
                Value::from("i"),
                Value::from(""),
                Value::from("t"),
                Value::from(""),
            ]),
        ])
    }

    #[test]
    fn reads_a_history_reply() {
        let reply = Value::Array(vec![
            Value::Integer(9),
            Value::from("ep"),
            Value::Array(vec![entry("8-0", "1"), entry("9-0", r#"{"a":2}"#)]),
        ]);
        let page = parse_history(reply).expect("parses");
        assert_eq!(
            (page.position.offset, page.position.epoch.as_str()),
            (9, "ep")
        );
        let got: Vec<(u64, &str)> = page
            .publications
            .iter()
            .map(|p| (p.offset, p.data.get()))
            .collect();
        assert_eq!(got, vec![(8, "1"), (9, r#"{"a":2}"#)]);
    }

    #[test]
    fn a_malformed_history_reply_is_an_error() {
        assert!(parse_history(Value::Array(vec![])).is_err());
        let bad_id = Value::Array(vec![
            Value::Integer(1),
            Value::from("ep"),
            Value::Array(vec![entry("x-0", "1")]),
        ]);
        assert!(matches!(
            parse_history(bad_id),
            Err(BrokerError::Protocol(_))
        ));
    }

    #[test]
    fn ttls_are_whole_seconds_and_never_zero() {
        assert_eq!(secs(Duration::from_millis(10)), "1");
        assert_eq!(secs(Duration::from_secs(300)), "300");
    }
}
