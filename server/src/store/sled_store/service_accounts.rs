//! The sled engine's [`ServiceAccountStore`]: three trees.
//! - `service_accounts` id → [`ServiceAccountRecord`] (JSON), replaced only
//!   over the version it was read at, in one transaction with the
//!   revocation-log entry that goes with the change;
//! - `client_secret_uses` secret id → last use (i64 ms, big-endian),
//!   advisory, merged into the records read back;
//! - `client_assertion_ids` account ++ jti → expiry (i64 ms, big-endian):
//!   assertion ids already used, inserted only if absent.

use async_trait::async_trait;
use sled::{Transactional, Tree, transaction::abort};

use super::{SledStore, backend, decode, encode, log_revocation_in, tx_error, tx_get};
use crate::domain::{
    ClientSecretId, ServiceAccountId, Timestamp,
    port::{RevocationCause, ServiceAccountStore, StoreError},
    revocation::{RevocationEntry, RevocationTarget},
    service_account::ServiceAccountRecord,
};

/// The trees of service accounts.
pub(super) struct ClientTrees {
    pub(super) accounts: Tree,
    pub(super) secret_uses: Tree,
    pub(super) assertion_ids: Tree,
}

impl SledStore {
    /// `account` with each secret's last use as noted.
    fn with_last_uses(&self, mut account: ServiceAccountRecord) -> Result<ServiceAccountRecord, StoreError> {
        for secret in &mut account.secrets {
            if let Some(bytes) = self.clients.secret_uses.get(secret.id.as_bytes()).map_err(backend)? {
                let at = Timestamp::from_millis(i64::from_be_bytes(
                    bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt("secret use is not 8 bytes".into()))?,
                ));
                secret.last_used_at = Some(secret.last_used_at.map_or(at, |old| old.max(at)));
            }
        }
        Ok(account)
    }
}

#[async_trait]
impl ServiceAccountStore for SledStore {
    async fn create_service_account(&self, account: &ServiceAccountRecord) -> Result<(), StoreError> {
        let created = self
            .clients
            .accounts
            .compare_and_swap(account.id.as_bytes(), None::<&[u8]>, Some(super::encode_plain(account)?))
            .map_err(backend)?;
        if created.is_err() {
            return Err(StoreError::Backend(format!("service account {} exists already", account.id)));
        }
        self.commit.durable().await
    }

    async fn service_account(&self, id: ServiceAccountId) -> Result<Option<ServiceAccountRecord>, StoreError> {
        match Self::get(&self.clients.accounts, id.as_bytes())? {
            Some(account) => self.with_last_uses(account).map(Some),
            None => Ok(None),
        }
    }

    async fn list_service_accounts(
        &self,
        after: Option<ServiceAccountId>,
        limit: usize,
    ) -> Result<Vec<ServiceAccountRecord>, StoreError> {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.as_bytes().to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        self.clients
            .accounts
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            .values()
            .take(limit)
            .map(|value| self.with_last_uses(decode(&value.map_err(backend)?)?))
            .collect()
    }

    async fn replace_service_account(
        &self,
        id: ServiceAccountId,
        read_version: u64,
        account: Option<&ServiceAccountRecord>,
        revocation: Option<(RevocationTarget, RevocationCause)>,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        let (entry, gone) = (&self.clients.accounts, &self.trees.revocations)
            .transaction(|(accounts, revocations)| {
                let Some(stored) =
                    tx_get::<ServiceAccountRecord>(accounts, id.as_bytes())?.filter(|s| s.version == read_version)
                else {
                    return abort(StoreError::Conflict);
                };
                // The secrets that this write removes (all, for a deletion).
                let kept: Vec<ClientSecretId> =
                    account.map(|a| a.secrets.iter().map(|s| s.id).collect()).unwrap_or_default();
                let gone: Vec<ClientSecretId> =
                    stored.secrets.iter().map(|s| s.id).filter(|s| !kept.contains(s)).collect();
                match account {
                    Some(account) => accounts.insert(id.as_bytes().as_slice(), encode(account)?)?,
                    None => accounts.remove(id.as_bytes().as_slice())?,
                };
                let entry = revocation
                    .as_ref()
                    .map(|(target, cause)| log_revocation_in(revocations, *target, cause))
                    .transpose()?;
                Ok((entry, gone))
            })
            .map_err(tx_error)?;
        self.note_revocations(&entry)?;
        // Advisory, like the uses themselves: a crash here leaves an
        // orphan that no record reads.
        for secret in gone {
            self.clients.secret_uses.remove(secret.as_bytes()).map_err(backend)?;
        }
        self.commit.durable().await?;
        Ok(entry)
    }

    async fn note_secret_used(&self, secret: ClientSecretId, at: Timestamp) -> Result<(), StoreError> {
        // Raised, never lowered: uses noted out of order keep the latest.
        self.clients
            .secret_uses
            .update_and_fetch(secret.as_bytes(), |old| {
                let old = old.and_then(|b| b.try_into().ok()).map_or(i64::MIN, i64::from_be_bytes);
                Some(old.max(at.as_millis()).to_be_bytes().to_vec())
            })
            .map_err(backend)?;
        Ok(())
    }

    async fn use_assertion_id(
        &self,
        client: ServiceAccountId,
        jti: &str,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = [client.as_bytes().as_slice(), jti.as_bytes()].concat();
        let fresh = self
            .clients
            .assertion_ids
            .compare_and_swap(key, None::<&[u8]>, Some(&expires_at.as_millis().to_be_bytes()))
            .map_err(backend)?
            .is_ok();
        if fresh {
            self.commit.durable().await?;
        }
        Ok(fresh)
    }

    async fn purge_assertion_ids(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let mut purged = 0;
        for item in self.clients.assertion_ids.iter() {
            let (key, value) = item.map_err(backend)?;
            let expires = value.as_ref().try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN);
            if expires <= now.as_millis() {
                self.clients.assertion_ids.remove(key).map_err(backend)?;
                purged += 1;
                if purged >= limit {
                    break;
                }
            }
        }
        Ok(purged)
    }
}
