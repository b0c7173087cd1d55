//! The named benchmark cases: a scenario at the size one of the performance targets is
//! defined at, with the targets it checks.

use crate::scenarios::{Params, Row, Scenario};
use crate::stack::System;
use serde::Serialize;

/// How a measurement is compared with its target.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum Cmp {
    AtLeast,
    AtMost,
}

/// One performance target.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Target {
    pub id: &'static str,
    pub key: &'static str,
    pub cmp: Cmp,
    pub limit: f64,
}

impl Target {
    /// Whether `rows` meet the target; `None` when the measurement is missing.
    pub(crate) fn met(&self, rows: &[Row]) -> Option<bool> {
        let v = rows.iter().find(|r| r.key == self.key)?.value;
        if v.is_nan() {
            return Some(false);
        }
        Some(match self.cmp {
            Cmp::AtLeast => v >= self.limit,
            Cmp::AtMost => v <= self.limit,
        })
    }

    pub(crate) fn describe(&self) -> String {
        let op = match self.cmp {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
        };
        format!("{} {} {op} {}", self.id, self.key, self.limit)
    }
}

/// A scenario at a given size.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Case {
    pub name: &'static str,
    pub scenario: Scenario,
    pub full: Params,
    pub smoke: Params,
    pub targets: &'static [Target],
    /// Runs the Socket.IO peer too (false where it has no equivalent).
    pub with_peer: bool,
    /// Herald gateways; more than one run behind HAProxy processes sharing one port.
    pub gateways: usize,
}

const fn p(n: usize, rate: f64, secs: u64) -> Params {
    Params { n, rate, secs }
}

const fn t(id: &'static str, key: &'static str, cmp: Cmp, limit: f64) -> Target {
    Target {
        id,
        key,
        cmp,
        limit,
    }
}

use Cmp::{AtLeast, AtMost};

/// Every case, in the order of the targets.
pub(crate) const CASES: &[Case] = &[
    Case {
        name: "idle-max",
        scenario: Scenario::Idle,
        full: p(19_500, 0.0, 0),
        smoke: p(100, 0.0, 0),
        targets: &[t("a1", "connections", AtLeast, 19_500.0)],
        with_peer: false,
        gateways: 1,
    },
    Case {
        name: "idle",
        scenario: Scenario::Idle,
        full: p(10_000, 0.0, 0),
        smoke: p(100, 0.0, 0),
        targets: &[
            t("a2", "rss_per_conn_kib", AtMost, 8.0),
            t("a3", "rss_after_burst_per_conn_kib", AtMost, 16.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "fanout-1k",
        scenario: Scenario::Fanout,
        full: p(1_000, 1_000.0, 10),
        smoke: p(50, 100.0, 2),
        targets: &[
            t("b1", "deliveries_per_sec", AtLeast, 1_000_000.0),
            t("b1", "loss", AtMost, 0.0),
            t("b3", "cpu_us_per_delivery", AtMost, 0.75),
            t("c2", "lat_p50_ms", AtMost, 10.0),
            t("c2", "lat_p99_ms", AtMost, 50.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "peak-1k",
        scenario: Scenario::Peak,
        full: p(1_000, 0.0, 10),
        smoke: p(50, 0.0, 2),
        targets: &[t("b1", "deliveries_per_sec", AtLeast, 2_000_000.0)],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "fanout-10k",
        scenario: Scenario::Fanout,
        full: p(10_000, 100.0, 10),
        smoke: p(100, 20.0, 2),
        targets: &[
            t("b2", "deliveries_per_sec", AtLeast, 1_000_000.0),
            t("b2", "loss", AtMost, 0.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "peak-10k",
        scenario: Scenario::Peak,
        full: p(10_000, 0.0, 10),
        smoke: p(100, 0.0, 2),
        targets: &[t("b2", "deliveries_per_sec", AtLeast, 1_500_000.0)],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "latency",
        scenario: Scenario::Fanout,
        full: p(1_000, 10.0, 20),
        smoke: p(50, 10.0, 2),
        targets: &[
            t("c1", "lat_p50_ms", AtMost, 5.0),
            t("c1", "lat_p99_ms", AtMost, 15.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "broadcast",
        scenario: Scenario::Broadcast,
        full: p(10_000, 0.0, 0),
        smoke: p(100, 0.0, 0),
        targets: &[
            t("c3", "p50_ms", AtMost, 40.0),
            t("c3", "last_delivery_p99_ms", AtMost, 80.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "storm",
        scenario: Scenario::Storm,
        full: p(10_000, 0.0, 0),
        smoke: p(100, 0.0, 0),
        targets: &[
            t("d1", "caught_up_ms", AtMost, 3_000.0),
            t("d1", "gaps", AtMost, 0.0),
            t("d1", "dups", AtMost, 0.0),
            t("d2", "redis_xrange_calls", AtMost, 1.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "slow",
        scenario: Scenario::Slow,
        full: p(1_000, 200.0, 10),
        smoke: p(50, 100.0, 3),
        targets: &[
            t("e", "others_p99_change_pct", AtMost, 10.0),
            t("e", "redis_pubsub_omem_max_kib", AtMost, 32.0 * 1024.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    Case {
        name: "disruption",
        scenario: Scenario::Disruption,
        full: p(10_000, 2.0, 60),
        smoke: p(50, 10.0, 6),
        targets: &[
            t("f", "delivered_pct", AtLeast, 100.0),
            t("f", "dups", AtMost, 0.0),
        ],
        with_peer: true,
        gateways: 1,
    },
    // The fan-out latency curve, on one topology: six gateways on one Redis behind
    // HAProxy processes sharing the clients' port.
    Case {
        name: "scale-1k",
        scenario: Scenario::Scale,
        full: p(1_000, 0.0, 0),
        smoke: p(30, 0.0, 0),
        targets: &[],
        with_peer: false,
        gateways: 6,
    },
    Case {
        name: "scale-10k",
        scenario: Scenario::Scale,
        full: p(10_000, 0.0, 0),
        smoke: p(60, 0.0, 0),
        targets: &[],
        with_peer: false,
        gateways: 6,
    },
    Case {
        name: "scale-100k",
        scenario: Scenario::Scale,
        full: p(100_000, 0.0, 0),
        smoke: p(90, 0.0, 0),
        targets: &[t("s1", "connections", AtLeast, 100_000.0)],
        with_peer: false,
        gateways: 6,
    },
    // A rolling update under load: three gateways behind HAProxy, each restarted in
    // turn while publications go on.
    Case {
        name: "rolling",
        scenario: Scenario::Rolling,
        full: p(10_000, 1.0, 60),
        smoke: p(60, 10.0, 60),
        targets: &[],
        with_peer: true,
        gateways: 3,
    },
];

impl Case {
    /// Whether `system` runs this case. The Sockudo peer takes the Socket.IO peer's
    /// delivery and memory cases: the Pusher protocol has no recovery, and a stalled
    /// reader is only made for the other two protocols.
    pub(crate) fn runs_on(&self, system: System) -> bool {
        match system {
            System::Herald => true,
            System::Peer => self.with_peer,
            System::Sockudo => {
                self.with_peer
                    && matches!(
                        self.scenario,
                        Scenario::Idle | Scenario::Fanout | Scenario::Peak | Scenario::Broadcast
                    )
            }
        }
    }
}

/// Looks a case up by name.
pub(crate) fn find(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}
