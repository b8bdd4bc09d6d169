//! Brute-force protection: failed logins are counted per account, and an
//! account with too many recent failures is locked for a while, during
//! which even the right password is refused.
//!
//! Counters are keyed by the normalized username *and* the user's id (or
//! none for names that have no user). Unknown names lock exactly like real
//! ones, so a lock tells an attacker nothing about which names exist; and a
//! user created later under a name that was attacked starts with a clean
//! slate, because its id is new.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Timestamp, UserId};

/// When failures lock an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock the account; 0 turns locking off.
    pub threshold: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a lock lasts.
    pub duration: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self { threshold: 10, window: Duration::from_secs(15 * 60), duration: Duration::from_secs(15 * 60) }
    }
}

/// How long an admitted attempt may stay unfinished before it counts as a
/// failure: one whose process died (kill -9) mid-evaluation never reports
/// back, and must not hand the guesser a free attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The recent failures of one account, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Times of the failures inside the window, oldest first.
    pub failures: Vec<Timestamp>,
    /// Until when the account is locked, if it is.
    pub locked_until: Option<Timestamp>,
    /// Start times of the attempts being evaluated now. They count against
    /// the threshold like failures until they end, so that guesses sent all
    /// at once can never have more than the threshold evaluated.
    #[serde(default)]
    pub pending: Vec<Timestamp>,
}

/// One step of a login attempt on an account's counter, applied atomically
/// by the store ([`FailureRecord::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptStep {
    /// An attempt wants to be evaluated.
    Begin,
    /// An admitted attempt (its ticket) was evaluated.
    End {
        /// The ticket [`AttemptOutcome::Admitted`] gave it.
        ticket: Timestamp,
        /// Whether the credentials were right.
        succeeded: bool,
    },
}

/// What [`FailureRecord::apply`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Evaluate the attempt, then end it with this ticket.
    Admitted(Timestamp),
    /// The account is locked for this long: refuse unevaluated.
    Locked(Duration),
    /// As many attempts as the threshold allows are in flight or failed:
    /// refuse unevaluated; retrying in a moment may succeed.
    Busy,
    /// The attempt ended; `locked` when its failure locked the account.
    Ended {
        /// Whether this failure locked the account.
        locked: bool,
    },
}

impl FailureRecord {
    /// How long the account stays locked, if it is locked at `now`.
    pub fn locked_for(&self, now: Timestamp) -> Option<Duration> {
        let until = self.locked_until?;
        (until > now).then(|| Duration::from_millis((until.as_millis() - now.as_millis()) as u64))
    }

    /// Counts a failure at `now`; returns whether it locked the account.
    /// An attempt while the account is locked is not counted towards the
    /// next lock (a login is refused unevaluated; a client's credential is
    /// evaluated, and only a wrong one refused).
    pub fn record_failure(&mut self, now: Timestamp, policy: &LockoutPolicy) -> bool {
        if self.locked_for(now).is_some() {
            return false;
        }
        let since = now.minus(policy.window);
        self.failures.retain(|t| *t > since);
        self.failures.push(now);
        if policy.threshold > 0 && self.failures.len() >= policy.threshold as usize {
            self.locked_until = Some(now.plus(policy.duration));
            self.failures.clear();
            return true;
        }
        false
    }
}

impl FailureRecord {
    /// Applies one step at `now` under `policy`: the whole lockout rule,
    /// which every engine runs inside one atomic read-modify-write.
    pub fn apply(&mut self, step: AttemptStep, now: Timestamp, policy: &LockoutPolicy) -> AttemptOutcome {
        // Attempts that never reported back count as failures.
        let stale = now.minus(ATTEMPT_TIMEOUT);
        let abandoned = self.pending.iter().filter(|t| **t <= stale).count();
        self.pending.retain(|t| *t > stale);
        for _ in 0..abandoned {
            self.record_failure(now, policy);
        }
        match step {
            AttemptStep::Begin => {
                if let Some(wait) = self.locked_for(now) {
                    return AttemptOutcome::Locked(wait);
                }
                let since = now.minus(policy.window);
                self.failures.retain(|t| *t > since);
                if policy.threshold > 0 && self.failures.len() + self.pending.len() >= policy.threshold as usize {
                    return AttemptOutcome::Busy;
                }
                self.pending.push(now);
                AttemptOutcome::Admitted(now)
            }
            AttemptStep::End { ticket, succeeded } => {
                if let Some(at) = self.pending.iter().position(|t| *t == ticket) {
                    self.pending.remove(at);
                }
                if succeeded {
                    self.failures.clear();
                    self.locked_until = None;
                    return AttemptOutcome::Ended { locked: false };
                }
                AttemptOutcome::Ended { locked: self.record_failure(now, policy) }
            }
        }
    }

    /// Whether the counter can be forgotten at `now`: no lock in force, no
    /// failure younger than `window`, no attempt still being evaluated.
    /// Counters for made-up names would otherwise pile up in the store.
    pub fn is_stale(&self, now: Timestamp, window: Duration) -> bool {
        let recent = now.minus(window);
        let attempting = now.minus(ATTEMPT_TIMEOUT);
        self.locked_for(now).is_none()
            && self.failures.iter().all(|t| *t <= recent)
            && self.pending.iter().all(|t| *t <= attempting)
    }

    /// Whether nothing is left worth storing.
    pub fn is_clear(&self) -> bool {
        self.failures.is_empty() && self.pending.is_empty() && self.locked_until.is_none()
    }
}

/// The store key of an account's counter.
pub fn throttle_key(username: &str, user: Option<UserId>) -> String {
    match user {
        Some(id) => format!("{username}\u{0}{id}"),
        None => format!("{username}\u{0}-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_within_the_window_locks_for_the_duration() {
        let policy =
            LockoutPolicy { threshold: 3, window: Duration::from_secs(60), duration: Duration::from_secs(300) };
        let start = Timestamp::from_millis(1_000_000);
        let mut record = FailureRecord::default();
        assert!(!record.record_failure(start, &policy));
        // A failure older than the window no longer counts.
        let later = start.plus(Duration::from_secs(61));
        assert!(!record.record_failure(later, &policy));
        assert!(!record.record_failure(later, &policy));
        assert!(record.record_failure(later, &policy));
        assert_eq!(record.locked_for(later), Some(Duration::from_secs(300)));
        assert_eq!(record.locked_for(later.plus(Duration::from_secs(301))), None);
    }

    #[test]
    fn no_more_attempts_than_the_threshold_are_ever_in_flight() {
        let policy =
            LockoutPolicy { threshold: 3, window: Duration::from_secs(60), duration: Duration::from_secs(300) };
        let now = Timestamp::from_millis(1_000_000);
        let mut record = FailureRecord::default();
        let tickets: Vec<_> = (0..3).map(|_| record.apply(AttemptStep::Begin, now, &policy)).collect();
        assert!(tickets.iter().all(|t| matches!(t, AttemptOutcome::Admitted(_))));
        assert_eq!(record.apply(AttemptStep::Begin, now, &policy), AttemptOutcome::Busy);
        // Two fail, the third succeeds: the count is reset and the lock never came.
        let end = |succeeded| AttemptStep::End { ticket: now, succeeded };
        assert_eq!(record.apply(end(false), now, &policy), AttemptOutcome::Ended { locked: false });
        assert_eq!(record.apply(end(false), now, &policy), AttemptOutcome::Ended { locked: false });
        assert_eq!(record.apply(end(true), now, &policy), AttemptOutcome::Ended { locked: false });
        assert!(record.is_clear());
    }

    #[test]
    fn the_threshold_th_failure_locks_and_an_abandoned_attempt_counts_as_one() {
        let policy =
            LockoutPolicy { threshold: 2, window: Duration::from_secs(600), duration: Duration::from_secs(300) };
        let now = Timestamp::from_millis(1_000_000);
        let mut record = FailureRecord::default();
        // An attempt whose process died mid-evaluation.
        assert_eq!(record.apply(AttemptStep::Begin, now, &policy), AttemptOutcome::Admitted(now));
        let later = now.plus(ATTEMPT_TIMEOUT + Duration::from_secs(1));
        let AttemptOutcome::Admitted(ticket) = record.apply(AttemptStep::Begin, later, &policy) else {
            panic!("admitted");
        };
        let end = AttemptStep::End { ticket, succeeded: false };
        assert_eq!(record.apply(end, later, &policy), AttemptOutcome::Ended { locked: true });
        assert_eq!(record.apply(AttemptStep::Begin, later, &policy), AttemptOutcome::Locked(Duration::from_secs(300)));
    }

    #[test]
    fn a_counter_goes_stale_once_its_window_and_lock_are_over() {
        let policy =
            LockoutPolicy { threshold: 2, window: Duration::from_secs(60), duration: Duration::from_secs(300) };
        let now = Timestamp::from_millis(1_000_000);
        let mut record = FailureRecord::default();
        assert!(!record.record_failure(now, &policy));
        assert!(!record.is_stale(now.plus(Duration::from_secs(59)), policy.window));
        assert!(record.is_stale(now.plus(Duration::from_secs(61)), policy.window));
        record.record_failure(now, &policy);
        assert!(!record.is_stale(now.plus(Duration::from_secs(299)), policy.window), "locked");
        assert!(record.is_stale(now.plus(Duration::from_secs(301)), policy.window));
    }

    #[test]
    fn a_zero_threshold_never_locks() {
        let policy = LockoutPolicy { threshold: 0, ..LockoutPolicy::default() };
        let mut record = FailureRecord::default();
        for _ in 0..100 {
            assert!(!record.record_failure(Timestamp::now(), &policy));
        }
    }

    #[test]
    fn names_without_users_and_later_users_have_different_keys() {
        assert_ne!(throttle_key("eve", None), throttle_key("eve", Some(UserId::generate())));
    }
}
