//! Aggregation of events a stranger can repeat at will (failed logins and
//! client authentications, the locks they cause): within one window, the
//! first event per kind and name (a username, or a service account) is
//! published at once, later ones are only counted, and one summary per
//! name closes the window. The number of names tracked per window is
//! capped; beyond it, events count toward one summary for "other names".
//! So a flood publishes at most `2 × MAX_NAMES + 1` such events per
//! window, however many requests it sends and however many names it makes
//! up, and it cannot fill the count-bounded share of the log quickly.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::{EventKind, EventRecord, Timestamp};
use crate::domain::ServiceAccountId;

/// What repeats are counted under: the kind, and whom the events name — a
/// username for failed logins and locks, a service account for a real
/// client's failed authentications (made-up client ids name none). Without
/// the account, one made-up client id's failure would stand for every
/// client's in the window, and a real client's failures and lock would be
/// only counted, under the last one's name.
type RepeatKey = (EventKind, Option<String>, Option<ServiceAccountId>);

/// How long one aggregation window lasts.
pub(super) const WINDOW: Duration = Duration::from_secs(60);

/// Names with an event of their own per window and kind.
pub(super) const MAX_NAMES: usize = 100;

/// Counts repeats of stranger-triggered events; see the module docs.
pub(super) struct RepeatFilter {
    window: Mutex<Window>,
}

struct Window {
    started: Timestamp,
    /// Repeats not published per key, with the last one seen.
    repeats: HashMap<RepeatKey, (u64, EventRecord)>,
    /// Per kind: events of names beyond [`MAX_NAMES`] (count, distinct
    /// names are not tracked: that would be the unbounded map again).
    overflow: HashMap<EventKind, u64>,
}

impl Window {
    fn new(started: Timestamp) -> Self {
        Self { started, repeats: HashMap::new(), overflow: HashMap::new() }
    }

    /// The summaries of this window, closed at `now`.
    fn summaries(&mut self, now: Timestamp) -> Vec<EventRecord> {
        let window = humantime::format_duration(WINDOW);
        let mut out = Vec::new();
        for (_, (count, last)) in self.repeats.drain() {
            if count == 0 {
                continue;
            }
            let mut summary = last;
            summary.sequence = 0;
            summary.occurred_at = now;
            summary.detail = format!("{count} more within {window}; the last: {}", summary.detail);
            out.push(summary);
        }
        for (kind, count) in self.overflow.drain() {
            let detail = format!("{count} more for other names within {window} (only {MAX_NAMES} names are listed)");
            let mut summary = EventRecord::new(kind).detail(detail);
            summary.occurred_at = now;
            out.push(summary);
        }
        // Deterministic order for watchers: oldest repeat first.
        out.sort_by_key(|e| (e.occurred_at, e.username.clone()));
        out
    }
}

impl RepeatFilter {
    pub(super) fn new() -> Self {
        Self { window: Mutex::new(Window::new(Timestamp::now())) }
    }

    /// The events to store for `events` arriving at `now`: the summaries of
    /// a window that has ended, then every event that is not a repeat.
    pub(super) fn admit(&self, events: Vec<EventRecord>, now: Timestamp) -> Vec<EventRecord> {
        let mut window = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = close_if_over(&mut window, now);
        for event in events {
            if !event.kind.is_aggregated() {
                out.push(event);
                continue;
            }
            let key = (event.kind, event.username.clone(), event.client_id);
            if let Some((count, last)) = window.repeats.get_mut(&key) {
                *count += 1;
                *last = event;
            } else if window.repeats.len() < MAX_NAMES * 2 {
                // (Both aggregated kinds share the map: twice the names.)
                window.repeats.insert(key, (0, event.clone()));
                out.push(event);
            } else {
                *window.overflow.entry(event.kind).or_default() += 1;
            }
        }
        out
    }

    /// The summaries of the window if it has ended by `now` (the sweeper
    /// calls this, so a summary is never held back long by quiet).
    pub(super) fn flush(&self, now: Timestamp) -> Vec<EventRecord> {
        let mut window = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        close_if_over(&mut window, now)
    }
}

fn close_if_over(window: &mut Window, now: Timestamp) -> Vec<EventRecord> {
    if now < window.started.plus(WINDOW) {
        return Vec::new();
    }
    let summaries = window.summaries(now);
    *window = Window::new(now);
    summaries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(name: &str, from: &str) -> EventRecord {
        let mut event = EventRecord::new(EventKind::LoginFailed).detail(format!("from {from}"));
        event.username = Some(name.to_string());
        event
    }

    #[test]
    fn repeats_within_a_window_become_one_summary() {
        let filter = RepeatFilter::new();
        let start = Timestamp::now();
        let first = filter.admit((0..50).map(|i| failed("admin", &format!("10.0.0.1:{i}"))).collect(), start);
        assert_eq!(first.len(), 1, "the first is published at once");
        let other = filter.admit(vec![EventRecord::new(EventKind::UserCreated)], start);
        assert_eq!(other.len(), 1, "other kinds pass untouched");
        assert!(filter.flush(start.plus(Duration::from_secs(1))).is_empty(), "the window is still open");
        let closed = filter.flush(start.plus(WINDOW));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].username.as_deref(), Some("admin"));
        assert!(closed[0].detail.starts_with("49 more within 1m; the last: from 10.0.0.1:49"), "{}", closed[0].detail);
        assert!(filter.flush(start.plus(WINDOW * 3)).is_empty(), "nothing more to say");
    }

    #[test]
    fn made_up_names_cannot_grow_the_output_or_the_state() {
        let filter = RepeatFilter::new();
        let start = Timestamp::now();
        let flood: Vec<_> = (0..100_000).map(|i| failed(&format!("name-{i}"), "10.0.0.2:1")).collect();
        let published = filter.admit(flood, start);
        assert_eq!(published.len(), MAX_NAMES * 2);
        let closed = filter.flush(start.plus(WINDOW));
        assert_eq!(closed.len(), 1, "one summary for every other name");
        assert!(closed[0].detail.starts_with(&format!("{} more for other names", 100_000 - MAX_NAMES * 2)));
        assert!(closed[0].username.is_none());
    }
}
