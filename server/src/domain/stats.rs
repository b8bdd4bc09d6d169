//! Per-second rates over the last minute, for `GetStats`: a ring of 60
//! one-second buckets per counter, written with relaxed atomics so that the
//! `Validate` hot path pays two atomic adds. Each counter also keeps its
//! total since start, so that a client sampling `GetStats` every second
//! (the console's dashboard) gets per-second rates from the deltas, where
//! the minute's mean would smooth a spike away.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::Timestamp;

const WINDOW_SECONDS: usize = 60;

/// Events per second over the last minute.
pub(crate) struct RateWindow {
    counts: [AtomicU64; WINDOW_SECONDS],
    /// The second each bucket currently counts.
    seconds: [AtomicI64; WINDOW_SECONDS],
    /// Events since the process started.
    total: AtomicU64,
}

impl Default for RateWindow {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            seconds: std::array::from_fn(|_| AtomicI64::new(-1)),
            total: AtomicU64::new(0),
        }
    }
}

impl RateWindow {
    /// Counts one event now.
    pub(crate) fn record(&self) {
        self.record_at(Timestamp::now().as_unix_seconds());
    }

    fn record_at(&self, second: i64) {
        let slot = second.rem_euclid(WINDOW_SECONDS as i64) as usize;
        let previous = self.seconds[slot].swap(second, Ordering::Relaxed);
        if previous != second {
            // The bucket held an older second: start it afresh. A count
            // racing with this reset may be lost; rates are approximate.
            self.counts[slot].store(0, Ordering::Relaxed);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Events since the process started.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Mean events per second over the last full minute.
    pub(crate) fn per_second(&self) -> f64 {
        self.per_second_at(Timestamp::now().as_unix_seconds())
    }

    fn per_second_at(&self, now: i64) -> f64 {
        let oldest = now - WINDOW_SECONDS as i64;
        let total: u64 = (0..WINDOW_SECONDS)
            .filter(|&i| {
                let second = self.seconds[i].load(Ordering::Relaxed);
                second > oldest && second <= now
            })
            .map(|i| self.counts[i].load(Ordering::Relaxed))
            .sum();
        total as f64 / WINDOW_SECONDS as f64
    }
}

/// The rates `GetStats` reports.
#[derive(Default)]
pub(crate) struct Rates {
    /// `Validate` calls.
    pub validations: RateWindow,
    /// Successful logins.
    pub logins: RateWindow,
    /// Failed logins.
    pub login_failures: RateWindow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_average_over_the_last_minute_and_forget_older_seconds() {
        let window = RateWindow::default();
        for second in 1000..1060 {
            for _ in 0..3 {
                window.record_at(second);
            }
        }
        assert!((window.per_second_at(1059) - 3.0).abs() < 1e-9);
        // Thirty seconds later only half the minute still counts.
        assert!((window.per_second_at(1089) - 1.5).abs() < 1e-9);
        window.record_at(1200);
        assert!((window.per_second_at(1200) - 1.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn the_total_counts_every_event_and_forgets_none() {
        let window = RateWindow::default();
        for second in 1000..1100 {
            window.record_at(second);
        }
        // The minute's window has forgotten the first 40 seconds; the total has not.
        assert_eq!(window.total(), 100);
    }
}
