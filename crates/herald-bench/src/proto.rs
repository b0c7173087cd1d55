//! The line protocol between the coordinator and its worker and publisher processes:
//! one JSON object per line, commands on the child's stdin, events on its stdout.
//!
//! The peer's Node programs (`bench/peer/`) speak the same protocol, so one coordinator
//! drives both systems with the same scenarios.

use serde::{Deserialize, Serialize};

/// A command from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// Open `conns` connections from `source_ip`, `ramp` per second (0 = as fast as
    /// possible), each subscribed to `channel`; answered by [`Ev::Opened`].
    Open {
        url: String,
        conns: usize,
        source_ip: String,
        channel: String,
        #[serde(default)]
        ramp: u32,
        /// Use the lean reader instead of the SDK (herald-bench workers only).
        #[serde(default)]
        lean: bool,
        /// The lean reader speaks the Pusher protocol (the Sockudo peer).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pusher: bool,
    },
    /// Open one connection that subscribes and then never reads its socket again;
    /// answered by [`Ev::Stalled`].
    Stall {
        url: String,
        source_ip: String,
        channel: String,
    },
    /// Clear the latency histograms (sequence tracking stays); answered by [`Ev::Reset`].
    Reset,
    /// Report counters; answered by [`Ev::Stats`].
    Stats {
        /// The last sequence number published so far: connections behind it count
        /// their missing tail.
        #[serde(default)]
        expect_last: Option<u64>,
    },
    /// Drop every connection abruptly and reconnect each at a random time in
    /// `[offline_ms, offline_ms + jitter_ms]`; answered by [`Ev::Dropped`].
    Drop { offline_ms: u64, jitter_ms: u64 },
    /// For `duration_ms`, drop each connection every `every_ms` (random phase) for about
    /// `offline_ms`; answered by [`Ev::Disrupting`] and later [`Ev::DisruptDone`].
    Disrupt {
        every_ms: u64,
        offline_ms: u64,
        duration_ms: u64,
    },
    /// Publish `count` messages to `channel` at `rate` per second (0 = as fast as
    /// possible), sequence numbers from `first_seq`, payloads of about `pad` bytes;
    /// answered by [`Ev::Published`].
    Publish {
        channel: String,
        rate: f64,
        count: u64,
        first_seq: u64,
        #[serde(default = "default_pad")]
        pad: usize,
    },
    /// Close everything and exit; answered by [`Ev::Closed`].
    Close,
    /// Exit (publishers).
    Exit,
}

fn default_pad() -> usize {
    64
}

/// An event from a child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(crate) enum Ev {
    /// A publisher is connected and ready.
    Ready,
    /// The answer to [`Op::Open`].
    Opened {
        ok: usize,
        failed: usize,
        #[serde(default)]
        ms: f64,
    },
    /// The answer to [`Op::Stall`].
    Stalled {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
    },
    /// The answer to [`Op::Reset`].
    Reset,
    /// The answer to [`Op::Stats`].
    Stats(WorkerStats),
    /// The answer to [`Op::Drop`].
    Dropped,
    /// The first answer to [`Op::Disrupt`].
    Disrupting,
    /// The disruption period is over.
    DisruptDone,
    /// The answer to [`Op::Publish`].
    Published {
        count: u64,
        ms: f64,
        #[serde(default)]
        late_max_ms: f64,
        #[serde(default)]
        failed: u64,
    },
    /// The answer to [`Op::Close`].
    Closed,
}

/// One worker's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WorkerStats {
    pub conns: usize,
    pub connected: usize,
    /// Publications received, duplicates excluded.
    pub received: u64,
    pub dups: u64,
    /// Sequence numbers skipped by a later one.
    pub gaps: u64,
    /// Sum over connections of the sequence numbers still missing at the end.
    pub tail_missing: u64,
    /// Receive − publish time in µs, as `[value rounded to 3 digits, count]` pairs.
    pub lat: Vec<(u64, u64)>,
    /// The same, for publications made while their connection was offline.
    pub replay: Vec<(u64, u64)>,
    /// Wall-clock µs of the newest receive.
    pub last_rx_us: u64,
    pub reconnects: u64,
    pub not_recovered: u64,
    /// Connections the server cut off as slow consumers (lean readers do not reconnect).
    pub cut_off: u64,
}

/// The payload of every benchmark publication.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct Payload {
    pub seq: u64,
    /// Wall-clock µs when it was published.
    pub ts: u64,
}

/// Builds a payload of about `pad` bytes.
pub(crate) fn payload(seq: u64, ts: u64, pad: usize) -> String {
    let head = format!(r#"{{"seq":{seq},"ts":{ts},"p":""#);
    let fill = pad.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(head.len() + fill + 2);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', fill));
    s.push_str("\"}");
    s
}

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Rounds to three significant digits, the resolution latency lists are exchanged in.
pub(crate) fn round3(v: u64) -> u64 {
    let mut scale = 1;
    let mut x = v;
    while x >= 1000 {
        x /= 10;
        scale *= 10;
    }
    x * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_parses() {
        let p = payload(7, 1_700_000_000_000_000, 64);
        assert_eq!(p.len(), 64);
        let parsed: Payload = serde_json::from_str(&p).expect("valid");
        assert_eq!((parsed.seq, parsed.ts), (7, 1_700_000_000_000_000));
        // Too small a pad still gives valid JSON.
        assert!(serde_json::from_str::<Payload>(&payload(1, 2, 0)).is_ok());
    }

    #[test]
    fn rounding_keeps_three_digits() {
        assert_eq!(round3(87), 87);
        assert_eq!(round3(1234), 1230);
        assert_eq!(round3(123_456), 123_000);
        assert_eq!(round3(999), 999);
    }

    #[test]
    fn ops_use_the_documented_shapes() {
        let op: Op = serde_json::from_str(r#"{"op":"stats","expect_last":5}"#).expect("op");
        assert!(matches!(
            op,
            Op::Stats {
                expect_last: Some(5)
            }
        ));
        let ev: Ev =
            serde_json::from_str(r#"{"ev":"stats","received":3,"lat":[[100,2]]}"#).expect("ev");
        let Ev::Stats(s) = ev else {
            panic!("not stats")
        };
        assert_eq!((s.received, s.lat), (3, vec![(100, 2)]));
    }
}
