//! The admin use cases of [`Identity`] for service accounts: create, read,
//! list, change, delete; add and revoke client secrets; register the
//! `private_key_jwt` key; revoke every token of an account. Authorization
//! (role `admin`) is the adapter's, as for users.
//!
//! Every change that makes tokens already issued wrong (disabling,
//! deleting, new roles, audiences or scopes, an explicit revocation)
//! writes a per-account not-before bound with it, so `Validate` refuses
//! those tokens at once; and a second bound just after the write commits,
//! for a grant that read the account just before it (see `admin.rs`'s
//! `just_after_commit`, the same rule for users).

use std::time::Duration;

use super::{
    ClientSecretId, DomainError, Identity, Secret, ServiceAccountId, Timestamp, UserId,
    client_key::ClientKeyRecord,
    event::{EventKind, EventRecord},
    port::{RevocationCause, StoreError},
    revocation::RevocationTarget,
    service_account::{
        MAX_SECRETS, NewClientSecret, NewServiceAccount, ServiceAccountChanges, ServiceAccountRecord, check_audiences,
        check_name, check_roles, check_scopes,
    },
};

/// Longest lifetime a client secret may be given: beyond, "never expires"
/// says it more honestly.
const MAX_SECRET_LIFETIME: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl Identity {
    /// Creates a service account with a first client secret, returned once.
    pub async fn create_service_account(
        &self,
        actor: Option<UserId>,
        new: NewServiceAccount,
    ) -> Result<(ServiceAccountRecord, Secret<String>), DomainError> {
        let now = Timestamp::now();
        let secret = NewClientSecret::generate(now, None)?;
        let account = ServiceAccountRecord {
            id: ServiceAccountId::generate(),
            name: check_name(&new.name)?,
            roles: check_roles(new.roles)?,
            audiences: check_audiences(new.audiences)?,
            scopes: check_scopes(new.scopes)?,
            disabled: false,
            created_at: now,
            updated_at: now,
            version: 1,
            secrets: vec![secret.record],
            key: None,
        };
        self.store.create_service_account(&account).await?;
        let detail =
            format!("{:?}: roles {}; audiences {}", account.name, account.roles.join(","), account.audiences.join(","));
        self.publish_client_event(EventKind::ServiceAccountCreated, actor, &account, detail).await;
        Ok((account, secret.secret))
    }

    /// A service account by id.
    pub async fn service_account(&self, id: ServiceAccountId) -> Result<ServiceAccountRecord, DomainError> {
        self.store.service_account(id).await?.ok_or_else(|| no_such_account(id))
    }

    /// One page of service accounts after `after`.
    pub async fn list_service_accounts(
        &self,
        after: Option<ServiceAccountId>,
        limit: usize,
    ) -> Result<Vec<ServiceAccountRecord>, DomainError> {
        Ok(self.store.list_service_accounts(after, limit).await?)
    }

    /// Changes roles, audiences, scopes and the disabled flag. Disabling
    /// makes the account's tokens fail at once; so does any other change,
    /// since its tokens carry what it was allowed before.
    pub async fn update_service_account(
        &self,
        actor: Option<UserId>,
        id: ServiceAccountId,
        changes: ServiceAccountChanges,
    ) -> Result<ServiceAccountRecord, DomainError> {
        let mut account = self.service_account(id).await?;
        let read_version = account.version;
        let mut events = Vec::new();
        let mut changed = Vec::new();
        if let Some(roles) = changes.roles.map(check_roles).transpose()?
            && roles != account.roles
        {
            account.roles = roles;
            changed.push(format!("roles {}", account.roles.join(",")));
        }
        if let Some(audiences) = changes.audiences.map(check_audiences).transpose()?
            && audiences != account.audiences
        {
            account.audiences = audiences;
            changed.push(format!("audiences {}", account.audiences.join(",")));
        }
        if let Some(scopes) = changes.scopes.map(check_scopes).transpose()?
            && scopes != account.scopes
        {
            account.scopes = scopes;
            changed.push(format!("scopes {}", account.scopes.join(",")));
        }
        if !changed.is_empty() {
            events.push((EventKind::ServiceAccountUpdated, changed.join("; ")));
        }
        let mut ends_tokens = !changed.is_empty();
        if let Some(disabled) = changes.disabled
            && disabled != account.disabled
        {
            account.disabled = disabled;
            ends_tokens |= disabled;
            let kind = if disabled { EventKind::ServiceAccountDisabled } else { EventKind::ServiceAccountEnabled };
            events.push((kind, String::new()));
        }
        if events.is_empty() {
            return Ok(account);
        }
        let reason = if account.disabled { "service account disabled" } else { "service account changed" };
        self.replace_account(&mut account, read_version, ends_tokens.then_some(reason)).await?;
        for (kind, detail) in events {
            self.publish_client_event(kind, actor, &account, detail).await;
        }
        Ok(account)
    }

    /// Deletes a service account; its tokens fail at once.
    pub async fn delete_service_account(&self, actor: Option<UserId>, id: ServiceAccountId) -> Result<(), DomainError> {
        let account = self.service_account(id).await?;
        let target = RevocationTarget::ServiceAccountNotBefore(id);
        let cause = self.revocation_cause_of(&target, Timestamp::now(), "service account deleted");
        let entry = self.store.replace_service_account(id, account.version, None, Some((target, cause))).await;
        let entry = entry.map_err(conflict)?;
        self.apply_revocations(entry.as_slice());
        self.bound_service_tokens(id, "service account deleted").await?;
        self.publish_client_event(EventKind::ServiceAccountDeleted, actor, &account, String::new()).await;
        Ok(())
    }

    /// Adds a client secret (expiring after `lifetime`, if given), returned
    /// once. At most [`MAX_SECRETS`] at a time: revoke an old one first.
    pub async fn add_service_account_secret(
        &self,
        actor: Option<UserId>,
        id: ServiceAccountId,
        lifetime: Option<Duration>,
    ) -> Result<(ServiceAccountRecord, ClientSecretId, Secret<String>), DomainError> {
        if lifetime.is_some_and(|l| l.is_zero() || l > MAX_SECRET_LIFETIME) {
            return Err(DomainError::invalid("expires_in must be positive and at most 10 years"));
        }
        let mut account = self.service_account(id).await?;
        let read_version = account.version;
        if account.secrets.len() >= MAX_SECRETS {
            return Err(DomainError::FailedPrecondition(format!(
                "the service account has {MAX_SECRETS} client secrets, the most it may hold: revoke one first"
            )));
        }
        let now = Timestamp::now();
        let secret = NewClientSecret::generate(now, lifetime.map(|l| now.plus(l)))?;
        let secret_id = secret.record.id;
        let detail = match secret.record.expires_at {
            Some(at) => format!("secret {secret_id}, expires at {} (unix ms)", at.as_millis()),
            None => format!("secret {secret_id}, no expiry"),
        };
        account.secrets.push(secret.record);
        self.replace_account(&mut account, read_version, None).await?;
        self.publish_client_event(EventKind::ClientSecretAdded, actor, &account, detail).await;
        Ok((account, secret_id, secret.secret))
    }

    /// Revokes one client secret: it authenticates nobody from now on.
    /// Tokens it already obtained stay valid (revoke them separately).
    pub async fn revoke_service_account_secret(
        &self,
        actor: Option<UserId>,
        id: ServiceAccountId,
        secret: ClientSecretId,
    ) -> Result<ServiceAccountRecord, DomainError> {
        let mut account = self.service_account(id).await?;
        let read_version = account.version;
        let before = account.secrets.len();
        account.secrets.retain(|s| s.id != secret);
        if account.secrets.len() == before {
            return Err(DomainError::NotFound(format!("service account {id} has no secret {secret}")));
        }
        self.replace_account(&mut account, read_version, None).await?;
        self.publish_client_event(EventKind::ClientSecretRevoked, actor, &account, format!("secret {secret}")).await;
        Ok(account)
    }

    /// Registers (replaces) the account's public key for `private_key_jwt`,
    /// a JWK or PEM public key, Ed25519 or P-256; empty text removes it.
    pub async fn set_service_account_key(
        &self,
        actor: Option<UserId>,
        id: ServiceAccountId,
        public_key: &str,
    ) -> Result<ServiceAccountRecord, DomainError> {
        let key = match public_key.trim() {
            "" => None,
            text => Some(ClientKeyRecord::parse(text, Timestamp::now())?),
        };
        let mut account = self.service_account(id).await?;
        let read_version = account.version;
        let detail =
            key.as_ref().map_or("key removed".to_string(), |k| format!("{} key registered", k.algorithm.name()));
        account.key = key;
        self.replace_account(&mut account, read_version, None).await?;
        self.publish_client_event(EventKind::ClientKeySet, actor, &account, detail).await;
        Ok(account)
    }

    /// Makes every token the account obtained so far fail at once.
    pub async fn revoke_service_account_tokens(
        &self,
        actor: Option<UserId>,
        id: ServiceAccountId,
        reason: &str,
    ) -> Result<(), DomainError> {
        let account = self.service_account(id).await?;
        let reason = if reason.is_empty() { "service account tokens revoked" } else { reason };
        super::identity::check_reason(reason)?;
        self.bound_service_tokens(id, reason).await?;
        self.publish_client_event(EventKind::ServiceTokensRevoked, actor, &account, reason.to_string()).await;
        Ok(())
    }

    /// Writes `account` over the version it was read at (raising its
    /// version), with a not-before bound for its tokens when `ends_tokens`
    /// names why, and then the second bound.
    async fn replace_account(
        &self,
        account: &mut ServiceAccountRecord,
        read_version: u64,
        ends_tokens: Option<&str>,
    ) -> Result<(), DomainError> {
        account.version = read_version + 1;
        account.updated_at = Timestamp::now();
        let revocation = ends_tokens.map(|reason| self.service_bound(account.id, Timestamp::now(), reason));
        let entry = self.store.replace_service_account(account.id, read_version, Some(account), revocation).await;
        self.apply_revocations(entry.map_err(conflict)?.as_slice());
        if let Some(reason) = ends_tokens {
            self.bound_service_tokens(account.id, reason).await?;
        }
        Ok(())
    }

    /// Appends (and applies) a not-before bound for the account's tokens,
    /// just after whatever committed before this call.
    async fn bound_service_tokens(&self, id: ServiceAccountId, reason: &str) -> Result<(), DomainError> {
        let (target, cause) = self.service_bound(id, Timestamp::now().plus(Duration::from_millis(1)), reason);
        let entry = self.store.append_revocation(target, &cause).await?;
        self.apply_revocations(std::slice::from_ref(&entry));
        Ok(())
    }

    fn service_bound(&self, id: ServiceAccountId, at: Timestamp, reason: &str) -> (RevocationTarget, RevocationCause) {
        let target = RevocationTarget::ServiceAccountNotBefore(id);
        let cause = self.revocation_cause_of(&target, at, reason);
        (target, cause)
    }

    async fn publish_client_event(
        &self,
        kind: EventKind,
        actor: Option<UserId>,
        account: &ServiceAccountRecord,
        detail: String,
    ) {
        let event = EventRecord::new(kind).actor(actor).client(account.id).detail(detail);
        self.events.publish(vec![event]).await;
    }
}

fn no_such_account(id: ServiceAccountId) -> DomainError {
    DomainError::NotFound(format!("no service account {id}"))
}

/// A replace that lost a race with another change of the same account.
fn conflict(error: StoreError) -> DomainError {
    match error {
        StoreError::Conflict => DomainError::FailedPrecondition(
            "the service account was changed by another request meanwhile; read it again and retry".into(),
        ),
        other => other.into(),
    }
}
