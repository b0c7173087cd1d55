//! Model-based check that the Redis broker behaves, as far as a node can observe, exactly
//! like the in-memory broker.
//!
//! [`MemoryBroker`] is the model: it is the plainest statement of the `Broker` contract.
//! Proptest generates random operation sequences over two or three channels — publishes
//! with and without history (sizes 0, 3 and 10), some with an idempotency key from a small
//! set so that repeats happen; history reads with a random since offset (up to just past
//! the top), limit and direction; history removal — and runs each sequence against a
//! fresh `MemoryBroker` and a fresh `RedisBroker`, both subscribed to every channel.
//! After every operation the two must agree on
//! - a publish's offset, duplicate flag and whether it carries an epoch;
//! - a history page's publications (offset and data, in order) and top offset;
//!
//! and after the sequence, on the publications each node's handler received per channel
//! (offset, data, whether it carries an epoch, in order).
//!
//! Epochs are random per broker, so they are not compared with each other. Each broker
//! must instead keep one epoch per channel for the whole case (nothing here loses
//! history) and never leave it empty where the channel has a stream: in a history
//! position, or with a non-zero offset.
//!
//! One `redis-server` serves the whole test; every case uses channel names of its own, so
//! cases cannot see each other's keys. History lives 60 s, so expiry never plays a part.
//! A failure shows the shrunk sequence and a transcript of what both brokers answered.

use herald_broker::memory::MemoryBroker;
use herald_broker::{Broker, HistoryQuery, PublishRequest, StoredPublication, conformance};
use herald_protocol::{HistoryLimit, RawJson};
use herald_redis::{RedisBroker, RedisConfig};
use herald_tests::redis::RedisServer;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Cases per run (`PROPTEST_CASES` overrides it for a longer soak).
const CASES: u32 = 24;
/// The longest generated sequence.
const MAX_OPS: usize = 40;
/// History sizes a publish asks for; 0 keeps no history (and assigns no offset).
const HISTORY_SIZES: [usize; 3] = [0, 3, 10];
/// Long enough that no publication expires during a case.
const HISTORY_TTL: Duration = Duration::from_secs(60);
/// Few keys, so that a sequence repeats them.
const KEYS: [&str; 3] = ["k1", "k2", "k3"];
/// How long Redis deliveries may take to reach the count the memory broker delivered.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra wait once the count is reached, so that surplus deliveries are seen too.
const SETTLE: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// Generated operations

/// One generated operation; `ch` indexes the case's channels.
#[derive(Clone)]
enum Op {
    Publish {
        ch: usize,
        /// JSON text.
        data: String,
        history_size: usize,
        key: Option<&'static str>,
    },
    History {
        ch: usize,
        /// `None` reads without a since offset; `Some(p)` reads since `p % (top + 3)`,
        /// which spans 0..=top+2 whatever the channel's top is when the read runs.
        since_pick: Option<u8>,
        limit: Option<usize>,
        reverse: bool,
    },
    RemoveHistory {
        ch: usize,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Publish {
                ch,
                data,
                history_size,
                key,
            } => write!(
                f,
                "publish ch{ch} history_size={history_size} key={key:?} data={data}"
            ),
            Op::History {
                ch,
                since_pick,
                limit,
                reverse,
            } => write!(
                f,
                "history ch{ch} since_pick={since_pick:?} limit={limit:?} reverse={reverse}"
            ),
            Op::RemoveHistory { ch } => write!(f, "remove_history ch{ch}"),
        }
    }
}

/// A generated sequence and the number of channels it uses.
#[derive(Clone)]
struct Case {
    channels: usize,
    ops: Vec<Op>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} channels, {} operations:",
            self.channels,
            self.ops.len()
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {:>2}. {op:?}", i + 1)?;
        }
        Ok(())
    }
}

/// Small JSON values of every kind; the strings include quotes, backslashes and
/// non-ASCII text, which must come back byte for byte through Redis' envelope.
fn data() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        "[a-z \"\\\\é☃]{0,6}".prop_map(Value::from),
        (0u8..10, "[a-z]{0,3}").prop_map(|(n, s)| json!({ "n": n, "s": s })),
        vec(0u8..100, 0..4).prop_map(Value::from),
    ]
    .prop_map(|v| v.to_string())
}

fn op(channels: usize) -> impl Strategy<Value = Op> {
    let publish = (
        0..channels,
        data(),
        prop::sample::select(HISTORY_SIZES.to_vec()),
        prop::option::weighted(0.4, prop::sample::select(KEYS.to_vec())),
    )
        .prop_map(|(ch, data, history_size, key)| Op::Publish {
            ch,
            data,
            history_size,
            key,
        });
    let limit = prop_oneof![Just(None), Just(Some(0)), (1usize..=5).prop_map(Some)];
    let history = (
        0..channels,
        prop::option::of(any::<u8>()),
        limit,
        any::<bool>(),
    )
        .prop_map(|(ch, since_pick, limit, reverse)| Op::History {
            ch,
            since_pick,
            limit,
            reverse,
        });
    prop_oneof![
        5 => publish,
        3 => history,
        1 => (0..channels).prop_map(|ch| Op::RemoveHistory { ch }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=3).prop_flat_map(|channels| {
        vec(op(channels), 0..=MAX_OPS).prop_map(move |ops| Case { channels, ops })
    })
}

// ---------------------------------------------------------------------------------------
// Running a sequence against one broker

/// An operation made concrete: the since offset resolved against the channel's top.
enum Step {
    Publish(PublishRequest),
    History(HistoryQuery),
    RemoveHistory,
}

impl Op {
    fn resolve(&self, tops: &[u64]) -> (usize, Step, String) {
        match self {
            Op::Publish {
                ch,
                data,
                history_size,
                key,
            } => {
                let data = RawJson::from_string(data.clone()).expect("generated data is JSON");
                let mut request =
                    PublishRequest::new(data).with_history(*history_size, HISTORY_TTL);
                request.idempotency_key = key.map(str::to_owned);
                (*ch, Step::Publish(request), format!("{self:?}"))
            }
            Op::History {
                ch,
                since_pick,
                limit,
                reverse,
            } => {
                let since_offset = since_pick.map(|p| u64::from(p) % (tops[*ch] + 3));
                let query = HistoryQuery {
                    since_offset,
                    limit: limit.map_or(HistoryLimit::All, HistoryLimit::at_most),
                    reverse: *reverse,
                    not_before: None,
                };
                let text = format!(
                    "history ch{ch} since_offset={since_offset:?} limit={limit:?} reverse={reverse}"
                );
                (*ch, Step::History(query), text)
            }
            Op::RemoveHistory { ch } => (*ch, Step::RemoveHistory, format!("{self:?}")),
        }
    }
}

/// What one broker answered to a step, with its epoch reduced to "present or not" (the
/// epoch itself is checked for stability separately).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Published {
        offset: u64,
        duplicate: bool,
        epoch: bool,
    },
    Page {
        /// Offset and data text of each publication, in the order returned.
        publications: Vec<(u64, String)>,
        top: u64,
    },
    Removed,
}

/// A delivery to a node's handler, epoch reduced as in [`Seen`].
#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    offset: u64,
    data: String,
    epoch: bool,
}

/// What the conformance suite's collecting handler hands over.
type Deliveries = mpsc::UnboundedReceiver<(String, Arc<StoredPublication>)>;

/// One broker under test, the publications its handler received per channel (in arrival
/// order), and the epoch it first showed per channel.
///
/// The handler is the conformance suite's, kept in step with the `BrokerHandler` trait by
/// its owners. It panics on a loss of continuity, which no healthy broker reports; in the
/// Redis broker the panic ends the delivery worker of that channel (and of the others it
/// serves), so it shows here as missing deliveries, with the panic message in the output.
struct Side {
    broker: Box<dyn Broker>,
    rx: Deliveries,
    received: HashMap<String, Vec<Arc<StoredPublication>>>,
    epochs: Vec<Option<String>>,
}

/// An error with its causes, so a broker failure says what Redis answered.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Side {
    async fn start<B: Broker>(broker: B, channels: &[String]) -> Result<Side, String> {
        let rx = conformance::start(&broker).await;
        broker
            .subscribe(channels)
            .await
            .map_err(|e| format!("subscribe: {}", chain(&e)))?;
        Ok(Side {
            broker: Box::new(broker),
            rx,
            received: HashMap::new(),
            epochs: vec![None; channels.len()],
        })
    }

    /// Moves what the handler has received so far into `received`.
    fn collect(&mut self) {
        while let Ok((channel, publication)) = self.rx.try_recv() {
            self.received.entry(channel).or_default().push(publication);
        }
    }

    fn count(&self, channel: &str) -> usize {
        self.received.get(channel).map_or(0, Vec::len)
    }

    /// Whether `epoch` is present; fails when it differs from the channel's first one.
    fn epoch(&mut self, ch: usize, epoch: &str) -> Result<bool, String> {
        if epoch.is_empty() {
            return Ok(false);
        }
        match &self.epochs[ch] {
            None => self.epochs[ch] = Some(epoch.to_owned()),
            Some(first) if first != epoch => {
                return Err(format!(
                    "ch{ch}'s epoch changed from {first:?} to {epoch:?}"
                ));
            }
            Some(_) => {}
        }
        Ok(true)
    }

    async fn apply(&mut self, channel: &str, ch: usize, step: &Step) -> Result<Seen, String> {
        match step {
            Step::Publish(request) => {
                let out = self
                    .broker
                    .publish(channel, request.clone())
                    .await
                    .map_err(|e| format!("publish failed: {}", chain(&e)))?;
                let epoch = self.epoch(ch, &out.position.epoch)?;
                if out.position.offset > 0 && !epoch {
                    return Err(format!("offset {} without an epoch", out.position.offset));
                }
                Ok(Seen::Published {
                    offset: out.position.offset,
                    duplicate: out.duplicate,
                    epoch,
                })
            }
            Step::History(query) => {
                let page = self
                    .broker
                    .history(channel, query.clone())
                    .await
                    .map_err(|e| format!("history failed: {}", chain(&e)))?;
                // A history read creates the channel's epoch when there is none.
                if !self.epoch(ch, &page.position.epoch)? {
                    return Err("history position without an epoch".into());
                }
                Ok(Seen::Page {
                    publications: page
                        .publications
                        .iter()
                        .map(|p| (p.offset, p.data.get().to_owned()))
                        .collect(),
                    top: page.position.offset,
                })
            }
            Step::RemoveHistory => {
                self.broker
                    .remove_history(channel)
                    .await
                    .map_err(|e| format!("remove_history failed: {}", chain(&e)))?;
                Ok(Seen::Removed)
            }
        }
    }

    /// The collected deliveries of one channel, epochs checked and reduced.
    fn deliveries(&mut self, channel: &str, ch: usize) -> Result<Vec<Delivery>, String> {
        let received = self.received.get(channel).cloned().unwrap_or_default();
        let mut out = Vec::with_capacity(received.len());
        for p in received {
            let offset = p.publication.offset;
            let epoch = self.epoch(ch, &p.epoch)?;
            if offset > 0 && !epoch {
                return Err(format!("delivered offset {offset} without an epoch"));
            }
            out.push(Delivery {
                offset,
                data: p.publication.data.get().to_owned(),
                epoch,
            });
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// One case: both brokers, step by step

/// What both brokers agreed on so far, for the failure message.
struct Transcript {
    channels: Vec<String>,
    lines: Vec<String>,
}

impl Transcript {
    fn fail(&self, what: &str) -> TestCaseError {
        let mut msg = format!("{what}\nchannels: {:?}\nagreed so far:\n", self.channels);
        for line in &self.lines {
            msg.push_str("  ");
            msg.push_str(line);
            msg.push('\n');
        }
        TestCaseError::fail(msg)
    }
}

async fn run_case(redis_url: &str, case: &Case) -> Result<(), TestCaseError> {
    // Names unique to this case: the Redis server is shared by every case.
    let channels: Vec<String> = (0..case.channels)
        .map(|i| conformance::channel(&format!("model{i}")))
        .collect();
    let redis = RedisBroker::connect(RedisConfig {
        url: redis_url.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .map_err(|e| TestCaseError::fail(format!("Redis broker connects: {}", chain(&e))))?;
    let mut memory = Side::start(MemoryBroker::new(), &channels)
        .await
        .map_err(TestCaseError::fail)?;
    let mut redis = Side::start(redis, &channels)
        .await
        .map_err(TestCaseError::fail)?;

    let mut transcript = Transcript {
        channels: channels.clone(),
        lines: Vec::new(),
    };
    // The top offset per channel, which the since offsets of history reads are drawn around.
    let mut tops = vec![0u64; case.channels];
    for (i, op) in case.ops.iter().enumerate() {
        let (ch, step, text) = op.resolve(&tops);
        let line = format!("{:>2}. {text}", i + 1);
        let expected = memory.apply(&channels[ch], ch, &step).await;
        let actual = redis.apply(&channels[ch], ch, &step).await;
        match (expected, actual) {
            (Ok(expected), Ok(actual)) if expected == actual => {
                match &expected {
                    Seen::Published { offset, .. } => tops[ch] = tops[ch].max(*offset),
                    Seen::Page { top, .. } => tops[ch] = tops[ch].max(*top),
                    Seen::Removed => {}
                }
                transcript.lines.push(format!("{line}  =>  {expected:?}"));
            }
            (expected, actual) => {
                return Err(transcript.fail(&format!(
                    "step {line}\n  memory: {expected:?}\n  redis:  {actual:?}"
                )));
            }
        }
    }

    // The memory broker delivers inside `publish`, so its counts are final; Redis delivers
    // through pub/sub and gets until the deadline to catch up.
    memory.collect();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        redis.collect();
        let behind = channels.iter().any(|c| redis.count(c) < memory.count(c));
        if !behind || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(SETTLE).await;
    redis.collect();
    for (ch, channel) in channels.iter().enumerate() {
        let expected = memory.deliveries(channel, ch);
        let actual = redis.deliveries(channel, ch);
        if expected.is_err() || actual.is_err() || expected != actual {
            return Err(transcript.fail(&format!(
                "deliveries of ch{ch} differ\n  memory: {expected:?}\n  redis:  {actual:?}"
            )));
        }
    }
    Ok(())
}

#[test]
fn redis_broker_matches_memory_broker() {
    // Declared before the runtime so that it outlives the brokers' last tasks.
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let defaults = Config::default();
    let config = Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            CASES
        },
        // No regression file: the test writes nothing into the source tree, and a failure
        // prints its whole sequence instead.
        failure_persistence: None,
        // Each shrink step talks to Redis; this bounds a failing run to a minute or two.
        max_shrink_iters: 1024,
        ..defaults
    };
    let url = server.url();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| runtime.block_on(run_case(&url, &case)));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => {
            panic!(
                "the Redis broker diverged from the memory broker\n{why}\nminimal sequence: {case:?}"
            )
        }
        Err(TestError::Abort(why)) => panic!("proptest gave up: {why}"),
    }
}
