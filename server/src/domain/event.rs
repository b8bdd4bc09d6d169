//! The audit trail: what happened, who did it, to whom. Events are stored
//! (so watchers can resume after a restart) and broadcast to live watchers
//! by [`EventHub`].
//!
//! Retention depends on the event's [`EventClass`]: admin and security
//! events (users, roles, keys, revocations) are kept for a configured time
//! (`audit_retention`), whatever else happens; the high-volume rest (logins,
//! refreshes, expiries, failed logins) is bounded by count
//! (`event_retention`). Failed logins, which any stranger can send, are
//! also aggregated (see `repeats`), so that a flood neither reaches the
//! audit share nor fills the counted one quickly. What one watcher
//! receives, and when its watch ends, is decided in `watch`.

mod repeats;
mod watch;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast};

pub use self::watch::EventWatch;
pub use super::subscription::WatchEnd;
use super::{
    DomainError, ServiceAccountId, SessionId, Timestamp, TokenId, UserId,
    port::Store,
    session::{SessionRecord, TokenRecord},
};

/// What happened. Mirrors `sigil.v1.EventKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A login opened a session.
    SessionCreated,
    /// A session's refresh token was rotated.
    SessionRefreshed,
    /// A session was revoked.
    SessionRevoked,
    /// A session reached its expiry.
    SessionExpired,
    /// An access token was issued.
    TokenIssued,
    /// A token was revoked on its own.
    TokenRevoked,
    /// A user was created.
    UserCreated,
    /// A user's roles or password changed.
    UserUpdated,
    /// A user was disabled.
    UserDisabled,
    /// A user was enabled again.
    UserEnabled,
    /// A user was deleted.
    UserDeleted,
    /// A login failed.
    LoginFailed,
    /// A new signing key became active.
    KeyRotated,
    /// A signing key stopped verifying.
    KeyRetired,
    /// A refresh token was used twice.
    RefreshReused,
    /// Too many failed logins locked an account.
    AccountLocked,
    /// The server was started over a store that had lost committed data,
    /// because the operator said to accept the loss.
    StoreLossAccepted,
    /// A service account was created.
    ServiceAccountCreated,
    /// A service account's roles, audiences or scopes changed.
    ServiceAccountUpdated,
    /// A service account was disabled.
    ServiceAccountDisabled,
    /// A service account was enabled again.
    ServiceAccountEnabled,
    /// A service account was deleted.
    ServiceAccountDeleted,
    /// A client secret was added to a service account.
    ClientSecretAdded,
    /// A client secret was revoked.
    ClientSecretRevoked,
    /// A service account's public key was registered, replaced or removed.
    ClientKeySet,
    /// Every token of a service account issued so far was revoked.
    ServiceTokensRevoked,
    /// A client authentication failed (unknown client, wrong secret, bad
    /// or replayed assertion, disabled client, locked client).
    ClientAuthFailed,
}

/// How an event is retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventClass {
    /// An admin or security action: kept for the audit retention period,
    /// never pushed out by volume.
    Audit,
    /// Routine or stranger-triggered: the newest `event_retention` are kept.
    Noise,
}

impl EventKind {
    /// How events of this kind are retained.
    pub fn class(self) -> EventClass {
        match self {
            Self::SessionRevoked
            | Self::TokenRevoked
            | Self::UserCreated
            | Self::UserUpdated
            | Self::UserDisabled
            | Self::UserEnabled
            | Self::UserDeleted
            | Self::KeyRotated
            | Self::KeyRetired
            | Self::RefreshReused
            | Self::StoreLossAccepted
            | Self::ServiceAccountCreated
            | Self::ServiceAccountUpdated
            | Self::ServiceAccountDisabled
            | Self::ServiceAccountEnabled
            | Self::ServiceAccountDeleted
            | Self::ClientSecretAdded
            | Self::ClientSecretRevoked
            | Self::ClientKeySet
            | Self::ServiceTokensRevoked => EventClass::Audit,
            // Anyone can cause failed logins and locks (for made-up names
            // too), so they must not grow the time-kept share; a login, a
            // refresh, an expiry or an issued token is routine volume.
            Self::SessionCreated
            | Self::SessionRefreshed
            | Self::SessionExpired
            | Self::TokenIssued
            | Self::LoginFailed
            | Self::AccountLocked
            | Self::ClientAuthFailed => EventClass::Noise,
        }
    }

    /// Whether repeats of this kind are aggregated (a stranger can send
    /// them at will).
    pub fn is_aggregated(self) -> bool {
        matches!(self, Self::LoginFailed | Self::AccountLocked | Self::ClientAuthFailed)
    }
}

/// One audit event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the log, assigned when stored (0 before).
    pub sequence: u64,
    /// When.
    pub occurred_at: Timestamp,
    /// What.
    pub kind: EventKind,
    /// Who did it.
    pub actor: Option<UserId>,
    /// The user concerned.
    pub user_id: Option<UserId>,
    /// That user's name.
    pub username: Option<String>,
    /// The session concerned.
    pub session_id: Option<SessionId>,
    /// The token (or, as text, the key id) concerned.
    pub token_id: Option<String>,
    /// The service account concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<ServiceAccountId>,
    /// Free text; never a secret.
    pub detail: String,
    /// The session as it stood right after the event, on events that open
    /// or renew one: watchers (the console) show it without listing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_record: Option<Box<SessionRecord>>,
    /// The token the event issued, as issued (see `session_record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_record: Option<Box<TokenRecord>>,
}

impl EventRecord {
    /// A new event of `kind`, happening now.
    pub fn new(kind: EventKind) -> Self {
        Self {
            sequence: 0,
            occurred_at: Timestamp::now(),
            kind,
            actor: None,
            user_id: None,
            username: None,
            session_id: None,
            token_id: None,
            client_id: None,
            detail: String::new(),
            session_record: None,
            token_record: None,
        }
    }

    /// Names the acting user.
    pub fn actor(mut self, actor: Option<UserId>) -> Self {
        self.actor = actor;
        self
    }

    /// Names the user concerned.
    pub fn user(mut self, id: UserId, username: &str) -> Self {
        self.user_id = Some(id);
        self.username = Some(username.to_string());
        self
    }

    /// Names the session concerned.
    pub fn session(mut self, id: SessionId) -> Self {
        self.session_id = Some(id);
        self
    }

    /// Names the token concerned.
    pub fn token(mut self, id: TokenId) -> Self {
        self.token_id = Some(id.to_string());
        self
    }

    /// Names the service account concerned.
    pub fn client(mut self, id: ServiceAccountId) -> Self {
        self.client_id = Some(id);
        self
    }

    /// Carries the session as it stands now.
    pub fn session_record(mut self, session: &SessionRecord) -> Self {
        self.session_record = Some(Box::new(session.clone()));
        self
    }

    /// Carries the token as issued, without the look-up hash a refresh
    /// token's record may hold (a hash, but an event is no place for it).
    pub fn token_record(mut self, token: &TokenRecord) -> Self {
        self.token_record = Some(Box::new(TokenRecord { refresh_hash: None, ..token.clone() }));
        self
    }

    /// Adds free text.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// Stores events in order and fans them out to live watchers. Writers never
/// wait for watchers: a watcher that cannot keep up lags and is told so.
///
/// With a store only this process writes, `publish` broadcasts what it
/// stored. With a shared store, events from every instance are broadcast by
/// [`EventHub::follow`], which reads them back from the store in the global
/// sequence order (`publish` only stores, then raises the store's change
/// signal so that the follower runs at once).
pub struct EventHub {
    store: Arc<dyn Store>,
    live: broadcast::Sender<Arc<EventRecord>>,
    /// Serializes "assign sequence, store, broadcast" (local store) or
    /// "read, broadcast" (`follow`) so that watchers see events in order.
    order: Mutex<()>,
    /// How many noise events are kept.
    retained: usize,
    /// Repeated failed logins, counted instead of stored one by one.
    repeats: repeats::RepeatFilter,
    /// For a shared store: the last sequence broadcast.
    followed_through: Option<AtomicU64>,
}

impl EventHub {
    /// A hub keeping the last `retained` noise events, buffering `backlog`
    /// events per live watcher before it counts as lagging.
    pub async fn open(store: Arc<dyn Store>, retained: usize, backlog: usize) -> Result<Self, DomainError> {
        let (live, _) = broadcast::channel(backlog.max(16));
        let followed_through = match store.changes() {
            Some(_) => Some(AtomicU64::new(store.latest_event_sequence().await?)),
            None => None,
        };
        Ok(Self {
            store,
            live,
            order: Mutex::new(()),
            retained: retained.max(1),
            repeats: repeats::RepeatFilter::new(),
            followed_through,
        })
    }

    /// Records and broadcasts events (repeated failed logins aggregated). A
    /// failure to record is logged, not returned: the operation the event
    /// describes has already committed.
    pub async fn publish(&self, events: Vec<EventRecord>) {
        let events = self.repeats.admit(events, Timestamp::now());
        self.store_and_broadcast(events).await;
    }

    async fn store_and_broadcast(&self, events: Vec<EventRecord>) {
        if events.is_empty() {
            return;
        }
        if self.followed_through.is_some() {
            // A shared store orders events itself (one global sequence) and
            // `follow` broadcasts them, so nothing here needs serializing.
            match self.store.append_events(events).await {
                Ok(_) => {
                    if let Some(changes) = self.store.changes() {
                        changes.raise(false);
                    }
                }
                Err(e) => tracing::error!(error = %e, "audit events could not be stored"),
            }
            return;
        }
        let _order = self.order.lock().await;
        match self.store.append_events(events).await {
            Ok(stored) => {
                for event in stored {
                    // No receivers is fine: nobody is watching.
                    let _ = self.live.send(Arc::new(event));
                }
            }
            Err(e) => tracing::error!(error = %e, "audit events could not be stored"),
        }
    }

    /// With a shared store, broadcasts the events stored (by any instance)
    /// since the last call; returns how many. Does nothing otherwise.
    pub async fn follow(&self) -> Result<usize, DomainError> {
        const BATCH: usize = 1000;
        let Some(through) = &self.followed_through else { return Ok(0) };
        let _order = self.order.lock().await;
        let mut sent = 0;
        loop {
            let batch = self.store.events_after(through.load(Ordering::Acquire), BATCH).await?;
            let Some(last) = batch.last().map(|e| e.sequence) else { break };
            let full = batch.len() == BATCH;
            sent += batch.len();
            for event in batch {
                let _ = self.live.send(Arc::new(event));
            }
            through.store(last, Ordering::Release);
            if !full {
                break;
            }
        }
        Ok(sent)
    }

    /// A receiver of events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.live.subscribe()
    }

    /// The sequence of the newest stored event (0 when there is none).
    pub async fn latest_sequence(&self) -> Result<u64, DomainError> {
        Ok(self.store.latest_event_sequence().await?)
    }

    /// Stored events after `after`, oldest first, at most `limit`.
    pub async fn replay(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, DomainError> {
        Ok(self.store.events_after(after, limit).await?)
    }

    /// Publishes the summaries of an aggregation window that has ended.
    pub async fn flush_repeats(&self) {
        let summaries = self.repeats.flush(Timestamp::now());
        self.store_and_broadcast(summaries).await;
    }

    /// Drops audit events older than `audit_retention` and all but the last
    /// `retained` noise events.
    pub async fn trim(&self, audit_retention: std::time::Duration) -> Result<usize, DomainError> {
        Ok(self.store.trim_events(self.retained, Timestamp::now().minus(audit_retention)).await?)
    }

    /// Number of live watchers.
    pub fn watchers(&self) -> usize {
        self.live.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::{RefreshTokenHash, TokenKind, TokenState};

    #[test]
    fn an_events_token_record_never_carries_the_refresh_hash() {
        let token = TokenRecord {
            id: TokenId::generate(),
            kind: TokenKind::Refresh,
            session_id: SessionId::generate(),
            user_id: UserId::generate(),
            username: "carol".into(),
            issued_at: Timestamp::now(),
            expires_at: Timestamp::now(),
            state: TokenState::Active,
            revoked_at: None,
            refresh_hash: Some(RefreshTokenHash([7; 32])),
        };
        let event = EventRecord::new(EventKind::SessionCreated).token_record(&token);
        let carried = event.token_record.as_deref().expect("carried");
        assert!(carried.refresh_hash.is_none());
        assert_eq!(carried.id, token.id);
        // Stored as JSON by both engines: the hash's field is not even named.
        let stored = serde_json::to_string(&event).expect("json");
        assert!(!stored.contains("refresh_hash"), "{stored}");
    }

    #[test]
    fn events_stored_before_the_records_existed_still_decode() {
        let mut old = serde_json::to_value(EventRecord::new(EventKind::SessionCreated)).expect("json");
        let fields = old.as_object_mut().expect("object");
        assert!(!fields.contains_key("session_record"), "absent records are not written");
        fields.remove("token_record");
        let decoded: EventRecord = serde_json::from_value(old).expect("decodes");
        assert!(decoded.session_record.is_none() && decoded.token_record.is_none());
    }
}
