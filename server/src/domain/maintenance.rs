//! Background upkeep of [`Identity`], run periodically by the server:
//! expire sessions and tokens that reached their expiry (with events), purge
//! ended records after the retention period, drop revocations no live token
//! can be affected by, retire signing keys whose last token has expired,
//! forget the ids of expired client assertions, publish the summaries of
//! repeated failed logins, trim the event log
//! (audit events by age, the rest by count), and write last-seen times to
//! the store.

use super::{
    DomainError, Identity, Timestamp,
    event::{EventKind, EventRecord},
    keys::KeyState,
    port::Expired,
};

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Sessions marked expired.
    pub expired_sessions: usize,
    /// Tokens marked expired.
    pub expired_tokens: usize,
    /// Ended records deleted.
    pub purged_records: usize,
    /// Revocation-index entries dropped.
    pub purged_revocations: usize,
    /// Signing keys retired.
    pub retired_keys: usize,
    /// Failed-login counters forgotten (nothing recent, no lock).
    pub purged_login_counters: usize,
    /// Ids of expired client assertions forgotten.
    pub purged_assertion_ids: usize,
}

/// Records handled per store call, so one sweep never holds the store long.
const BATCH: usize = 1000;

impl Identity {
    /// Runs every upkeep task once.
    pub async fn sweep(&self) -> Result<SweepReport, DomainError> {
        let now = Timestamp::now();
        let mut report = SweepReport::default();

        self.flush_last_seen().await?;

        loop {
            let expired = self.store.expire_due(now, BATCH).await?;
            let done = expired.len() < BATCH;
            let mut events = Vec::new();
            for item in expired {
                match item {
                    Expired::Session(s) => {
                        report.expired_sessions += 1;
                        events.push(
                            EventRecord::new(EventKind::SessionExpired).user(s.user_id, &s.username).session(s.id),
                        );
                    }
                    Expired::Token(_) => report.expired_tokens += 1,
                }
            }
            self.events.publish(events).await;
            if done {
                break;
            }
        }

        let keep_records_after = now.minus(self.settings.record_retention);
        loop {
            let purged = self.store.purge_ended(keep_records_after, BATCH).await?;
            report.purged_records += purged;
            if purged < BATCH {
                break;
            }
        }

        // Counters of made-up names, and of attacks long over.
        let window = self.settings.lockout.window.max(self.settings.address_lockout.window);
        report.purged_login_counters = self.store.purge_login_failures(now, window, BATCH).await?;

        // Ids of client assertions that expired: a replay of one is
        // refused by its `exp` from now on.
        report.purged_assertion_ids = self.store.purge_assertion_ids(now, BATCH).await?;

        // Both by the bound stored with each entry, never by today's TTL.
        report.purged_revocations = self.revocations.purge(now);
        self.store.purge_revocations(now).await?;

        // A key superseded more than one access-token lifetime (plus leeway)
        // ago signed nothing that can still be live.
        let overlap = self.settings.access_token_ttl + self.settings.leeway;
        let keys = self.store.signing_keys().await?;
        for key in &keys {
            if key.state == KeyState::Verifying && key.superseded_at.is_some_and(|at| at.plus(overlap) <= now) {
                self.store.retire_signing_key(&key.kid, now).await?;
                let mut event = EventRecord::new(EventKind::KeyRetired);
                event.token_id = Some(key.kid.clone());
                self.events.publish(vec![event]).await;
                report.retired_keys += 1;
            }
        }
        if report.retired_keys > 0 {
            let records = self.store.signing_keys().await?;
            self.install_keys(&records)?;
        }

        self.events.flush_repeats().await;
        self.events.trim(self.settings.audit_retention).await?;
        Ok(report)
    }

    /// Writes the last-seen times noted by `Validate` to the store.
    pub async fn flush_last_seen(&self) -> Result<(), DomainError> {
        let seen: Vec<_> = self.last_seen.iter().map(|e| (*e.key(), *e.value())).collect();
        if seen.is_empty() {
            return Ok(());
        }
        self.store.touch_sessions(&seen).await?;
        // Keep entries noted since the snapshot.
        for (session, at) in seen {
            self.last_seen.remove_if(&session, |_, current| *current <= at);
        }
        Ok(())
    }
}
