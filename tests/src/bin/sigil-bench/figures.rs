//! [`Figures`]: one scenario's result, and the line it prints.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::target::ServerCpu;

/// One scenario's result.
pub(crate) struct Figures {
    /// The scenario's name as printed (`--only` names select scenarios).
    pub(crate) name: String,
    /// Requests answered as the scenario expects.
    pub(crate) requests: u64,
    /// Requests answered otherwise.
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Latency of the expected answers, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
    /// The server's CPU time over the scenario, when this run started it.
    pub(crate) server_cpu: Option<Duration>,
}

impl Figures {
    /// Requests per second.
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Closes a scenario started at `started`, when the server had used
    /// `cpu_before`: records the elapsed time and the server's CPU since,
    /// prints the line, and returns the figures.
    pub(crate) fn finish(
        mut self,
        started: Instant,
        cpu_before: Option<Duration>,
        target: &(impl ServerCpu + ?Sized),
    ) -> Self {
        self.elapsed = started.elapsed();
        self.server_cpu = match (cpu_before, target.cpu()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        self.print();
        self
    }

    fn print(&self) {
        let q = |p: f64| Duration::from_nanos(self.latency.value_at_quantile(p));
        let cpu = self
            .server_cpu
            .map(|cpu| format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:>10.0} req/s  p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  p99.9 {:>9.3?}  server CPU/req {:>9}  errors {}",
            self.name,
            self.rate(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            cpu,
            self.errors
        );
    }
}
