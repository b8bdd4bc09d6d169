//! The PostgreSQL engine's [`ServiceAccountStore`] (tables of migration 4):
//! `service_accounts` (the record as JSON, its version beside it for the
//! conditional replace), `client_secret_uses` (advisory last uses, merged
//! into the records read back) and `client_assertion_ids` (assertion ids
//! already used: the primary key makes a second use of one fail for every
//! instance sharing the database).

use async_trait::async_trait;
use tokio_postgres::types::Json;

use super::{PgStore, bodies, execute, first, limit_of, log_revocation, pg, query};
use crate::domain::{
    ClientSecretId, ServiceAccountId, Timestamp,
    port::{RevocationCause, ServiceAccountStore, StoreError},
    revocation::{RevocationEntry, RevocationTarget},
    service_account::ServiceAccountRecord,
};

impl PgStore {
    /// `accounts` with each secret's last use as noted.
    async fn with_last_uses(
        &self,
        mut accounts: Vec<ServiceAccountRecord>,
    ) -> Result<Vec<ServiceAccountRecord>, StoreError> {
        if accounts.is_empty() {
            return Ok(accounts);
        }
        let ids: Vec<uuid::Uuid> = accounts.iter().map(|a| a.id.uuid()).collect();
        let client = self.client().await?;
        let rows =
            query(&client, "SELECT secret_id, used_at FROM client_secret_uses WHERE account_id = ANY($1)", &[&ids])
                .await?;
        for row in rows {
            let secret = ClientSecretId::from_uuid(row.try_get(0).map_err(pg)?);
            let at = Timestamp::from_millis(row.try_get(1).map_err(pg)?);
            for stored in accounts.iter_mut().flat_map(|a| a.secrets.iter_mut()).filter(|s| s.id == secret) {
                stored.last_used_at = Some(stored.last_used_at.map_or(at, |old| old.max(at)));
            }
        }
        Ok(accounts)
    }
}

#[async_trait]
impl ServiceAccountStore for PgStore {
    async fn create_service_account(&self, account: &ServiceAccountRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let version = i64::try_from(account.version).unwrap_or(i64::MAX);
        execute(
            &client,
            "INSERT INTO service_accounts (id, version, body) VALUES ($1, $2, $3)",
            &[&account.id.uuid(), &version, &Json(account)],
        )
        .await
        .map(drop)
    }

    async fn service_account(&self, id: ServiceAccountId) -> Result<Option<ServiceAccountRecord>, StoreError> {
        let client = self.client().await?;
        let found: Option<ServiceAccountRecord> =
            first(&query(&client, "SELECT body FROM service_accounts WHERE id = $1", &[&id.uuid()]).await?)?;
        drop(client);
        Ok(self.with_last_uses(found.into_iter().collect()).await?.pop())
    }

    async fn list_service_accounts(
        &self,
        after: Option<ServiceAccountId>,
        limit: usize,
    ) -> Result<Vec<ServiceAccountRecord>, StoreError> {
        let client = self.client().await?;
        let rows = match after {
            Some(after) => {
                query(
                    &client,
                    "SELECT body FROM service_accounts WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after.uuid(), &limit_of(limit)],
                )
                .await?
            }
            None => {
                query(&client, "SELECT body FROM service_accounts ORDER BY id LIMIT $1", &[&limit_of(limit)]).await?
            }
        };
        drop(client);
        self.with_last_uses(bodies(&rows)?).await
    }

    async fn replace_service_account(
        &self,
        id: ServiceAccountId,
        read_version: u64,
        account: Option<&ServiceAccountRecord>,
        revocation: Option<(RevocationTarget, RevocationCause)>,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        let read_version = i64::try_from(read_version).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = match account {
            Some(account) => {
                let version = i64::try_from(account.version).unwrap_or(i64::MAX);
                execute(
                    &tx,
                    "UPDATE service_accounts SET version = $3, body = $4 WHERE id = $1 AND version = $2",
                    &[&id.uuid(), &read_version, &version, &Json(account)],
                )
                .await?
            }
            None => {
                execute(
                    &tx,
                    "DELETE FROM service_accounts WHERE id = $1 AND version = $2",
                    &[&id.uuid(), &read_version],
                )
                .await?
            }
        };
        if changed == 0 {
            return Err(StoreError::Conflict);
        }
        // The last uses of secrets this write removes (all, for a deletion).
        let kept: Vec<uuid::Uuid> =
            account.map(|a| a.secrets.iter().map(|s| s.id.uuid()).collect()).unwrap_or_default();
        execute(
            &tx,
            "DELETE FROM client_secret_uses WHERE account_id = $1 AND NOT (secret_id = ANY($2))",
            &[&id.uuid(), &kept],
        )
        .await?;
        let entry = match revocation {
            Some((target, cause)) => Some(log_revocation(&tx, target, &cause).await?),
            None => None,
        };
        tx.commit().await.map_err(pg)?;
        Ok(entry)
    }

    async fn note_secret_used(&self, secret: ClientSecretId, at: Timestamp) -> Result<(), StoreError> {
        let client = self.client().await?;
        // The account is found through the record holding the secret, so
        // that a use noted for a secret just revoked is not kept.
        execute(
            &client,
            "INSERT INTO client_secret_uses (secret_id, account_id, used_at)
             SELECT $1, id, $2 FROM service_accounts
              WHERE body->'secrets' @> jsonb_build_array(jsonb_build_object('id', $1::uuid::text))
             ON CONFLICT (secret_id) DO UPDATE SET used_at = GREATEST(client_secret_uses.used_at, EXCLUDED.used_at)",
            &[&secret.uuid(), &at.as_millis()],
        )
        .await
        .map(drop)
    }

    async fn use_assertion_id(
        &self,
        client_id: ServiceAccountId,
        jti: &str,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let inserted = execute(
            &client,
            "INSERT INTO client_assertion_ids (account_id, jti, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&client_id.uuid(), &jti, &expires_at.as_millis()],
        )
        .await?;
        Ok(inserted == 1)
    }

    async fn purge_assertion_ids(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let purged = execute(
            &client,
            "DELETE FROM client_assertion_ids WHERE ctid IN
                (SELECT ctid FROM client_assertion_ids WHERE expires_at <= $1 LIMIT $2)",
            &[&now.as_millis(), &limit_of(limit)],
        )
        .await?;
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }
}
