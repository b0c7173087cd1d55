//! Conversions between the Protobuf messages and Herald's wire types, so that both
//! encodings share one [`Command`] and [`Reply`] and one command path in the gateway.
//!
//! Payloads are JSON in Herald: outgoing [`RawJson`] travels as its text's bytes, and
//! incoming `bytes` must be valid JSON (empty means absent).

use super::messages as pb;
use crate::{RawJson, RawJsonError, types as t};

/// A command whose payload bytes are not JSON.
#[derive(Debug, thiserror::Error)]
#[error("command {id}: `{field}` is not valid JSON")]
pub struct NotJson {
    /// The id of the command (0 for `send`), so that it can be answered.
    pub id: u32,
    /// The field that held the bytes.
    pub field: &'static str,
    /// What is wrong with them.
    #[source]
    pub source: RawJsonError,
}

fn json_in(bytes: Vec<u8>) -> Result<Option<RawJson>, RawJsonError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    RawJson::from_bytes(bytes).map(Some)
}

fn json_out(json: Option<&RawJson>) -> Vec<u8> {
    json.map(|j| j.get().as_bytes().to_vec())
        .unwrap_or_default()
}

/// Converts a decoded command; `Err` names the field whose bytes are not JSON.
pub(super) fn command_in(c: pb::Command) -> Result<t::Command, NotJson> {
    let id = c.id;
    let bad = |field: &'static str| move |source| NotJson { id, field, source };
    Ok(t::Command {
        id,
        connect: c
            .connect
            .map(|r| connect_request_in(r).map_err(bad("connect.data")))
            .transpose()?,
        subscribe: c
            .subscribe
            .map(|r| subscribe_request_in(r).map_err(bad("subscribe.data")))
            .transpose()?,
        unsubscribe: c
            .unsubscribe
            .map(|r| t::UnsubscribeRequest { channel: r.channel }),
        publish: c
            .publish
            .map(|r| {
                Ok(t::PublishRequest {
                    channel: r.channel,
                    data: json_in(r.data).map_err(bad("publish.data"))?,
                    idempotency_key: r.idempotency_key,
                })
            })
            .transpose()?,
        presence: c
            .presence
            .map(|r| t::PresenceRequest { channel: r.channel }),
        presence_stats: c
            .presence_stats
            .map(|r| t::PresenceStatsRequest { channel: r.channel }),
        history: c.history.map(|r| t::HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(|s| t::StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            reverse: r.reverse,
        }),
        rpc: c
            .rpc
            .map(|r| {
                Ok(t::RpcRequest {
                    data: json_in(r.data).map_err(bad("rpc.data"))?,
                    method: r.method,
                })
            })
            .transpose()?,
        refresh: c.refresh.map(|r| t::RefreshRequest { token: r.token }),
        sub_refresh: c.sub_refresh.map(|r| t::SubRefreshRequest {
            channel: r.channel,
            token: r.token,
        }),
        send: c
            .send
            .map(|r| {
                Ok(t::SendRequest {
                    data: json_in(r.data).map_err(bad("send.data"))?,
                })
            })
            .transpose()?,
    })
}

fn connect_request_in(r: pb::ConnectRequest) -> Result<t::ConnectRequest, RawJsonError> {
    Ok(t::ConnectRequest {
        token: r.token,
        data: json_in(r.data)?,
        subs: r
            .subs
            .into_iter()
            .map(|(k, v)| Ok((k, subscribe_request_in(v)?)))
            .collect::<Result<_, RawJsonError>>()?,
        name: r.name,
        version: r.version,
        headers: r.headers,
    })
}

fn subscribe_request_in(r: pb::SubscribeRequest) -> Result<t::SubscribeRequest, RawJsonError> {
    Ok(t::SubscribeRequest {
        // Delta compression is offered to JSON clients only (its forms are JSON text).
        delta: Default::default(),
        channel: r.channel,
        token: r.token,
        recover: r.recover,
        epoch: r.epoch,
        offset: r.offset,
        data: json_in(r.data)?,
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
        tf: r.tf.map(filter_in),
        flag: r.flag,
    })
}

fn filter_in(n: pb::FilterNode) -> crate::FilterNode {
    crate::FilterNode {
        op: n.op,
        key: n.key,
        cmp: n.cmp,
        val: n.val,
        vals: n.vals,
        nodes: n.nodes.into_iter().map(filter_in).collect(),
    }
}

fn filter_out(n: &crate::FilterNode) -> pb::FilterNode {
    pb::FilterNode {
        op: n.op.clone(),
        key: n.key.clone(),
        cmp: n.cmp.clone(),
        val: n.val.clone(),
        vals: n.vals.clone(),
        nodes: n.nodes.iter().map(filter_out).collect(),
    }
}

/// Converts a command for encoding.
pub(super) fn command_out(c: &t::Command) -> pb::Command {
    pb::Command {
        id: c.id,
        connect: c.connect.as_ref().map(|r| pb::ConnectRequest {
            token: r.token.clone(),
            data: json_out(r.data.as_ref()),
            subs: r
                .subs
                .iter()
                .map(|(k, v)| (k.clone(), subscribe_request_out(v)))
                .collect(),
            name: r.name.clone(),
            version: r.version.clone(),
            headers: r.headers.clone(),
        }),
        subscribe: c.subscribe.as_ref().map(subscribe_request_out),
        unsubscribe: c.unsubscribe.as_ref().map(|r| pb::UnsubscribeRequest {
            channel: r.channel.clone(),
        }),
        publish: c.publish.as_ref().map(|r| pb::PublishRequest {
            channel: r.channel.clone(),
            data: json_out(r.data.as_ref()),
            idempotency_key: r.idempotency_key.clone(),
        }),
        presence: c.presence.as_ref().map(|r| pb::PresenceRequest {
            channel: r.channel.clone(),
        }),
        presence_stats: c.presence_stats.as_ref().map(|r| pb::PresenceStatsRequest {
            channel: r.channel.clone(),
        }),
        history: c.history.as_ref().map(|r| pb::HistoryRequest {
            channel: r.channel.clone(),
            limit: r.limit,
            since: r.since.as_ref().map(|s| pb::StreamPosition {
                offset: s.offset,
                epoch: s.epoch.clone(),
            }),
            reverse: r.reverse,
        }),
        send: c.send.as_ref().map(|r| pb::SendRequest {
            data: json_out(r.data.as_ref()),
        }),
        rpc: c.rpc.as_ref().map(|r| pb::RpcRequest {
            data: json_out(r.data.as_ref()),
            method: r.method.clone(),
        }),
        refresh: c.refresh.as_ref().map(|r| pb::RefreshRequest {
            token: r.token.clone(),
        }),
        sub_refresh: c.sub_refresh.as_ref().map(|r| pb::SubRefreshRequest {
            channel: r.channel.clone(),
            token: r.token.clone(),
        }),
    }
}

fn subscribe_request_out(r: &t::SubscribeRequest) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        channel: r.channel.clone(),
        token: r.token.clone(),
        recover: r.recover,
        epoch: r.epoch.clone(),
        offset: r.offset,
        data: json_out(r.data.as_ref()),
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
        tf: r.tf.as_ref().map(filter_out),
        flag: r.flag,
    }
}

/// Converts a reply (or push, or ping) for encoding.
pub(super) fn reply_out(r: &t::Reply) -> pb::Reply {
    pb::Reply {
        id: r.id,
        error: r.error.as_ref().map(|e| pb::Error {
            code: e.code,
            message: e.message.clone(),
            temporary: e.temporary,
        }),
        push: r.push.as_ref().map(push_out),
        connect: r.connect.as_ref().map(|c| pb::ConnectResult {
            client: c.client.clone(),
            version: c.version.clone(),
            expires: c.expires,
            ttl: c.ttl,
            data: json_out(c.data.as_ref()),
            subs: c
                .subs
                .iter()
                .map(|(k, v)| (k.clone(), subscribe_result_out(v)))
                .collect(),
            ping: c.ping,
            pong: c.pong,
            session: c.session.clone(),
            node: c.node.clone(),
        }),
        subscribe: r.subscribe.as_ref().map(subscribe_result_out),
        unsubscribe: r.unsubscribe.as_ref().map(|_| pb::UnsubscribeResult {}),
        publish: r.publish.as_ref().map(|p| pb::PublishResult {
            offset: p.offset,
            epoch: p.epoch.clone(),
        }),
        presence: r.presence.as_ref().map(|p| pb::PresenceResult {
            presence: p
                .presence
                .iter()
                .map(|(k, v)| (k.clone(), client_info_out(v)))
                .collect(),
        }),
        presence_stats: r.presence_stats.as_ref().map(|p| pb::PresenceStatsResult {
            num_clients: p.num_clients,
            num_users: p.num_users,
        }),
        history: r.history.as_ref().map(|h| pb::HistoryResult {
            publications: h.publications.iter().map(publication_out).collect(),
            epoch: h.epoch.clone(),
            offset: h.offset,
        }),
        rpc: r.rpc.as_ref().map(|p| pb::RpcResult {
            data: json_out(p.data.as_ref()),
        }),
        refresh: r.refresh.as_ref().map(|p| pb::RefreshResult {
            client: p.client.clone(),
            version: p.version.clone(),
            expires: p.expires,
            ttl: p.ttl,
        }),
        sub_refresh: r.sub_refresh.as_ref().map(|p| pb::SubRefreshResult {
            expires: p.expires,
            ttl: p.ttl,
        }),
    }
}

fn subscribe_result_out(s: &t::SubscribeResult) -> pb::SubscribeResult {
    pb::SubscribeResult {
        expires: s.expires,
        ttl: s.ttl,
        recoverable: s.recoverable,
        epoch: s.epoch.clone(),
        publications: s.publications.iter().map(publication_out).collect(),
        recovered: s.recovered,
        offset: s.offset,
        positioned: s.positioned,
        data: json_out(s.data.as_ref()),
        was_recovering: s.was_recovering,
        join_leave: s.join_leave,
    }
}

/// A publication push, built from borrowed parts (the hub encodes each publication
/// once per node).
pub(super) fn publication_push_out(channel: &str, publication: &t::Publication) -> pb::Reply {
    pb::Reply {
        push: Some(pb::Push {
            channel: channel.to_owned(),
            r#pub: Some(publication_out(publication)),
            ..pb::Push::default()
        }),
        ..pb::Reply::default()
    }
}

fn push_out(p: &t::Push) -> pb::Push {
    pb::Push {
        channel: p.channel.clone(),
        r#pub: p.publication.as_ref().map(publication_out),
        join: p.join.as_ref().map(|j| pb::Join {
            info: Some(client_info_out(&j.info)),
        }),
        leave: p.leave.as_ref().map(|l| pb::Leave {
            info: Some(client_info_out(&l.info)),
        }),
        unsubscribe: p.unsubscribe.as_ref().map(|u| pb::Unsubscribe {
            code: u.code,
            reason: u.reason.clone(),
        }),
        message: p.message.as_ref().map(|m| pb::Message {
            data: json_out(Some(&m.data)),
        }),
        // The push form of a subscription carries only these parts of the result.
        subscribe: p.subscribe.as_ref().map(|s| pb::Subscribe {
            recoverable: s.recoverable,
            epoch: s.epoch.clone(),
            offset: s.offset,
            positioned: s.positioned,
            data: json_out(s.data.as_ref()),
        }),
        disconnect: p.disconnect.as_ref().map(|d| pb::Disconnect {
            code: d.code,
            reason: d.reason.clone(),
            reconnect: u16::try_from(d.code).is_ok_and(crate::codes::should_reconnect),
        }),
    }
}

fn client_info_out(i: &t::ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: i.user.clone(),
        client: i.client.clone(),
        conn_info: json_out(i.conn_info.as_ref()),
        chan_info: json_out(i.chan_info.as_ref()),
    }
}

fn publication_out(p: &t::Publication) -> pb::Publication {
    pb::Publication {
        data: json_out(Some(&p.data)),
        info: p.info.as_ref().map(client_info_out),
        offset: p.offset,
        tags: p.tags.clone(),
    }
}

/// Converts a decoded reply; its payload bytes must be JSON.
pub(super) fn reply_in(r: pb::Reply) -> Result<t::Reply, RawJsonError> {
    Ok(t::Reply {
        id: r.id,
        error: r.error.map(|e| t::Error {
            code: e.code,
            message: e.message,
            temporary: e.temporary,
        }),
        push: r.push.map(push_in).transpose()?,
        connect: r
            .connect
            .map(|c| {
                Ok::<_, RawJsonError>(t::ConnectResult {
                    client: c.client,
                    version: c.version,
                    data: json_in(c.data)?,
                    subs: c
                        .subs
                        .into_iter()
                        .map(|(k, v)| Ok((k, subscribe_result_in(v)?)))
                        .collect::<Result<_, RawJsonError>>()?,
                    expires: c.expires,
                    ttl: c.ttl,
                    ping: c.ping,
                    pong: c.pong,
                    session: c.session,
                    node: c.node,
                })
            })
            .transpose()?,
        subscribe: r.subscribe.map(subscribe_result_in).transpose()?,
        unsubscribe: r.unsubscribe.map(|_| t::UnsubscribeResult {}),
        publish: r.publish.map(|p| t::PublishResult {
            offset: p.offset,
            epoch: p.epoch,
        }),
        presence: r
            .presence
            .map(|p| {
                Ok::<_, RawJsonError>(t::PresenceResult {
                    presence: p
                        .presence
                        .into_iter()
                        .map(|(k, v)| Ok((k, client_info_in(v)?)))
                        .collect::<Result<_, RawJsonError>>()?,
                })
            })
            .transpose()?,
        presence_stats: r.presence_stats.map(|p| t::PresenceStatsResult {
            num_clients: p.num_clients,
            num_users: p.num_users,
        }),
        history: r
            .history
            .map(|h| {
                Ok::<_, RawJsonError>(t::HistoryResult {
                    publications: publications_in(h.publications)?,
                    epoch: h.epoch,
                    offset: h.offset,
                })
            })
            .transpose()?,
        rpc: r
            .rpc
            .map(|p| {
                Ok::<_, RawJsonError>(t::RpcResult {
                    data: json_in(p.data)?,
                })
            })
            .transpose()?,
        refresh: r.refresh.map(|p| t::RefreshResult {
            client: p.client,
            version: p.version,
            expires: p.expires,
            ttl: p.ttl,
        }),
        sub_refresh: r.sub_refresh.map(|p| t::SubRefreshResult {
            expires: p.expires,
            ttl: p.ttl,
        }),
    })
}

fn subscribe_result_in(s: pb::SubscribeResult) -> Result<t::SubscribeResult, RawJsonError> {
    Ok(t::SubscribeResult {
        // Delta compression is offered to JSON clients only (its forms are JSON text).
        delta: Default::default(),
        expires: s.expires,
        ttl: s.ttl,
        recoverable: s.recoverable,
        epoch: s.epoch,
        publications: publications_in(s.publications)?,
        recovered: s.recovered,
        offset: s.offset,
        positioned: s.positioned,
        data: json_in(s.data)?,
        was_recovering: s.was_recovering,
        join_leave: s.join_leave,
    })
}

fn push_in(p: pb::Push) -> Result<t::Push, RawJsonError> {
    Ok(t::Push {
        channel: p.channel,
        publication: p.r#pub.map(publication_in).transpose()?,
        join: p
            .join
            .map(|j| client_info_in(j.info.unwrap_or_default()).map(|info| t::Join { info }))
            .transpose()?,
        leave: p
            .leave
            .map(|l| client_info_in(l.info.unwrap_or_default()).map(|info| t::Leave { info }))
            .transpose()?,
        unsubscribe: p.unsubscribe.map(|u| t::Unsubscribe {
            code: u.code,
            reason: u.reason,
        }),
        message: p
            .message
            .map(|m| {
                Ok::<_, RawJsonError>(t::Message {
                    data: json_in(m.data)?.unwrap_or_else(RawJson::null),
                })
            })
            .transpose()?,
        subscribe: p
            .subscribe
            .map(|s| {
                Ok::<_, RawJsonError>(t::SubscribeResult {
                    recoverable: s.recoverable,
                    epoch: s.epoch,
                    offset: s.offset,
                    positioned: s.positioned,
                    data: json_in(s.data)?,
                    ..t::SubscribeResult::default()
                })
            })
            .transpose()?,
        disconnect: p.disconnect.map(|d| t::Disconnect {
            code: d.code,
            reason: d.reason,
        }),
    })
}

fn client_info_in(i: pb::ClientInfo) -> Result<t::ClientInfo, RawJsonError> {
    Ok(t::ClientInfo {
        user: i.user,
        client: i.client,
        conn_info: json_in(i.conn_info)?,
        chan_info: json_in(i.chan_info)?,
    })
}

fn publications_in(ps: Vec<pb::Publication>) -> Result<Vec<t::Publication>, RawJsonError> {
    ps.into_iter().map(publication_in).collect()
}

fn publication_in(p: pb::Publication) -> Result<t::Publication, RawJsonError> {
    Ok(t::Publication {
        // Delta compression is offered to JSON clients only (its forms are JSON text).
        delta: Default::default(),
        data: json_in(p.data)?.unwrap_or_else(RawJson::null),
        info: p.info.map(client_info_in).transpose()?,
        offset: p.offset,
        tags: p.tags,
        origin: None,
    })
}
