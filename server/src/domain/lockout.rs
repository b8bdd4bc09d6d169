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

/// The recent failures of one account, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Times of the failures inside the window, oldest first.
    pub failures: Vec<Timestamp>,
    /// Until when the account is locked, if it is.
    pub locked_until: Option<Timestamp>,
}

impl FailureRecord {
    /// How long the account stays locked, if it is locked at `now`.
    pub fn locked_for(&self, now: Timestamp) -> Option<Duration> {
        let until = self.locked_until?;
        (until > now).then(|| Duration::from_millis((until.as_millis() - now.as_millis()) as u64))
    }

    /// Counts a failure at `now`; returns whether it locked the account.
    pub fn record_failure(&mut self, now: Timestamp, policy: &LockoutPolicy) -> bool {
        let since = now.minus(policy.window);
        self.failures.retain(|t| *t > since);
        self.failures.push(now);
        if policy.threshold > 0 && self.failures.len() >= policy.threshold as usize && self.locked_for(now).is_none() {
            self.locked_until = Some(now.plus(policy.duration));
            self.failures.clear();
            return true;
        }
        false
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
