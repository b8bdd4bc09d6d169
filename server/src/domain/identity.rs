//! [`Identity`]: the identity service's use cases — log in, validate,
//! refresh, revoke — over a [`Store`], the signing keys, the password
//! hasher and the in-memory revocation index.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;

use super::{
    DomainError, Secret, SessionId, Timestamp, TokenId, UserId,
    cluster::PeerSync,
    event::{EventHub, EventKind, EventRecord},
    ids::IdMap,
    keys::{KeyRing, SigningKeyRecord},
    limits::{
        MAX_AUDIENCE_BYTES, MAX_DEVICE_NAME_BYTES, MAX_PASSWORD_BYTES, MAX_REASON_BYTES, MAX_REFRESH_TOKEN_BYTES,
        MAX_USER_AGENT_BYTES, truncate_to,
    },
    lockout::{AttemptOutcome, AttemptStep, LockoutPolicy, throttle_key},
    password::{PasswordHasher, base64_url, fill_random},
    port::{RevokeOutcome, RotateOutcome, Rotation, Store},
    revocation::RevocationIndex,
    revocation_stream,
    session::{NewRefreshToken, RefreshTokenHash, SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
    session_revocation,
    stats::Rates,
    token::{self, AccessClaims, TokenVerifier, ValidationFailure, VerifiedToken},
    user::{ADMIN_ROLE, UserRecord, normalize_username},
};

/// Tunables of the identity service.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// `iss` of issued tokens; the only issuer accepted.
    pub issuer: String,
    /// `aud` of issued tokens when the login names none.
    pub default_audience: String,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Absolute lifetime of sessions (and so of refresh tokens).
    pub session_ttl: Duration,
    /// Clock leeway on `exp` and `nbf`.
    pub leeway: Duration,
    /// How many verified tokens the signature cache holds.
    pub signature_cache_capacity: usize,
    /// Password hashes allowed at once (normally the core count).
    pub hashing_parallelism: usize,
    /// Password hashes allowed to wait; beyond, logins are refused at once.
    pub hashing_queue: usize,
    /// How many routine (noise-class) events are kept for replay.
    pub event_retention: usize,
    /// How long admin and security (audit-class) events are kept.
    pub audit_retention: Duration,
    /// How long ended sessions and tokens are kept before they are purged.
    pub record_retention: Duration,
    /// How often an idle revocation stream gets a heartbeat.
    pub revocation_heartbeat: Duration,
    /// Revocation streams open at once.
    pub max_revocation_streams: usize,
    /// Revocation streams one caller may hold open at once.
    pub max_revocation_streams_per_user: usize,
    /// When failed logins lock an account.
    pub lockout: LockoutPolicy,
    /// When failed logins from one client address block that address
    /// (threshold 0, the default, turns this off).
    pub address_lockout: LockoutPolicy,
    /// Peers whose `x-forwarded-for` names the real client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The longest a client assertion (`private_key_jwt`) may be valid for.
    pub client_assertion_max_lifetime: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            issuer: "sigil".into(),
            default_audience: "sigil".into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::ZERO,
            signature_cache_capacity: 100_000,
            hashing_parallelism: std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            hashing_queue: 64,
            event_retention: 10_000,
            // "3months" (humantime's month is 30.44 days), so that
            // --print-config shows it as such.
            audit_retention: Duration::from_secs(3 * 2_630_016),
            record_retention: Duration::from_secs(7 * 24 * 3600),
            revocation_heartbeat: Duration::from_secs(1),
            max_revocation_streams: 256,
            max_revocation_streams_per_user: 8,
            lockout: LockoutPolicy::default(),
            address_lockout: LockoutPolicy { threshold: 0, ..LockoutPolicy::default() },
            trusted_proxies: Vec::new(),
            client_assertion_max_lifetime: Duration::from_secs(5 * 60),
        }
    }
}

/// A login attempt.
#[derive(Debug)]
pub struct Login {
    /// As typed; normalized here.
    pub username: String,
    /// The password.
    pub password: Secret<String>,
    /// Optional device name.
    pub device_name: Option<String>,
    /// Optional audience for the access token.
    pub audience: Option<String>,
    /// Where the call came from, for the session record.
    pub client_address: String,
    /// The client's IP (after trusted proxies), for the per-address limit.
    pub client_ip: Option<std::net::IpAddr>,
    /// The caller's `user-agent`.
    pub user_agent: String,
}

/// Tokens handed out by a login or a refresh.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The signed access token.
    pub access_token: Secret<String>,
    /// Its expiry.
    pub access_token_expires_at: Timestamp,
    /// The refresh token.
    pub refresh_token: Secret<String>,
    /// Its expiry (the session's).
    pub refresh_token_expires_at: Timestamp,
    /// The session.
    pub session_id: SessionId,
    /// The user.
    pub user_id: UserId,
}

/// The credentials of a login, checked for form, as the credential check
/// reads them.
struct LoginAttempt<'a> {
    /// The normalized username.
    username: &'a str,
    /// The password.
    password: &'a Secret<String>,
    /// Where the call came from, for the audit trail.
    client_address: &'a str,
}

/// What a login asks of the session it opens, checked for form.
struct SessionTerms {
    /// The access tokens' audience; the default when `None`.
    audience: Option<String>,
    /// The device name, if given.
    device_name: Option<String>,
    /// Where the call came from.
    client_address: String,
    /// The caller's `user-agent`.
    user_agent: String,
}

/// What `Revoke` is asked to end.
#[derive(Debug)]
pub enum RevokeTarget {
    /// An access token held by the caller: the token and its session.
    AccessToken(Secret<String>),
    /// A refresh token held by the caller: its session.
    RefreshToken(Secret<String>),
    /// A session, by id (owner or admin).
    Session(SessionId),
    /// One token, by id (owner or admin).
    Token(TokenId),
    /// Every session of a user (the user itself or an admin).
    User(UserId),
}

/// What a revocation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RevokeCounts {
    /// Sessions newly revoked.
    pub sessions: u32,
    /// Tokens newly revoked.
    pub tokens: u32,
}

/// The identity service's domain core.
pub struct Identity {
    pub(super) store: Arc<dyn Store>,
    pub(super) settings: IdentitySettings,
    pub(super) keys: ArcSwap<KeyRing>,
    pub(super) verifier: TokenVerifier,
    pub(super) revocations: RevocationIndex,
    pub(super) hasher: PasswordHasher,
    pub(super) events: EventHub,
    pub(super) rates: Rates,
    /// Sessions seen by `Validate` since the last flush to the store: kept
    /// in memory so that validation never writes to disk.
    pub(super) last_seen: IdMap<SessionId, Timestamp>,
    /// How far this instance has caught up with a shared store.
    pub(super) peers: PeerSync,
    /// Set once the process begins to shut down: long-lived streams end.
    pub(super) shutdown: tokio::sync::watch::Sender<bool>,
    /// Bumped whenever what a bearer may do can have changed (a revocation
    /// applied, the key ring replaced), so long-lived streams re-check
    /// their caller.
    pub(super) authorization_changes: tokio::sync::watch::Sender<u64>,
    /// Held across "check that an admin remains, then write" in
    /// `update_user` / `delete_user` (see `admin.rs`).
    pub(super) admin_changes: tokio::sync::Mutex<()>,
    /// The store's identity, as revocation streams name it.
    pub(super) epoch: Arc<str>,
    /// The bound on open revocation streams.
    pub(super) revocation_streams: revocation_stream::RevocationStreams,
}

impl Identity {
    /// Loads (on first start: generates) the signing keys and rebuilds the
    /// revocation index from the store's log.
    pub async fn open(store: Arc<dyn Store>, settings: IdentitySettings) -> Result<Self, DomainError> {
        let mut records = store.signing_keys().await?;
        if records.is_empty() {
            let first = SigningKeyRecord::generate_ed25519(Timestamp::now())?;
            records = store.insert_first_signing_key(&first).await?;
            tracing::info!(kid = %first.kid, "generated the first signing key");
        }
        let keys = KeyRing::from_records(&records)?;
        let epoch = revocation_stream::epoch_of(&records);
        let revocations = RevocationIndex::new(settings.access_token_ttl + settings.leeway);
        let mut applied_through = 0;
        // Every entry still within its stored bound, whatever today's TTL.
        for entry in store.revocations_live(Timestamp::now()).await? {
            revocations.apply(&entry);
            applied_through = entry.sequence;
        }
        tracing::info!(entries = revocations.len(), "revocation index rebuilt");
        let events = EventHub::open(store.clone(), settings.event_retention, 1024).await?;
        Ok(Self {
            peers: PeerSync::new(applied_through),
            verifier: TokenVerifier::new(
                &settings.issuer,
                settings.access_token_ttl,
                settings.leeway,
                settings.signature_cache_capacity,
            ),
            hasher: PasswordHasher::new(settings.hashing_parallelism, settings.hashing_queue)?,
            keys: ArcSwap::from_pointee(keys),
            revocations,
            events,
            rates: Rates::default(),
            last_seen: IdMap::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            authorization_changes: tokio::sync::watch::Sender::new(0),
            admin_changes: tokio::sync::Mutex::new(()),
            epoch,
            revocation_streams: revocation_stream::RevocationStreams::new(
                settings.max_revocation_streams,
                settings.max_revocation_streams_per_user,
            ),
            settings,
            store,
        })
    }

    /// Tells every long-lived stream to end (they answer UNAVAILABLE, so
    /// clients go to another instance): the process is shutting down.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Identity::begin_shutdown`] was called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.shutdown.subscribe();
        async move {
            // An error means the sender is gone, which also means shutdown.
            let _ = receiver.wait_for(|down| *down).await;
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// The revocation index (for metrics and maintenance).
    pub fn revocations(&self) -> &RevocationIndex {
        &self.revocations
    }

    /// The store (for maintenance and tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The audit event hub.
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// The current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// On an empty store, creates user `admin` with role `admin`. The
    /// password is `password` if given, else a random one which is returned
    /// so that the caller can show it once.
    pub async fn bootstrap_admin(
        &self,
        password: Option<Secret<String>>,
    ) -> Result<Option<(UserRecord, Option<Secret<String>>)>, DomainError> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (p, false),
            None => {
                let mut bytes = [0u8; 18];
                fill_random(&mut bytes)?;
                (Secret::new(base64_url(&bytes)), true)
            }
        };
        match self.create_user(None, "admin", &password, vec![ADMIN_ROLE.to_string()]).await {
            Ok(user) => Ok(Some((user, generated.then_some(password)))),
            // Another instance sharing the store created it first.
            Err(DomainError::AlreadyExists(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks credentials and opens a session. Every credential failure is
    /// the same [`DomainError::InvalidCredentials`] after the same argon2 work.
    pub async fn authenticate(&self, login: Login) -> Result<IssuedTokens, DomainError> {
        let Login { username, password, device_name, audience, client_address, client_ip, user_agent } = login;
        let username = normalize_username(&username)?;
        check_password(&password)?;
        let device_name = check_optional("device_name", device_name, MAX_DEVICE_NAME_BYTES)?;
        let audience = check_optional("audience", audience, MAX_AUDIENCE_BYTES)?;
        let attempt = LoginAttempt { username: &username, password: &password, client_address: &client_address };
        let user = self.check_credentials(&attempt, client_ip).await?;
        self.open_session(user, SessionTerms { audience, device_name, client_address, user_agent }).await
    }

    /// The credential check of a login: the address and account limits,
    /// the argon2 verification and the disabled flag. Returns the user as
    /// read before the hash was verified; every way of failing that says
    /// something about the account is [`DomainError::InvalidCredentials`].
    async fn check_credentials(
        &self,
        attempt: &LoginAttempt<'_>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<UserRecord, DomainError> {
        // A blocked address is refused before any work: this says nothing
        // about the account, only about the address.
        let address_key = self.address_throttle_key(client_ip);
        if let Some(key) = &address_key {
            self.refuse_blocked_address(key).await?;
        }

        let user = self.store.user_by_name(attempt.username).await?;
        let key = throttle_key(attempt.username, user.as_ref().map(|u| u.id));
        let policy = &self.settings.lockout;
        let now = Timestamp::now();
        // Only a name that is a user's is recorded: an unknown "name" may
        // well be a password typed into the wrong field.
        let known_name = user.as_ref().map(|u| u.username.clone());
        let ticket = self.admit_attempt(&key, now, attempt, &known_name).await?;
        // The hash is verified even for unknown or disabled accounts, so
        // that every outcome of an evaluated attempt costs the same time.
        let verified = self.hasher.verify(attempt.password, user.as_ref().map(|u| u.password_hash.as_str())).await;
        let succeeded = matches!(verified, Ok(true)) && user.as_ref().is_some_and(|u| !u.disabled);
        let end = AttemptStep::End { ticket, succeeded };
        let ended = self.store.login_attempt(&key, end, Timestamp::now(), policy).await?;
        verified?;
        match user {
            Some(user) if succeeded => Ok(user),
            _ => {
                let locked_by_this = matches!(ended, AttemptOutcome::Ended { locked: true });
                self.count_failed_login(attempt, address_key.as_deref(), now, known_name, locked_by_this).await?;
                Err(DomainError::InvalidCredentials)
            }
        }
    }

    /// Refuses a login from a client address that failed too often.
    async fn refuse_blocked_address(&self, address_key: &str) -> Result<(), DomainError> {
        if let Some(wait) = self.store.login_failures(address_key).await?.and_then(|f| f.locked_for(Timestamp::now())) {
            self.rates.login_failures.record();
            return Err(DomainError::ResourceExhausted {
                message: "too many failed logins from this address; retry later".into(),
                retry_after: Some(wait),
            });
        }
        Ok(())
    }

    /// Admits the attempt against the account's counter under `key`, and
    /// returns its ticket, or refuses it (locked, or too many in flight).
    async fn admit_attempt(
        &self,
        key: &str,
        now: Timestamp,
        attempt: &LoginAttempt<'_>,
        known_name: &Option<String>,
    ) -> Result<Timestamp, DomainError> {
        // The attempt is admitted before it is evaluated, in one atomic and
        // durable step that counts it against the threshold while it runs:
        // however many guesses arrive at once, no more than the threshold
        // are ever evaluated per window, and a kill -9 forgets none of them.
        match self.store.login_attempt(key, AttemptStep::Begin, now, &self.settings.lockout).await? {
            AttemptOutcome::Admitted(ticket) => Ok(ticket),
            AttemptOutcome::Locked(wait) => {
                self.rates.login_failures.record();
                let mut refused = EventRecord::new(EventKind::LoginFailed).detail(format!(
                    "from {}: account locked{}",
                    attempt.client_address,
                    unknown_note(known_name)
                ));
                refused.username.clone_from(known_name);
                self.events.publish(vec![refused]).await;
                Err(DomainError::ResourceExhausted {
                    message: "too many failed logins for this account; retry later".into(),
                    retry_after: Some(wait),
                })
            }
            AttemptOutcome::Busy | AttemptOutcome::Ended { .. } => {
                self.rates.login_failures.record();
                Err(DomainError::ResourceExhausted {
                    message: "too many login attempts for this account are in progress; retry in a moment".into(),
                    retry_after: Some(Duration::from_secs(1)),
                })
            }
        }
    }

    /// Counts a failed login (against its client address too, when that
    /// limit is on) and publishes it, with the lock it caused, if any.
    async fn count_failed_login(
        &self,
        attempt: &LoginAttempt<'_>,
        address_key: Option<&str>,
        now: Timestamp,
        known_name: Option<String>,
        locked_by_this: bool,
    ) -> Result<(), DomainError> {
        self.rates.login_failures.record();
        if let Some(address_key) = address_key {
            let (_, blocked) =
                self.store.record_login_failure(address_key, now, &self.settings.address_lockout).await?;
            if blocked {
                tracing::warn!(client = %attempt.client_address, "client address blocked after repeated failed logins");
            }
        }
        let mut events = vec![EventRecord::new(EventKind::LoginFailed).detail(format!(
            "from {}{}",
            attempt.client_address,
            unknown_note(&known_name)
        ))];
        if locked_by_this {
            match &known_name {
                Some(name) => tracing::warn!(username = %name, "account locked after repeated failed logins"),
                None => tracing::warn!("an unknown username was locked after repeated failed logins"),
            }
            let policy = &self.settings.lockout;
            events.push(EventRecord::new(EventKind::AccountLocked).detail(format!(
                "{} failed logins within {}{}",
                policy.threshold,
                humantime::format_duration(policy.window),
                unknown_note(&known_name)
            )));
        }
        for event in &mut events {
            event.username.clone_from(&known_name);
        }
        self.events.publish(events).await;
        Ok(())
    }

    /// Opens a session for `user`, whose credentials were just checked: the
    /// session and its refresh and access tokens, stored, then announced.
    async fn open_session(&self, user: UserRecord, terms: SessionTerms) -> Result<IssuedTokens, DomainError> {
        // The user as it stands now, not as read before the hash: a
        // demotion, a disabling, a deletion or a new password committed
        // meanwhile must not be undone by this login. The ids (whose UUIDv7
        // times the per-user bounds compare) are taken before this read, so
        // that a change committing after it is bound to cover them: see the
        // second bounds in `update_user` and `delete_user`.
        // (In issue order, as listings show them: refresh, then access.)
        let session_id = SessionId::generate();
        let refresh_id = TokenId::generate();
        let access_id = TokenId::generate();
        let now = Timestamp::now();
        let user = match self.store.user_by_id(user.id).await? {
            Some(current) if !current.disabled && current.password_hash == user.password_hash => current,
            _ => return Err(DomainError::InvalidCredentials),
        };
        let refresh = NewRefreshToken::generate()?;
        let session = self.new_session(session_id, refresh_id, &user, terms, now);
        let refresh_record =
            self.token_record(&session, session.current_refresh, TokenKind::Refresh, now, session.expires_at);
        let (access_token, access_record) = self.issue_access_token(&session, access_id, &user.roles, now)?;
        self.store.create_session(&session, refresh.hash, &[refresh_record.clone(), access_record.clone()]).await?;
        if self.revocations.ends_session(user.id, session.id) {
            // All the user's sessions were ended while this one was being
            // created: it is ended too, in the store as well.
            let cause = self.revocation_cause(Timestamp::now(), "ended while it was created");
            if let Some(outcome) = self.store.revoke_session(session.id, &cause).await? {
                self.apply(&outcome);
            }
            return Err(DomainError::InvalidCredentials);
        }
        tracing::info!(user_id = %user.id, session_id = %session.id, "session created");
        self.rates.logins.record();
        let detail = format!("from {} ({})", session.client_address, session.device_name);
        self.events
            .publish(vec![
                EventRecord::new(EventKind::SessionCreated)
                    .actor(Some(user.id))
                    .user(user.id, &user.username)
                    .session(session.id)
                    .detail(detail)
                    .session_record(&session)
                    .token_record(&refresh_record),
                EventRecord::new(EventKind::TokenIssued)
                    .actor(Some(user.id))
                    .user(user.id, &user.username)
                    .session(session.id)
                    .token(access_record.id)
                    .token_record(&access_record),
            ])
            .await;
        Ok(IssuedTokens {
            access_token,
            access_token_expires_at: access_record.expires_at,
            refresh_token: refresh.token,
            refresh_token_expires_at: session.expires_at,
            session_id: session.id,
            user_id: user.id,
        })
    }

    /// The record of a session opened at `now` for `user` on `terms`.
    fn new_session(
        &self,
        id: SessionId,
        current_refresh: TokenId,
        user: &UserRecord,
        terms: SessionTerms,
        now: Timestamp,
    ) -> SessionRecord {
        SessionRecord {
            id,
            user_id: user.id,
            username: user.username.clone(),
            audience: vec![terms.audience.unwrap_or_else(|| self.settings.default_audience.clone())],
            created_at: now,
            last_seen_at: now,
            expires_at: now.plus(self.settings.session_ttl),
            client_address: terms.client_address,
            user_agent: truncate_to(&terms.user_agent, MAX_USER_AGENT_BYTES).to_string(),
            device_name: terms.device_name.unwrap_or_default(),
            state: SessionState::Active,
            revoked_at: None,
            revoke_reason: None,
            current_refresh,
        }
    }

    /// The failure counter of a client address, when the per-address limit is on.
    ///
    /// Unlike the account's counter, it is raised after the attempt was
    /// evaluated (a success must not count against a shared address), so
    /// concurrent guesses from one address may overshoot its threshold by
    /// the number in flight; the account's counter still bounds each account.
    fn address_throttle_key(&self, ip: Option<std::net::IpAddr>) -> Option<String> {
        (self.settings.address_lockout.threshold > 0).then_some(())?;
        // NUL cannot occur in a username, so this never collides with an account key.
        ip.map(|ip| format!("\u{0}address\u{0}{}", address_block(ip)))
    }

    /// Validates an access token: signature (cached), claims at `now`, and
    /// the revocation index. Never touches the store.
    pub fn validate(&self, token: &str, audience: Option<&str>) -> Result<Arc<VerifiedToken>, ValidationFailure> {
        self.rates.validations.record();
        let keys = self.keys.load();
        let now = Timestamp::now();
        let verified = self.verifier.verify(token, &keys, audience, now)?;
        if let Some(failure) = self.revocations.check(&verified) {
            return Err(failure);
        }
        if verified.is_user() {
            self.note_seen(verified.session_id, now);
        }
        Ok(verified)
    }

    /// Whether a token verified earlier (a stream's caller) still holds now:
    /// not expired, its key still trusted, nothing revoked that covers it.
    /// The same verdicts as [`Identity::validate`], without the signature
    /// work already done.
    pub fn recheck(&self, token: &VerifiedToken) -> Result<(), ValidationFailure> {
        if self.keys.load().verifier(&token.kid).is_none() {
            return Err(ValidationFailure::UnknownKey);
        }
        self.verifier.check_time(&token.claims, Timestamp::now())?;
        self.revocations.check(token).map_or(Ok(()), Err)
    }

    /// Changes whenever a revocation was applied or the keys changed: when
    /// to [`Identity::recheck`] a long-lived stream's caller.
    pub fn authorization_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.authorization_changes.subscribe()
    }

    /// Tells long-lived streams to re-check their callers.
    pub(super) fn authorization_changed(&self) {
        self.authorization_changes.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// The audience Sigil's own APIs (admin, ListMySessions, id-target
    /// Revoke) require of a bearer token: a token minted for another
    /// service must not open them (RFC 8725 §3.9).
    pub fn own_audience(&self) -> &str {
        &self.settings.default_audience
    }

    /// Remembers that a session was used, at most once a second per
    /// session, in memory; maintenance writes it to the store now and then.
    fn note_seen(&self, session: SessionId, now: Timestamp) {
        let stale = self.last_seen.get(&session).is_none_or(|seen| now.as_millis() - seen.as_millis() >= 1000);
        if stale {
            self.last_seen.insert(session, now);
        }
    }

    /// Exchanges a refresh token for new tokens, rotating it. A token that
    /// was already used revokes its whole session (theft detection).
    pub async fn refresh(&self, presented: Secret<String>) -> Result<IssuedTokens, DomainError> {
        check_refresh_token(&presented)?;
        // Before the user is read, as in `authenticate` (refresh first).
        let next_refresh_id = TokenId::generate();
        let access_id = TokenId::generate();
        let hash = RefreshTokenHash::of(&presented);
        let record = self.store.refresh_record(hash).await?.ok_or(DomainError::InvalidRefreshToken)?;
        let session = self.store.session(record.session_id).await?.ok_or(DomainError::InvalidRefreshToken)?;
        // Ended by a per-user bound (all sessions ended) that reached this
        // instance before the store's record was marked.
        if self.revocations.ends_session(session.user_id, session.id) {
            return Err(DomainError::InvalidRefreshToken);
        }
        let user = self.store.user_by_id(session.user_id).await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            return Err(DomainError::InvalidRefreshToken);
        };

        let now = Timestamp::now();
        let next = NewRefreshToken::generate()?;
        let next_refresh = self.token_record(&session, next_refresh_id, TokenKind::Refresh, now, session.expires_at);
        let (access_token, access) = self.issue_access_token(&session, access_id, &user.roles, now)?;
        let rotation = Rotation {
            session_id: session.id,
            presented: record.token_id,
            next_hash: next.hash,
            next_refresh,
            access: access.clone(),
            now,
        };
        match self.store.rotate_refresh(&rotation).await? {
            RotateOutcome::Rotated(session) => {
                self.events
                    .publish(vec![
                        EventRecord::new(EventKind::SessionRefreshed)
                            .actor(Some(user.id))
                            .user(user.id, &user.username)
                            .session(session.id)
                            .session_record(&session)
                            .token_record(&rotation.next_refresh),
                        EventRecord::new(EventKind::TokenIssued)
                            .actor(Some(user.id))
                            .user(user.id, &user.username)
                            .session(session.id)
                            .token(access.id)
                            .token_record(&access),
                    ])
                    .await;
                Ok(IssuedTokens {
                    access_token,
                    access_token_expires_at: access.expires_at,
                    refresh_token: next.token,
                    refresh_token_expires_at: session.expires_at,
                    session_id: session.id,
                    user_id: session.user_id,
                })
            }
            RotateOutcome::Reused => {
                tracing::warn!(session_id = %session.id, "refresh token reused; revoking the session");
                let cause = self.revocation_cause(now, "refresh token reuse detected");
                if let Some(outcome) = self.store.revoke_session(session.id, &cause).await? {
                    self.apply(&outcome);
                    let reused =
                        EventRecord::new(EventKind::RefreshReused).user(user.id, &user.username).session(session.id);
                    self.events.publish(vec![reused]).await;
                    self.publish_revocations(&outcome, None, &cause.reason).await;
                }
                Err(DomainError::InvalidRefreshToken)
            }
            RotateOutcome::Ended => Err(DomainError::InvalidRefreshToken),
        }
    }

    /// Revokes what `target` names. Id targets need `caller`, the verified
    /// bearer token of the owner or of an admin.
    pub async fn revoke(
        &self,
        target: RevokeTarget,
        reason: &str,
        caller: Option<&VerifiedToken>,
    ) -> Result<RevokeCounts, DomainError> {
        check_shown_text("reason", reason, MAX_REASON_BYTES)?;
        let cause = self.revocation_cause(Timestamp::now(), reason);
        let mut outcome = RevokeOutcome::default();
        match target {
            RevokeTarget::AccessToken(token) => {
                let keys = self.keys.load();
                // Holding the token is the authority, even once it expired or
                // was revoked: only the signature must be ours.
                let verified = self
                    .verifier
                    .verify_signature(token.expose(), &keys)
                    .map_err(|f| DomainError::invalid(format!("access_token is not a token of this server ({f:?})")))?;
                if verified.client_id.is_some() {
                    // A service account's token: no record, no session.
                    outcome.absorb(self.revoke_service_token(verified.token_id, &cause).await?);
                } else {
                    if let Some(o) = self.store.revoke_token(verified.token_id, &cause).await? {
                        outcome.absorb(o);
                    }
                    if let Some(o) = self.store.revoke_session(verified.session_id, &cause).await? {
                        outcome.absorb(o);
                    }
                }
            }
            RevokeTarget::RefreshToken(token) => {
                check_refresh_token(&token)?;
                let record = self
                    .store
                    .refresh_record(RefreshTokenHash::of(&token))
                    .await?
                    .ok_or(DomainError::InvalidRefreshToken)?;
                if let Some(o) = self.store.revoke_session(record.session_id, &cause).await? {
                    outcome.absorb(o);
                }
            }
            RevokeTarget::Session(id) => {
                let session = self.store.session(id).await?;
                let owner = session.as_ref().map(|s| s.user_id);
                authorize_owner_or_admin(caller, owner, "session")?;
                if let Some(o) = self.store.revoke_session(id, &cause).await? {
                    outcome.absorb(o);
                }
            }
            RevokeTarget::Token(id) => {
                let token = self.store.token(id).await?;
                let admin = caller.is_some_and(|c| c.is_user() && c.has_role(ADMIN_ROLE));
                if token.is_none() && admin {
                    // No record: a service account's token (which only an
                    // admin revokes by id), if its id could be live.
                    outcome.absorb(self.revoke_service_token(id, &cause).await?);
                } else {
                    authorize_owner_or_admin(caller, token.as_ref().map(|t| t.user_id), "token")?;
                    if let Some(o) = self.store.revoke_token(id, &cause).await? {
                        outcome.absorb(o);
                    }
                }
            }
            RevokeTarget::User(id) => {
                let user = self.store.user_by_id(id).await?;
                authorize_owner_or_admin(caller, user.as_ref().map(|u| u.id), "user")?;
                outcome.absorb(self.end_all_sessions(id, &cause).await?);
            }
        }
        self.apply(&outcome);
        let actor = caller.filter(|c| c.is_user()).map(|c| c.user_id);
        self.publish_revocations(&outcome, actor, reason).await;
        Ok(RevokeCounts { sessions: outcome.sessions, tokens: outcome.tokens })
    }

    /// Audit events for committed revocations.
    pub(super) async fn publish_revocations(&self, outcome: &RevokeOutcome, actor: Option<UserId>, reason: &str) {
        self.events.publish(session_revocation::revocation_events(outcome, actor, reason)).await;
    }

    /// The JWKS of every key that can still verify a live token.
    pub fn jwks_json(&self) -> String {
        self.keys.load().jwks_json().to_string()
    }

    /// Makes committed revocations visible to `Validate`.
    pub(super) fn apply(&self, outcome: &RevokeOutcome) {
        self.apply_revocations(&outcome.entries);
    }

    /// Signs an access token `id` for `session` carrying `roles`. The id is
    /// the caller's, generated before it read the roles (see `authenticate`).
    fn issue_access_token(
        &self,
        session: &SessionRecord,
        id: TokenId,
        roles: &[String],
        now: Timestamp,
    ) -> Result<(Secret<String>, TokenRecord), DomainError> {
        // No access token outlives its session.
        let expires_at = now.plus(self.settings.access_token_ttl).min(session.expires_at);
        let record = self.token_record(session, id, TokenKind::Access, now, expires_at);
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: session.user_id.to_string(),
            aud: session.audience.clone(),
            exp: expires_at.as_unix_seconds(),
            nbf: now.as_unix_seconds(),
            iat: now.as_unix_seconds(),
            jti: record.id.to_string(),
            sid: session.id.to_string(),
            username: session.username.clone(),
            roles: roles.to_vec(),
            client_id: None,
            scope: None,
        };
        let signed = token::sign(&claims, &self.keys.load())?;
        Ok((Secret::new(signed), record))
    }

    fn token_record(
        &self,
        session: &SessionRecord,
        id: TokenId,
        kind: TokenKind,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> TokenRecord {
        TokenRecord {
            id,
            kind,
            session_id: session.id,
            user_id: session.user_id,
            username: session.username.clone(),
            issued_at,
            expires_at,
            state: TokenState::Active,
            revoked_at: None,
            refresh_hash: None,
        }
    }
}

/// The rule for id targets: the owner of the thing, or an admin. A
/// non-admin learns nothing about things that are not theirs, not even
/// whether they exist.
fn authorize_owner_or_admin(
    caller: Option<&VerifiedToken>,
    owner: Option<UserId>,
    what: &str,
) -> Result<(), DomainError> {
    let caller = caller.ok_or_else(|| {
        DomainError::Unauthenticated(format!(
            "revoking a {what} by id needs `authorization: Bearer <access token>` metadata"
        ))
    })?;
    // A service account owns no session or user, and its roles do not
    // make it an admin of Sigil (see `grpc::admin::AdminGuard`).
    if !caller.is_user() {
        return Err(DomainError::PermissionDenied(format!(
            "only the owner of a {what} or an admin user may revoke it by id"
        )));
    }
    if caller.has_role(ADMIN_ROLE) {
        return match owner {
            Some(_) => Ok(()),
            None => Err(DomainError::NotFound(format!("no such {what}"))),
        };
    }
    match owner {
        Some(owner) if owner == caller.user_id => Ok(()),
        _ => Err(DomainError::PermissionDenied(format!("only the owner of a {what} or an admin may revoke it"))),
    }
}

pub(super) fn check_password(password: &Secret<String>) -> Result<(), DomainError> {
    let len = password.expose().len();
    if len == 0 {
        return Err(DomainError::invalid("password is empty"));
    }
    if len > MAX_PASSWORD_BYTES {
        return Err(DomainError::invalid(format!("password is longer than {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// A revocation reason: shown to operators, so checked like other shown text.
pub(super) fn check_reason(reason: &str) -> Result<(), DomainError> {
    check_shown_text("reason", reason, MAX_REASON_BYTES)
}

fn check_refresh_token(token: &Secret<String>) -> Result<(), DomainError> {
    let len = token.expose().len();
    if len == 0 {
        return Err(DomainError::invalid("refresh_token is empty"));
    }
    if len > MAX_REFRESH_TOKEN_BYTES {
        return Err(DomainError::invalid(format!("refresh_token is longer than {MAX_REFRESH_TOKEN_BYTES} bytes")));
    }
    Ok(())
}

/// The block of addresses one client holds, as the per-address limit counts
/// them: an IPv4 address alone (an IPv4-mapped IPv6 address is that IPv4
/// address), and for IPv6 its /64, since one customer line or host is
/// normally given a whole /64 and could otherwise rotate through it.
fn address_block(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Zero-width and bidirectional-control code points: text that would look
/// other than it is where operators read it.
fn is_invisible_or_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// What an audit event says of a login name that is no user's.
fn unknown_note(known_name: &Option<String>) -> &'static str {
    if known_name.is_some() { "" } else { " (unknown username)" }
}

/// An optional text field: absent or empty means "not given".
fn check_optional(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, DomainError> {
    match value {
        Some(v) => {
            check_shown_text(field, &v, max)?;
            Ok((!v.is_empty()).then_some(v))
        }
        None => Ok(None),
    }
}

/// A caller's text that operators will read (console, audit trail, session
/// records): bounded, and nothing that moves the cursor, reorders or hides
/// text.
fn check_shown_text(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.len() > max {
        return Err(DomainError::invalid(format!("{field} is longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!("{field} contains control characters")));
    }
    if value.chars().any(is_invisible_or_bidi_control) {
        return Err(DomainError::invalid(format!("{field} contains an invisible or bidirectional-control character")));
    }
    Ok(())
}

#[cfg(test)]
mod address_tests {
    use super::address_block;

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let block = |text: &str| address_block(text.parse().expect("ip"));
        assert_eq!(block("2001:db8::1"), block("2001:db8::7"));
        assert_eq!(block("2001:db8:0:0:ffff::1"), "2001:db8:0:0::/64");
        assert_ne!(block("2001:db8::1"), block("2001:db8:0:1::1"));
        assert_eq!(block("::ffff:10.0.0.2"), block("10.0.0.2"));
        assert_ne!(block("10.0.0.2"), block("10.0.0.3"));
    }
}
