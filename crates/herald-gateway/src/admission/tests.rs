//! Unit tests of the counters and buckets, under paused time.

use super::{Admission, AdmissionMetrics, Limit};
use crate::config::{ClientConfig, ConnectionLimit, RateLimit};
use axum::http::{HeaderMap, HeaderValue};
use prometheus::{IntCounterVec, IntGauge, Opts};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

fn metrics() -> AdmissionMetrics {
    AdmissionMetrics {
        refusals: IntCounterVec::new(Opts::new("r", "r"), &["limit", "mode"]).expect("metric"),
        tracked_addresses: IntGauge::new("t", "t").expect("metric"),
    }
}

fn admission(client: &ClientConfig) -> Arc<Admission> {
    Arc::new(Admission::new(client, metrics()).expect("valid settings"))
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("an address"))
}

fn refused(a: &Admission, limit: Limit, mode: &str) -> u64 {
    a.metrics
        .refusals
        .with_label_values(&[limit.label(), mode])
        .get()
}

#[tokio::test(start_paused = true)]
async fn the_node_limit_counts_sockets_until_they_are_dropped() {
    let mut c = ClientConfig::default();
    c.limits.connections = ConnectionLimit {
        max: 2,
        dry_run: false,
    };
    let a = admission(&c);
    let first = a.admit_socket(ip("10.0.0.1")).expect("1 of 2");
    let _second = a.admit_socket(None).expect("2 of 2");
    let refusal = a.admit_socket(ip("10.0.0.2")).expect_err("full");
    assert_eq!(refusal.limit, Limit::Connections);
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(5)));
    assert_eq!(a.open(), 2, "a refused socket is not counted");
    drop(first);
    let _third = a.admit_socket(ip("10.0.0.2")).expect("room again");
    assert_eq!(refused(&a, Limit::Connections, "enforced"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_address_limit_counts_each_address_and_ipv6_by_its_64() {
    let mut c = ClientConfig::default();
    c.limits.connections_per_ip = ConnectionLimit {
        max: 1,
        dry_run: false,
    };
    let a = admission(&c);
    let one = a.admit_socket(ip("127.0.0.1")).expect("first");
    assert_eq!(
        a.admit_socket(ip("127.0.0.1")).expect_err("second").limit,
        Limit::ConnectionsPerIp
    );
    let _other = a.admit_socket(ip("127.0.0.2")).expect("another address");
    let _v6 = a.admit_socket(ip("2001:db8::1")).expect("first of the /64");
    assert!(a.admit_socket(ip("2001:db8::2")).is_err(), "same /64");
    drop(one);
    let _again = a.admit_socket(ip("127.0.0.1")).expect("released");
    assert_eq!(
        a.per_ip.lock().len(),
        3,
        "entries are per open address only"
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_admits_and_counts() {
    let mut c = ClientConfig::default();
    c.limits.connections_per_ip = ConnectionLimit {
        max: 1,
        dry_run: true,
    };
    c.limits.connections = ConnectionLimit {
        max: 1,
        dry_run: true,
    };
    let a = admission(&c);
    let permits: Vec<_> = (0..3)
        .map(|_| a.admit_socket(ip("10.0.0.1")).expect("dry run admits"))
        .collect();
    assert_eq!(refused(&a, Limit::ConnectionsPerIp, "dry_run"), 2);
    assert_eq!(refused(&a, Limit::Connections, "dry_run"), 2);
    assert_eq!(refused(&a, Limit::Connections, "enforced"), 0);
    drop(permits);
    assert_eq!(a.open(), 0);
    assert!(a.per_ip.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn connect_rates_refill_with_time() {
    let mut c = ClientConfig::default();
    c.limits.connect_rate_per_ip = RateLimit {
        per_second: 1,
        burst: 2,
        dry_run: false,
    };
    let a = admission(&c);
    for _ in 0..2 {
        drop(a.admit_socket(ip("10.0.0.1")).expect("within the burst"));
    }
    let refusal = a.admit_socket(ip("10.0.0.1")).expect_err("burst spent");
    assert_eq!(refusal.limit, Limit::ConnectRatePerIp);
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(1)));
    drop(
        a.admit_socket(ip("10.0.0.2"))
            .expect("another address has its own bucket"),
    );
    tokio::time::advance(Duration::from_millis(1000)).await;
    drop(a.admit_socket(ip("10.0.0.1")).expect("one token back"));
    assert!(a.admit_socket(ip("10.0.0.1")).is_err());

    let mut c = ClientConfig::default();
    c.limits.connect_rate = RateLimit {
        per_second: 10,
        burst: 0,
        dry_run: false,
    };
    let a = admission(&c);
    for _ in 0..10 {
        drop(a.admit_socket(None).expect("the burst is per_second"));
    }
    let refusal = a.admit_socket(None).expect_err("node rate");
    assert_eq!(refusal.limit, Limit::ConnectRate);
    assert_eq!(refusal.retry_after, Some(Duration::from_millis(100)));
    tokio::time::advance(Duration::from_millis(100)).await;
    drop(a.admit_socket(None).expect("refilled"));
}

#[tokio::test(start_paused = true)]
async fn the_sweep_forgets_addresses_with_full_buckets() {
    let mut c = ClientConfig::default();
    c.limits.connect_rate_per_ip = RateLimit {
        per_second: 10,
        burst: 10,
        dry_run: false,
    };
    let a = admission(&c);
    for i in 0..1000u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        drop(a.admit_socket(Some(addr)).expect("one each"));
    }
    a.sweep();
    assert_eq!(a.metrics.tracked_addresses.get(), 1000);
    tokio::time::advance(Duration::from_secs(1)).await;
    a.sweep();
    assert_eq!(a.metrics.tracked_addresses.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_user_limit_is_per_user_and_skips_anonymous() {
    let mut c = ClientConfig::default();
    c.limits.connections_per_user = ConnectionLimit {
        max: 2,
        dry_run: false,
    };
    let a = admission(&c);
    let alice: Arc<str> = Arc::from("alice");
    let p1 = a.admit_user(&alice).expect("1").expect("counted");
    let _p2 = a.admit_user(&alice).expect("2");
    let refusal = a.admit_user(&alice).expect_err("3");
    assert_eq!(refusal.limit, Limit::ConnectionsPerUser);
    let _bob = a.admit_user(&Arc::from("bob")).expect("bob");
    for _ in 0..5 {
        assert!(a.admit_user(&Arc::from("")).expect("anonymous").is_none());
    }
    drop(p1);
    let _p3 = a.admit_user(&alice).expect("released");
}

#[tokio::test(start_paused = true)]
async fn log_lines_are_held_back_per_limit() {
    let a = admission(&ClientConfig::default());
    let gate = &a.gates[Limit::Origin as usize];
    assert_eq!(gate.pass(), Some(0));
    assert_eq!(gate.pass(), None);
    assert_eq!(gate.pass(), None);
    assert_eq!(a.gates[Limit::Connections as usize].pass(), Some(0));
    tokio::time::advance(super::LOG_EVERY).await;
    assert_eq!(gate.pass(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn origins_are_refused_with_403_and_counted() {
    let a = admission(&ClientConfig::default());
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("herald.example.com"));
    assert!(a.check_origin(&h, None).is_ok());
    h.insert("origin", HeaderValue::from_static("https://evil.example"));
    let refusal = a.check_origin(&h, None).expect_err("cross-site");
    assert_eq!(
        axum::response::IntoResponse::into_response(refusal).status(),
        403
    );
    assert_eq!(refused(&a, Limit::Origin, "enforced"), 1);
}
