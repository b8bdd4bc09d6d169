//! The admin use cases of [`Identity`]: users, listings of sessions and
//! tokens, signing-key rotation and statistics, and the rule that the last
//! enabled admin stays. Authorization (role `admin`) is checked by the
//! caller, in one place in the gRPC adapter.

use super::{
    DomainError, Identity, Secret, SessionId, Timestamp, TokenId, UserId,
    event::{EventKind, EventRecord},
    identity::check_password,
    keys::{KeyState, SigningKeyRecord},
    port::{RevocationCause, RevokeOutcome, SessionQuery, StoreError, TokenQuery, UserRulesLock},
    revocation::RevocationTarget,
    session::{SessionRecord, TokenRecord},
    token::VerifiedToken,
    user::{ADMIN_ROLE, UserRecord, check_role, normalize_username},
};

/// A user with its active-session count, as listings show it.
#[derive(Debug, Clone)]
pub struct UserView {
    /// The record (its hash never leaves the domain).
    pub user: UserRecord,
    /// Active sessions now.
    pub active_sessions: u32,
}

/// The changes `UpdateUser` may make; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// Replace the roles.
    pub roles: Option<Vec<String>>,
}

/// Counts and rates for `GetStats`.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Users.
    pub users: u64,
    /// Active sessions.
    pub active_sessions: u64,
    /// Active tokens.
    pub active_tokens: u64,
    /// Validations per second over the last minute.
    pub validations_per_second: f64,
    /// Logins per second over the last minute.
    pub logins_per_second: f64,
    /// Failed logins per second over the last minute.
    pub login_failures_per_second: f64,
    /// Entries of the revocation index.
    pub revocation_index_entries: u64,
    /// Validations since the process started.
    pub validations_total: u64,
    /// Logins since the process started.
    pub logins_total: u64,
    /// Failed logins since the process started.
    pub login_failures_total: u64,
}

impl Identity {
    /// Creates a user with a fresh argon2id hash.
    pub async fn create_user(
        &self,
        actor: Option<UserId>,
        username: &str,
        password: &Secret<String>,
        roles: Vec<String>,
    ) -> Result<UserRecord, DomainError> {
        let username = normalize_username(username)?;
        check_password(password)?;
        let roles = checked_roles(roles)?;
        if self.store.user_by_name(&username).await?.is_some() {
            return Err(taken(&username));
        }
        let now = Timestamp::now();
        let user = UserRecord {
            id: UserId::generate(),
            username,
            password_hash: self.hasher.hash(password).await?,
            roles,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        self.store.create_user(&user).await.map_err(|e| match e {
            StoreError::UsernameTaken => taken(&user.username),
            other => other.into(),
        })?;
        let event = EventRecord::new(EventKind::UserCreated)
            .actor(actor)
            .user(user.id, &user.username)
            .detail(format!("roles: {}", user.roles.join(",")));
        self.events.publish(vec![event]).await;
        Ok(user)
    }

    /// A user by id.
    pub async fn user(&self, id: UserId) -> Result<UserView, DomainError> {
        let user = self.store.user_by_id(id).await?.ok_or_else(|| no_such_user(&id.to_string()))?;
        self.view(user).await
    }

    /// A user by name.
    pub async fn user_named(&self, username: &str) -> Result<UserView, DomainError> {
        let name = normalize_username(username)?;
        let user = self.store.user_by_name(&name).await?.ok_or_else(|| no_such_user(&name))?;
        self.view(user).await
    }

    /// One page of users after `after`.
    pub async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<UserView>, DomainError> {
        let mut views = Vec::new();
        for user in self.store.list_users(after, limit).await? {
            views.push(self.view(user).await?);
        }
        Ok(views)
    }

    /// Changes roles and the disabled flag. Disabling ends every session of
    /// the user and makes its access tokens fail with `USER_DISABLED` at once.
    /// Changing the roles makes every access token minted before the change
    /// fail with `TOKEN_REVOKED` at once (they carry the old roles); the
    /// user's sessions live on and their next refresh carries the new roles.
    pub async fn update_user(
        &self,
        actor: Option<UserId>,
        id: UserId,
        changes: UserChanges,
    ) -> Result<(UserView, u32), DomainError> {
        let _admin_changes = self.lock_admin_changes().await?;
        let mut user = self.store.user_by_id(id).await?.ok_or_else(|| no_such_user(&id.to_string()))?;
        let before = user.clone();
        let now = Timestamp::now();
        let mut events = Vec::new();
        let mut roles_changed = false;
        if let Some(roles) = changes.roles {
            let roles = checked_roles(roles)?;
            roles_changed = roles != user.roles;
            user.roles = roles;
            events.push(
                EventRecord::new(EventKind::UserUpdated)
                    .actor(actor)
                    .user(user.id, &user.username)
                    .detail(format!("roles: {}", user.roles.join(","))),
            );
        }
        let not_before = |at| {
            let target = RevocationTarget::UserNotBefore(id);
            (target, self.revocation_cause_of(&target, at, "roles changed"))
        };
        let mut revocation = roles_changed.then(|| not_before(now));
        if let Some(disabled) = changes.disabled
            && disabled != user.disabled
        {
            user.disabled = disabled;
            let (target, kind) = if disabled {
                (RevocationTarget::UserDisabled(id), EventKind::UserDisabled)
            } else {
                (RevocationTarget::UserEnabled(id), EventKind::UserEnabled)
            };
            let cause = self.revocation_cause_of(&target, now, if disabled { "user disabled" } else { "user enabled" });
            revocation = Some((target, cause));
            events.push(EventRecord::new(kind).actor(actor).user(user.id, &user.username));
        }
        user.updated_at = now;
        self.ensure_an_admin_remains(&before, Some(&user)).await?;
        if let Some(entry) = self.store.update_user(&user, revocation).await? {
            self.apply_revocations(std::slice::from_ref(&entry));
        }
        if roles_changed {
            // A refresh that read the old roles just before the write above
            // committed mints its token after `now`, so the first bound
            // misses it; the second catches it (see `just_after_commit`).
            let (target, cause) = not_before(just_after_commit());
            let entry = self.store.append_revocation(target, &cause).await?;
            self.apply_revocations(std::slice::from_ref(&entry));
        }
        self.events.publish(events).await;
        let revoked = if user.disabled { self.end_sessions_of(actor, id, "user disabled").await? } else { 0 };
        Ok((self.view(user).await?, revoked))
    }

    /// Replaces a password; optionally ends every session of the user.
    pub async fn set_password(
        &self,
        actor: Option<UserId>,
        id: UserId,
        password: &Secret<String>,
        revoke_sessions: bool,
    ) -> Result<u32, DomainError> {
        check_password(password)?;
        let mut user = self.store.user_by_id(id).await?.ok_or_else(|| no_such_user(&id.to_string()))?;
        user.password_hash = self.hasher.hash(password).await?;
        user.updated_at = Timestamp::now();
        self.store.update_user(&user, None).await?;
        let event = EventRecord::new(EventKind::UserUpdated).actor(actor).user(user.id, &user.username);
        self.events.publish(vec![event.detail("password changed")]).await;
        if revoke_sessions { self.end_sessions_of(actor, id, "password changed").await } else { Ok(0) }
    }

    /// Deletes a user after ending every session of it.
    pub async fn delete_user(&self, actor: Option<UserId>, id: UserId) -> Result<u32, DomainError> {
        let _admin_changes = self.lock_admin_changes().await?;
        let user = self.store.user_by_id(id).await?.ok_or_else(|| no_such_user(&id.to_string()))?;
        self.ensure_an_admin_remains(&user, None).await?;
        let revoked = self.end_sessions_of(actor, id, "user deleted").await?;
        self.store.delete_user(id).await?;
        // A login that read the user just before the delete committed
        // creates its session after the bound above; the second ends it
        // (see `just_after_commit`).
        self.bound_sessions_of(id, just_after_commit(), "user deleted").await?;
        let event = EventRecord::new(EventKind::UserDeleted).actor(actor).user(user.id, &user.username);
        self.events.publish(vec![event]).await;
        Ok(revoked)
    }

    /// Held by `update_user` and `delete_user` from reading the user until
    /// their write is committed, so that two admins demoting (disabling,
    /// deleting) each other at once are serialized and the second sees the
    /// first's result. In this process a mutex does it — enough for sled,
    /// which one process alone can open. A store shared by several
    /// instances (PostgreSQL) adds its own lock across them (an advisory
    /// lock), taken after the mutex so that one instance queues its own
    /// callers without holding a database connection each.
    async fn lock_admin_changes(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, Option<UserRulesLock>), DomainError> {
        let local = self.admin_changes.lock().await;
        let shared = self.store.lock_user_rules().await?;
        Ok((local, shared))
    }

    /// The last-admin rule: a change that turns the enabled admin `before`
    /// into `after` (`None`: deleted) and so leaves no enabled admin at all
    /// is refused, since nobody could then administer Sigil through its API
    /// (the host-side way back is `sigil-server reset-admin-password`).
    /// Callers hold [`Identity::lock_admin_changes`], which makes this
    /// check and their write one step for every instance.
    async fn ensure_an_admin_remains(
        &self,
        before: &UserRecord,
        after: Option<&UserRecord>,
    ) -> Result<(), DomainError> {
        if !is_enabled_admin(before) || after.is_some_and(is_enabled_admin) {
            return Ok(());
        }
        if !self.enabled_admins(Some(before.id), 1).await?.is_empty() {
            return Ok(());
        }
        let change = match after {
            None => "deleting it",
            Some(after) if after.disabled => "disabling it",
            Some(_) => "removing its admin role",
        };
        Err(DomainError::FailedPrecondition(format!(
            "user {:?} is the last enabled admin: {change} would lock every admin out; make another user \
             admin first",
            before.username
        )))
    }

    /// Up to `limit` enabled admins other than `except`, in id order.
    pub(super) async fn enabled_admins(
        &self,
        except: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, DomainError> {
        const PAGE: usize = 500;
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list_users(after, PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|u| u.id);
            found.extend(page.into_iter().filter(|u| is_enabled_admin(u) && Some(u.id) != except));
            if found.len() >= limit || !full {
                found.truncate(limit);
                return Ok(found);
            }
        }
    }

    pub(super) async fn end_sessions_of(
        &self,
        actor: Option<UserId>,
        id: UserId,
        reason: &str,
    ) -> Result<u32, DomainError> {
        let cause = self.revocation_cause(Timestamp::now(), reason);
        let outcome = self.end_all_sessions(id, &cause).await?;
        self.publish_revocations(&outcome, actor, reason).await;
        Ok(outcome.sessions)
    }

    /// Ends every session of `user` created before `cause.at`, those whose
    /// login is still in flight included: first a per-user bound in the
    /// revocation log (which `Validate` and `Refresh` honour from then on),
    /// then each session found, so that listings show them revoked.
    pub(super) async fn end_all_sessions(
        &self,
        user: UserId,
        cause: &RevocationCause,
    ) -> Result<RevokeOutcome, DomainError> {
        self.bound_sessions_of(user, cause.at, &cause.reason).await?;
        let outcome: RevokeOutcome = self.store.revoke_user_sessions(user, cause).await?;
        self.apply(&outcome);
        Ok(outcome)
    }

    /// Appends (and applies) the bound that ends every session of `user`
    /// created before `at`.
    async fn bound_sessions_of(&self, user: UserId, at: Timestamp, reason: &str) -> Result<(), DomainError> {
        let target = RevocationTarget::UserSessionsBefore(user);
        let mut cause = self.revocation_cause_of(&target, at, reason);
        // Kept as long as a session it ends could live, not just its tokens:
        // a session that raced the list of sessions on another instance may
        // be left active in the store, and only this bound stops its refresh.
        cause.expires_at = cause.expires_at.max(at.plus(self.settings.session_ttl + self.settings.leeway));
        let entry = self.store.append_revocation(target, &cause).await?;
        self.apply_revocations(std::slice::from_ref(&entry));
        Ok(())
    }

    /// One page of sessions after `after` (of `user`'s only, if named; with
    /// revoked and expired ones if `include_inactive`), at most `limit`;
    /// states as of now, last-seen times including validations not yet
    /// written to the store.
    pub async fn list_sessions(
        &self,
        user: Option<UserId>,
        include_inactive: bool,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, DomainError> {
        let now = Timestamp::now();
        let query = SessionQuery { user, include_inactive, after, limit };
        let mut sessions = self.store.list_sessions(&query).await?;
        for session in &mut sessions {
            session.state = session.state_at(now);
            if let Some(seen) = self.last_seen.get(&session.id) {
                session.last_seen_at = session.last_seen_at.max(*seen);
            }
        }
        Ok(sessions)
    }

    /// The caller's own sessions, one page as [`Identity::list_sessions`]
    /// gives it: whatever the caller's roles, never another user's.
    pub async fn list_my_sessions(
        &self,
        caller: &VerifiedToken,
        include_inactive: bool,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, DomainError> {
        if !caller.is_user() {
            return Err(DomainError::PermissionDenied("a service account has no sessions".into()));
        }
        self.list_sessions(Some(caller.user_id), include_inactive, after, limit).await
    }

    /// One page of token records after `after` (of `session`'s and
    /// `user`'s only, if named; with revoked, expired and rotated ones if
    /// `include_inactive`), at most `limit`; states as of now.
    pub async fn list_tokens(
        &self,
        session: Option<SessionId>,
        user: Option<UserId>,
        include_inactive: bool,
        after: Option<TokenId>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, DomainError> {
        let now = Timestamp::now();
        let query = TokenQuery { session, user, include_inactive, after, limit };
        let mut tokens = self.store.list_tokens(&query).await?;
        for token in &mut tokens {
            token.state = token.state_at(now);
        }
        Ok(tokens)
    }

    /// The session a caller's token belongs to, if it still exists.
    pub async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, DomainError> {
        Ok(self.store.session(id).await?)
    }

    /// Makes a new Ed25519 key active. Normally the old key keeps verifying
    /// the tokens it signed until they expire; maintenance retires it then.
    /// With `distrust_previous` (a key leaked) every older key is retired at
    /// once: tokens they signed, genuine or forged, fail with
    /// `UNKNOWN_KEY` from now on, and their holders refresh.
    pub async fn rotate_signing_key(
        &self,
        actor: Option<UserId>,
        distrust_previous: bool,
    ) -> Result<SigningKeyRecord, DomainError> {
        let now = Timestamp::now();
        let key = SigningKeyRecord::generate_ed25519(now)?;
        let mut records = self.store.rotate_signing_key(&key).await?;
        let mut distrusted = Vec::new();
        if distrust_previous {
            for old in records.iter().filter(|r| r.kid != key.kid && r.state != KeyState::Retired) {
                self.store.retire_signing_key(&old.kid, now).await?;
                distrusted.push(old.kid.clone());
            }
            records = self.store.signing_keys().await?;
        }
        self.install_keys(&records)?;
        let mut events = Vec::new();
        let mut rotated = EventRecord::new(EventKind::KeyRotated).actor(actor);
        rotated.token_id = Some(key.kid.clone());
        if distrust_previous {
            tracing::warn!(kid = %key.kid, distrusted = ?distrusted, "emergency key rotation: older keys no longer verify");
            rotated = rotated.detail(format!("emergency: {} older key(s) distrusted", distrusted.len()));
        } else {
            tracing::info!(kid = %key.kid, "signing key rotated");
        }
        events.push(rotated);
        for kid in distrusted {
            let mut retired = EventRecord::new(EventKind::KeyRetired).actor(actor).detail("distrusted in an emergency");
            retired.token_id = Some(kid);
            events.push(retired);
        }
        self.events.publish(events).await;
        Ok(key)
    }

    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, DomainError> {
        Ok(self.store.signing_keys().await?)
    }

    /// Counts and rates.
    pub async fn stats(&self) -> Result<Stats, DomainError> {
        let (active_sessions, active_tokens) = self.store.count_active().await?;
        Ok(Stats {
            users: self.store.count_users().await?,
            active_sessions,
            active_tokens,
            validations_per_second: self.rates.validations.per_second(),
            logins_per_second: self.rates.logins.per_second(),
            login_failures_per_second: self.rates.login_failures.per_second(),
            revocation_index_entries: self.revocations.len() as u64,
            validations_total: self.rates.validations.total(),
            logins_total: self.rates.logins.total(),
            login_failures_total: self.rates.login_failures.total(),
        })
    }

    async fn view(&self, user: UserRecord) -> Result<UserView, DomainError> {
        let active_sessions = self.store.count_active_sessions_of(user.id).await?;
        Ok(UserView { user, active_sessions })
    }
}

/// Whether `user` can administer Sigil now.
pub(super) fn is_enabled_admin(user: &UserRecord) -> bool {
    user.has_role(ADMIN_ROLE) && !user.disabled
}

/// The time of a second per-user bound, written after a user change has
/// committed. A login or refresh that read the user just before the commit
/// took its ids (whose UUIDv7 times the bounds compare) before that read,
/// so before this moment: the second bound covers it, where the first,
/// taken before the write, may not. The millisecond makes "before" strict
/// for ids taken in the same millisecond.
fn just_after_commit() -> Timestamp {
    Timestamp::now().plus(std::time::Duration::from_millis(1))
}

fn checked_roles(mut roles: Vec<String>) -> Result<Vec<String>, DomainError> {
    if roles.len() > 32 {
        return Err(DomainError::invalid("at most 32 roles"));
    }
    for role in &roles {
        check_role(role)?;
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

fn taken(username: &str) -> DomainError {
    DomainError::AlreadyExists(format!("username {username:?} is taken"))
}

fn no_such_user(name: &str) -> DomainError {
    DomainError::NotFound(format!("no user {name}"))
}
