//! Small text helpers: relative times, short ids and counted nouns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch of a protobuf timestamp (0 when absent).
pub fn millis(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)).unwrap_or(0)
}

/// Milliseconds since the epoch of `now`.
pub fn now_millis(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// "3m ago", "in 14m", "just now", or "-" for no time.
pub fn relative(t: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    if t.is_none() {
        return "-".into();
    }
    let delta = millis(t) - now_millis(now);
    let span = human(Duration::from_millis(delta.unsigned_abs()));
    match delta {
        d if d.abs() < 1000 => "just now".into(),
        d if d > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

/// The largest unit of a duration: "45s", "3m", "5h", "12d".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The last eight characters of an id: enough to tell rows apart. Sigil's
/// ids are UUIDv7, whose first characters encode the creation time, so
/// everything made in the same minute shares them; the tail is random.
pub fn short_id(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// "100,000": a count with its thousands separated.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// "1 session", "3 sessions": a count and its noun (regular plurals only).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        let shown: Vec<String> = [0, 999, 1000, 12_000, 100_000, 1_234_567].into_iter().map(thousands).collect();
        assert_eq!(shown, ["0", "999", "1,000", "12,000", "100,000", "1,234,567"]);
    }

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(relative(at(1_000_000 - 180).as_ref(), now), "3m ago");
        assert_eq!(relative(at(1_000_000 + 14 * 60).as_ref(), now), "in 14m");
        assert_eq!(relative(at(1_000_000).as_ref(), now), "just now");
        assert_eq!(relative(at(1_000_000 + 3 * 86_400).as_ref(), now), "in 3d");
        assert_eq!(relative(None, now), "-");
    }

    #[test]
    fn ids_made_in_the_same_millisecond_still_look_different() {
        // Two UUIDv7 ids of the same instant: the 48-bit time prefix is
        // equal, only the random tail differs.
        let a = "019ad7e1-2b3c-7a11-8f00-4c1d2e3f4a5b";
        let b = "019ad7e1-2b3c-7b22-9e11-7f6e5d4c3b2a";
        assert_ne!(short_id(a), short_id(b));
        assert_eq!(short_id(a), "2e3f4a5b");
        assert_eq!(short_id("abc"), "abc", "short ids are shown whole");
    }

    #[test]
    fn counts_read_as_english() {
        assert_eq!(count(1u32, "session"), "1 session");
        assert_eq!(count(0u32, "session"), "0 sessions");
        assert_eq!(count(2u32, "token"), "2 tokens");
    }
}
