//! The Dashboard's state: per-second rates of validations, logins, failed
//! logins and revocations over the last minutes, the server's counts, and
//! who failed to log in (and which accounts were locked) lately.
//!
//! Validations, logins and failures come from `GetStats`' totals since the
//! server started: the worker samples them about once a second while the
//! Dashboard is open and the rate of each second is the delta. Revocations
//! and the failure and lockout lists come from the event stream, binned by
//! the time the event occurred, so backfilled events count where they
//! belong. Everything here is bounded: the series by [`HISTORY_SECONDS`],
//! the failure and lockout logs by [`RECENT`] and by [`MAX_RECENT`] entries.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use sigil_proto::pb;

use crate::format::{millis, now_millis};

/// How far back the rate series reach: ten minutes.
pub const HISTORY_SECONDS: usize = 600;

/// How far back the failure and lockout lists look: fifteen minutes.
pub const RECENT: Duration = Duration::from_secs(15 * 60);

/// At most this many failed logins and lockouts are remembered; a storm
/// beyond that keeps its newest entries.
pub const MAX_RECENT: usize = 20_000;

/// A count per second, for the last [`HISTORY_SECONDS`] seconds.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// The second of the last sample; samples before it are consecutive.
    last_second: i64,
    samples: VecDeque<u64>,
}

impl Series {
    /// Adds `amount` to the count of `second` (a Unix second). Seconds older
    /// than the history are ignored.
    pub fn add(&mut self, second: i64, amount: u64) {
        if self.samples.is_empty() {
            self.last_second = second;
            self.samples.push_back(0);
        }
        if second > self.last_second {
            // Quiet seconds in between count zero.
            let gap = ((second - self.last_second) as usize).min(HISTORY_SECONDS);
            self.samples.extend(std::iter::repeat_n(0, gap));
            self.last_second = second;
            while self.samples.len() > HISTORY_SECONDS {
                self.samples.pop_front();
            }
        }
        let back = (self.last_second - second) as usize;
        if back < self.samples.len() {
            let i = self.samples.len() - 1 - back;
            self.samples[i] += amount;
        }
    }

    /// The counts of the `n` seconds that end with `now_second`, oldest
    /// first; seconds without a sample count zero.
    pub fn recent(&self, n: usize, now_second: i64) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let second = now_second - (n - 1 - i) as i64;
                let back = self.last_second - second;
                if back < 0 || back as usize >= self.samples.len() {
                    0
                } else {
                    self.samples[self.samples.len() - 1 - back as usize]
                }
            })
            .collect()
    }
}

/// The `GetStats` totals of one sample.
#[derive(Debug, Clone, Copy)]
struct Totals {
    at_millis: i64,
    validations: u64,
    logins: u64,
    failures: u64,
}

/// One failed login, as the events tell it.
#[derive(Debug, Clone)]
struct Failure {
    at_millis: i64,
    username: String,
    address: String,
    count: u64,
}

/// Everything the Dashboard shows.
#[derive(Debug, Default)]
pub struct Dashboard {
    /// `Validate` calls per second.
    pub validations: Series,
    /// Successful logins per second.
    pub logins: Series,
    /// Failed logins per second.
    pub failures: Series,
    /// Sessions and tokens revoked per second.
    pub revocations: Series,
    /// The last `GetStats` answer, for the counts.
    pub stats: Option<pb::GetStatsResponse>,
    last: Option<Totals>,
    recent_failures: VecDeque<Failure>,
    /// Account lockouts: when, and whose.
    recent_lockouts: VecDeque<(i64, String)>,
}

impl Dashboard {
    /// Takes a `GetStats` answer received at `at`: the rates of the seconds
    /// since the previous one are the deltas of the totals.
    pub fn stats(&mut self, stats: pb::GetStatsResponse, at: SystemTime) {
        let now = Totals {
            at_millis: now_millis(at),
            validations: stats.validations_total,
            logins: stats.logins_total,
            failures: stats.login_failures_total,
        };
        if let Some(before) = self.last
            && now.at_millis > before.at_millis
            // Totals that went down belong to a restarted server: only a
            // new baseline, no (negative) rate.
            && now.validations >= before.validations
            && now.logins >= before.logins
            && now.failures >= before.failures
        {
            let (from, to) = (before.at_millis.div_euclid(1000), now.at_millis.div_euclid(1000));
            spread(&mut self.validations, from, to, now.validations - before.validations);
            spread(&mut self.logins, from, to, now.logins - before.logins);
            spread(&mut self.failures, from, to, now.failures - before.failures);
        }
        self.last = Some(now);
        self.stats = Some(stats);
    }

    /// Takes an event: revocations count in their second, failed logins
    /// and lockouts go into the recent lists.
    pub fn event(&mut self, event: &pb::Event) {
        use pb::EventKind as K;
        let at = millis(event.occurred_at.as_ref());
        match event.kind() {
            K::SessionRevoked | K::TokenRevoked => self.revocations.add(at.div_euclid(1000), 1),
            K::LoginFailed => {
                let (count, address) = parse_failure(&event.detail);
                let username = if event.username.is_empty() { "(unknown name)".into() } else { event.username.clone() };
                push_bounded(&mut self.recent_failures, Failure { at_millis: at, username, address, count });
            }
            K::AccountLocked => {
                let username = if event.username.is_empty() { "(unknown name)".into() } else { event.username.clone() };
                push_bounded(&mut self.recent_lockouts, (at, username));
            }
            _ => {}
        }
    }

    /// The usernames with the most failed logins within [`RECENT`] of
    /// `now`, most first, at most `n`.
    pub fn top_usernames(&self, now: SystemTime, n: usize) -> Vec<(String, u64)> {
        self.top(now, n, |f| &f.username)
    }

    /// The client addresses (without their port) with the most failed
    /// logins within [`RECENT`] of `now`, most first, at most `n`.
    pub fn top_addresses(&self, now: SystemTime, n: usize) -> Vec<(String, u64)> {
        self.top(now, n, |f| &f.address)
    }

    fn top(&self, now: SystemTime, n: usize, key: impl Fn(&Failure) -> &String) -> Vec<(String, u64)> {
        let since = now_millis(now) - RECENT.as_millis() as i64;
        let mut counts: HashMap<&String, u64> = HashMap::new();
        for failure in self.recent_failures.iter().filter(|f| f.at_millis >= since) {
            *counts.entry(key(failure)).or_default() += failure.count;
        }
        let mut top: Vec<(String, u64)> = counts.into_iter().map(|(k, v)| (k.clone(), v)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }

    /// Accounts locked within [`RECENT`] of `now`, newest first: the name
    /// and when (Unix milliseconds). The server does not publish when a lock
    /// lifts, so these are the locks that may still hold.
    pub fn lockouts(&self, now: SystemTime) -> Vec<(String, i64)> {
        let since = now_millis(now) - RECENT.as_millis() as i64;
        let mut locks: Vec<(String, i64)> =
            self.recent_lockouts.iter().filter(|(at, _)| *at >= since).map(|(at, name)| (name.clone(), *at)).collect();
        locks.sort_by_key(|lock| std::cmp::Reverse(lock.1));
        locks
    }
}

/// Spreads `delta` over the seconds after `from` up to `to`: a sample that
/// came late (the terminal was busy) does not make one second spike.
fn spread(series: &mut Series, from: i64, to: i64, delta: u64) {
    let seconds = (to - from).clamp(1, HISTORY_SECONDS as i64) as u64;
    let (each, rest) = (delta / seconds, delta % seconds);
    for i in 0..seconds {
        let second = to - (seconds - 1 - i) as i64;
        series.add(second, each + if i + 1 == seconds { rest } else { 0 });
    }
}

fn push_bounded<T>(log: &mut VecDeque<T>, entry: T) {
    log.push_back(entry);
    while log.len() > MAX_RECENT {
        log.pop_front();
    }
}

/// How many failures an event stands for, and from which address. The
/// server publishes the first failure per name at once and coalesces the
/// repeats of a minute into one summary ("49 more within 1m; the last:
/// from 10.0.0.1:49", or "7 more for other names within 1m"); a summary
/// counts for all it stands for, under the last address it names. So the
/// lists lag the storm by up to a minute; the failed-logins rate, from the
/// server's counter, does not.
fn parse_failure(detail: &str) -> (u64, String) {
    let count = detail.split_once(" more ").and_then(|(n, _)| n.trim().parse::<u64>().ok()).unwrap_or(1);
    let address = detail
        .rsplit_once("from ")
        .map(|(_, rest)| rest.split([' ', ',', ';']).next().unwrap_or_default().trim_end_matches(':'))
        .map(without_port)
        .unwrap_or_default();
    (count, if address.is_empty() { "(no address)".into() } else { address.to_string() })
}

/// `10.0.0.1:4000` → `10.0.0.1`, `[::1]:4000` → `::1`; anything else as is.
fn without_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn second(at: SystemTime) -> i64 {
        now_millis(at).div_euclid(1000)
    }

    fn stats(validations: u64, logins: u64, failures: u64) -> pb::GetStatsResponse {
        pb::GetStatsResponse {
            validations_total: validations,
            logins_total: logins,
            login_failures_total: failures,
            ..Default::default()
        }
    }

    #[test]
    fn rates_are_the_deltas_of_the_totals_per_second() {
        let mut dashboard = Dashboard::default();
        let t0 = fixtures::now();
        dashboard.stats(stats(1000, 10, 0), t0);
        dashboard.stats(stats(1300, 12, 5), t0 + Duration::from_secs(1));
        // A late sample: 400 validations over two seconds are 200 each.
        dashboard.stats(stats(1700, 12, 5), t0 + Duration::from_secs(3));
        let now = second(t0 + Duration::from_secs(3));
        assert_eq!(dashboard.validations.recent(4, now), vec![0, 300, 200, 200]);
        assert_eq!(dashboard.logins.recent(4, now), vec![0, 2, 0, 0]);
        assert_eq!(dashboard.failures.recent(4, now), vec![0, 5, 0, 0]);
        // A restarted server's totals start again at zero: a new baseline.
        dashboard.stats(stats(3, 0, 0), t0 + Duration::from_secs(4));
        assert_eq!(dashboard.validations.recent(1, now + 1), vec![0]);
        dashboard.stats(stats(10, 0, 0), t0 + Duration::from_secs(5));
        assert_eq!(dashboard.validations.recent(1, now + 2), vec![7]);
    }

    #[test]
    fn a_series_keeps_only_its_history() {
        let mut series = Series::default();
        series.add(0, 1);
        series.add(HISTORY_SECONDS as i64 * 3, 2);
        series.add(5, 100);
        assert_eq!(series.recent(2, HISTORY_SECONDS as i64 * 3), vec![0, 2]);
        assert_eq!(series.samples.len(), HISTORY_SECONDS);
    }

    #[test]
    fn revocations_count_in_the_second_they_happened() {
        let mut dashboard = Dashboard::default();
        let session = fixtures::session(1, "alice");
        for n in 1..=3 {
            dashboard.event(&fixtures::event(n, pb::EventKind::SessionRevoked, &session, "stolen"));
        }
        dashboard.event(&fixtures::event(3, pb::EventKind::SessionCreated, &session, ""));
        // fixtures::event puts event n at now - (100 - n) seconds.
        let now = second(fixtures::now()) - 97;
        assert_eq!(dashboard.revocations.recent(3, now), vec![1, 1, 1]);
    }

    #[test]
    fn failures_are_ranked_by_name_and_address_over_fifteen_minutes() {
        let mut dashboard = Dashboard::default();
        let alice = fixtures::session(1, "alice");
        let bob = fixtures::session(2, "bob");
        let mut unknown = fixtures::session(3, "");
        unknown.username.clear();
        let failed = |n, s: &pb::Session, detail: &str| fixtures::event(n, pb::EventKind::LoginFailed, s, detail);
        dashboard.event(&failed(1, &alice, "from 10.0.0.9:4000"));
        dashboard.event(&failed(2, &alice, "from 10.0.0.9:4001: account locked"));
        dashboard.event(&failed(3, &bob, "49 more within 1m; the last: from [::1]:5000"));
        dashboard.event(&failed(4, &unknown, "from 10.0.0.9:4002 (unknown username)"));
        dashboard.event(&fixtures::event(5, pb::EventKind::AccountLocked, &alice, "5 failed logins within 15m"));
        let now = fixtures::now();
        let ranked = |list: &[(&str, u64)]| list.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>();
        assert_eq!(dashboard.top_usernames(now, 5), ranked(&[("bob", 49), ("alice", 2), ("(unknown name)", 1)]));
        assert_eq!(dashboard.top_addresses(now, 5), ranked(&[("::1", 49), ("10.0.0.9", 3)]));
        assert_eq!(dashboard.lockouts(now).len(), 1);
        // Sixteen minutes on, all of it is past.
        let later = now + Duration::from_secs(16 * 60);
        assert!(dashboard.top_usernames(later, 5).is_empty());
        assert!(dashboard.lockouts(later).is_empty());
    }

    #[test]
    fn a_failure_storm_is_bounded() {
        let mut dashboard = Dashboard::default();
        let session = fixtures::session(1, "alice");
        for n in 0..(MAX_RECENT as u64 + 10) {
            dashboard.event(&fixtures::event(n % 90, pb::EventKind::LoginFailed, &session, "from 10.0.0.1:1"));
        }
        assert_eq!(dashboard.recent_failures.len(), MAX_RECENT);
    }
}
