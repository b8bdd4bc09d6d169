//! Keeping one instance in step with the others that share its store.
//!
//! Every instance validates from memory (its key ring and revocation index),
//! so what another instance commits — a revocation, a key rotation, an audit
//! event — must reach this one's memory. [`Identity::catch_up`] reads it
//! from the store: revocations and events after the last sequence applied,
//! and the signing keys. The server runs it whenever the store signals a
//! change (PostgreSQL `NOTIFY`) and on a timer, so a lost notification only
//! delays a revocation until the next tick.
//!
//! Revocations made here are applied at once, before the call returns, and
//! again (harmlessly) when the catch-up reads them back.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use super::{DomainError, Identity, keys::KeyRing, keys::SigningKeyRecord, revocation::RevocationEntry};

/// Revocation-log entries read per step.
const BATCH: usize = 1000;

/// Where this instance stands in the shared revocation log.
pub(crate) struct PeerSync {
    /// Every entry up to this sequence has been applied, in order.
    applied_through: AtomicU64,
    /// The highest sequence known committed, by this instance or read back
    /// from the store: what revocation streams follow up to (see
    /// `revocation_stream`). Unlike `applied_through` it may run ahead of
    /// entries of other instances not yet caught up on, which a stream
    /// reads from the log itself.
    committed_through: AtomicU64,
    /// Serializes applying entries, so that an entry applied here never
    /// lands between a catch-up's older entries (order matters for a user
    /// disabled then enabled again).
    applying: Mutex<()>,
}

impl PeerSync {
    /// Starts after the entries the index was rebuilt from.
    pub(crate) fn new(applied_through: u64) -> Self {
        Self {
            applied_through: AtomicU64::new(applied_through),
            committed_through: AtomicU64::new(applied_through),
            applying: Mutex::new(()),
        }
    }

    /// The last sequence applied in order.
    pub(crate) fn applied_through(&self) -> u64 {
        self.applied_through.load(Ordering::Acquire)
    }

    /// The highest revocation sequence known committed.
    pub(crate) fn committed_through(&self) -> u64 {
        self.committed_through.load(Ordering::Acquire)
    }

    /// Notes entries known committed.
    fn committed(&self, entries: &[RevocationEntry]) {
        if let Some(highest) = entries.iter().map(|e| e.sequence).max() {
            self.committed_through.fetch_max(highest, Ordering::AcqRel);
        }
    }
}

/// What one catch-up brought in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Revocation-log entries applied.
    pub revocations: usize,
    /// Whether the signing keys changed.
    pub keys_changed: bool,
    /// Events broadcast to this instance's watchers.
    pub events: usize,
}

impl Identity {
    /// Applies revocations this instance just committed, at once.
    pub(super) fn apply_revocations(&self, entries: &[RevocationEntry]) {
        let _applying = self.peers.applying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let through = self.peers.applied_through();
        // An entry the catch-up already applied must not be applied again
        // out of order.
        for entry in entries.iter().filter(|e| e.sequence > through) {
            self.revocations.apply(entry);
        }
        self.peers.committed(entries);
        drop(_applying);
        self.authorization_changed();
    }

    /// Reads what other instances committed since the last catch-up into
    /// memory: revocations, audit events and, with `keys`, the signing keys.
    pub async fn catch_up(&self, keys: bool) -> Result<CatchUp, DomainError> {
        let mut report = CatchUp::default();
        loop {
            let entries = self.store.revocations_after(self.peers.applied_through(), BATCH).await?;
            let Some(last) = entries.last().map(|e| e.sequence) else { break };
            {
                let _applying = self.peers.applying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for entry in &entries {
                    self.revocations.apply(entry);
                }
                self.peers.applied_through.fetch_max(last, Ordering::AcqRel);
                self.peers.committed(&entries);
            }
            report.revocations += entries.len();
            self.authorization_changed();
            if entries.len() < BATCH {
                break;
            }
        }
        if keys {
            let records = self.store.signing_keys().await?;
            if !self.keys.load().is_built_from(&records) {
                self.install_keys(&records)?;
                tracing::info!(active = %self.keys.load().active().kid, "signing keys changed on another instance");
                report.keys_changed = true;
            }
        }
        report.events = self.events.follow().await?;
        Ok(report)
    }

    /// Makes `records` the key ring that signs and verifies.
    pub(super) fn install_keys(&self, records: &[SigningKeyRecord]) -> Result<(), DomainError> {
        self.keys.store(Arc::new(KeyRing::from_records(records)?));
        self.authorization_changed();
        Ok(())
    }
}
