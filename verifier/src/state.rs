//! What the verifier knows about its own freshness: readable as a
//! [`VerifierState`] and exportable as Prometheus metrics.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// A point-in-time view of the verifier's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierState {
    /// A stream to the server is open.
    pub connected: bool,
    /// Tokens are judged locally now (not stale).
    pub current: bool,
    /// The store's identity the revocations came from (empty before the first snapshot).
    pub epoch: String,
    /// The sequence of the newest revocation applied (the resume point).
    pub sequence: u64,
    /// Time since the last heartbeat or entry; `None` before the first.
    pub since_last_news: Option<Duration>,
    /// How far the server's clock at its last heartbeat was behind ours
    /// when it arrived (delivery delay plus clock skew; 0 when ahead).
    pub lag: Duration,
    /// Revocation entries held.
    pub entries: usize,
    /// Verification keys held.
    pub keys: usize,
    /// Snapshots loaded so far.
    pub snapshots: u64,
    /// Connections opened so far.
    pub connections: u64,
}

/// Where the stream is: read by every verify (atomics), written by the
/// stream task.
pub(crate) struct StreamState {
    origin: Instant,
    /// Milliseconds since `origin` of the last news, +1 (0 = never).
    last_news: AtomicU64,
    /// Cleared while the copy cannot be trusted whatever the clock says:
    /// before the first snapshot, after an entry it cannot apply.
    usable: AtomicBool,
    /// Set for good when the stream carried an entry this version cannot
    /// apply: only an upgrade makes the copy complete again.
    blocked: AtomicBool,
    connected: AtomicBool,
    max_staleness_ms: u64,
    pub(crate) position: Mutex<Position>,
    pub(crate) metrics: Metrics,
}

/// The resume point.
#[derive(Clone, Default)]
pub(crate) struct Position {
    pub(crate) epoch: String,
    pub(crate) sequence: u64,
}

/// The exported series; gauges and counters are shared handles, so a
/// registry holds clones of these.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) connected: Gauge,
    pub(crate) current: Gauge,
    pub(crate) sequence: Gauge,
    pub(crate) entries: Gauge,
    pub(crate) keys: Gauge,
    pub(crate) since_last_news_ms: Gauge,
    pub(crate) lag_ms: Gauge,
    pub(crate) snapshots: Counter,
    pub(crate) connections: Counter,
    pub(crate) stale_refusals: Counter,
}

impl StreamState {
    pub(crate) fn new(max_staleness: Duration) -> Self {
        Self {
            origin: Instant::now(),
            last_news: AtomicU64::new(0),
            usable: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            max_staleness_ms: u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX),
            position: Mutex::new(Position::default()),
            metrics: Metrics::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the local copy may judge tokens now.
    pub(crate) fn is_current(&self) -> bool {
        if !self.usable.load(Ordering::Acquire) || self.blocked.load(Ordering::Acquire) {
            return false;
        }
        let last = self.last_news.load(Ordering::Acquire);
        last != 0 && self.now_ms().saturating_sub(last - 1) <= self.max_staleness_ms
    }

    /// The server said something that proves the copy current.
    pub(crate) fn heard(&self) {
        self.last_news.store(self.now_ms() + 1, Ordering::Release);
    }

    pub(crate) fn set_usable(&self, usable: bool) {
        self.usable.store(usable, Ordering::Release);
    }

    pub(crate) fn block(&self) {
        self.blocked.store(true, Ordering::Release);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.metrics.connected.set(i64::from(connected));
        if connected {
            self.metrics.connections.inc();
        }
    }

    pub(crate) fn since_last_news(&self) -> Option<Duration> {
        let last = self.last_news.load(Ordering::Acquire);
        (last != 0).then(|| Duration::from_millis(self.now_ms().saturating_sub(last - 1)))
    }

    /// Refreshes the gauges that move with the clock.
    pub(crate) fn tick(&self) {
        self.metrics.current.set(i64::from(self.is_current()));
        let age = self.since_last_news().map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.metrics.since_last_news_ms.set(age);
    }

    pub(crate) fn view(&self, entries: usize, keys: usize) -> VerifierState {
        let position = self.position.lock().map(|p| p.clone()).unwrap_or_default();
        VerifierState {
            connected: self.connected.load(Ordering::Acquire),
            current: self.is_current(),
            epoch: position.epoch,
            sequence: position.sequence,
            since_last_news: self.since_last_news(),
            lag: Duration::from_millis(u64::try_from(self.metrics.lag_ms.get()).unwrap_or(0)),
            entries,
            keys,
            snapshots: self.metrics.snapshots.get(),
            connections: self.metrics.connections.get(),
        }
    }
}

impl Metrics {
    /// Registers every series under `registry` (a prefix such as
    /// `sigil_verifier` is the caller's choice).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register("connected", "1 while a revocation stream is open", self.connected.clone());
        registry.register("current", "1 while tokens are judged locally (not stale)", self.current.clone());
        registry.register("sequence", "sequence of the newest revocation applied", self.sequence.clone());
        registry.register("entries", "revocation entries held", self.entries.clone());
        registry.register("keys", "verification keys held", self.keys.clone());
        registry.register(
            "since_last_news_milliseconds",
            "time since the last heartbeat or entry (-1: never)",
            self.since_last_news_ms.clone(),
        );
        registry.register("lag_milliseconds", "server clock at the last heartbeat behind ours", self.lag_ms.clone());
        registry.register("snapshots", "snapshots loaded", self.snapshots.clone());
        registry.register("connections", "revocation streams opened", self.connections.clone());
        registry.register(
            "stale_refusals",
            "tokens refused because the verifier was stale",
            self.stale_refusals.clone(),
        );
    }
}

/// Sets an `i64` gauge from a count.
pub(crate) fn set_count(gauge: &Gauge, count: impl TryInto<i64>) {
    gauge.set(count.try_into().unwrap_or(i64::MAX));
}
