//! Rules for history and presence reads that client commands and the server API share,
//! so the two can never answer the same question differently.

use crate::config::NamespaceConfig;
use herald_broker::HistoryQuery;
use herald_protocol::{ClientInfo, ErrorCode, HistoryLimit, StreamPosition};
use std::collections::HashSet;

/// The broker query for a history request: `limit` as the wire sends it (see
/// [`HistoryLimit::from_wire`]), capped at the namespace's history size.
pub(crate) fn history_query(
    ns: &NamespaceConfig,
    since: Option<&StreamPosition>,
    limit: i64,
    reverse: bool,
) -> HistoryQuery {
    HistoryQuery {
        since_offset: since.map(|s| s.offset),
        limit: HistoryLimit::from_wire(limit).capped(ns.history_size),
        reverse,
        not_before: None,
    }
}

/// A `since` position from another epoch cannot be continued: error 112.
pub(crate) fn check_since_epoch(
    since: Option<&StreamPosition>,
    epoch: &str,
) -> Result<(), ErrorCode> {
    match since {
        Some(s) if !s.epoch.is_empty() && s.epoch != epoch => Err(ErrorCode::UnrecoverablePosition),
        _ => Ok(()),
    }
}

/// Clients present and distinct users among them.
pub(crate) fn presence_stats(infos: &[ClientInfo]) -> (usize, usize) {
    let users: HashSet<&str> = infos.iter().map(|i| i.user.as_str()).collect();
    (infos.len(), users.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_epochs() {
        let ns = NamespaceConfig {
            history_size: 10,
            ..NamespaceConfig::default()
        };
        let limit = |wire| history_query(&ns, None, wire, false).limit;
        assert_eq!(limit(0), HistoryLimit::PositionOnly);
        assert_eq!(limit(-1), HistoryLimit::at_most(10));
        assert_eq!(limit(3), HistoryLimit::at_most(3));
        assert_eq!(limit(500), HistoryLimit::at_most(10));
        let since = StreamPosition {
            offset: 4,
            epoch: "a".into(),
        };
        assert_eq!(
            history_query(&ns, Some(&since), 1, true).since_offset,
            Some(4)
        );
        assert_eq!(check_since_epoch(Some(&since), "a"), Ok(()));
        assert_eq!(
            check_since_epoch(Some(&since), "b"),
            Err(ErrorCode::UnrecoverablePosition)
        );
        let no_epoch = StreamPosition {
            offset: 4,
            epoch: String::new(),
        };
        assert_eq!(check_since_epoch(Some(&no_epoch), "b"), Ok(()));
        assert_eq!(check_since_epoch(None, "b"), Ok(()));
    }

    #[test]
    fn stats_count_distinct_users() {
        let who = |user: &str, client: &str| ClientInfo {
            user: user.into(),
            client: client.into(),
            ..ClientInfo::default()
        };
        assert_eq!(
            presence_stats(&[who("1", "a"), who("1", "b"), who("2", "c")]),
            (3, 2)
        );
        assert_eq!(presence_stats(&[]), (0, 0));
    }
}
