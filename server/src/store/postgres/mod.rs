//! The shared engine: PostgreSQL, for several Sigil instances behind one
//! load balancer.
//!
//! - Durability is the committed transaction (`synchronous_commit` left on):
//!   a write is acknowledged only after `COMMIT` returned.
//! - Every multi-record change is one explicit transaction; rows are locked
//!   (`FOR UPDATE`) before they are read for a decision and changed, so two
//!   instances presenting one refresh token at once rotate it at most once.
//!   The business rules (what a rotation or a revocation writes, what a key
//!   change writes) are the domain's: this engine reads the rows, asks the
//!   domain, and writes its answer in the same transaction.
//! - The revocation log and the event log take their sequence numbers under
//!   an advisory lock held until commit, so sequence order is commit order:
//!   an instance that catches up "after sequence N" never skips an entry.
//! - Each change that other instances must learn of (revocations, events,
//!   signing keys) is announced with `pg_notify` in its transaction, which
//!   PostgreSQL delivers only on commit; see `listener.rs`.
//! - With a CA configured, every connection (pool and `LISTEN`) is TLS and
//!   trusts only that CA; see `tls.rs`.
//! - When PostgreSQL is unreachable, every call fails with
//!   [`StoreError::Backend`] within the pool's timeouts, which the gRPC
//!   layer reports as `UNAVAILABLE`: nothing uncommitted is acknowledged.

mod event_log;
mod listener;
mod schema;
mod service_accounts;
mod session_revocations;
mod tls;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_postgres::{
    NoTls, Row, Socket,
    error::SqlState,
    tls::{MakeTlsConnect, TlsConnect},
    types::{Json, ToSql},
};
use uuid::Uuid;

use crate::domain::{
    SessionId, Timestamp, TokenId, UserId,
    event::EventRecord,
    key_rotation,
    keys::SigningKeyRecord,
    lockout::{AttemptOutcome, AttemptStep, FailureRecord, LockoutPolicy},
    port::{
        Changes, EventStore, Expired, KeyStore, LoginThrottle, RevocationCause, RevocationLog, RevokeOutcome,
        RotateOutcome, Rotation, SessionQuery, SessionStore, Store, StoreError, TokenQuery, UserRulesLock, UserStore,
    },
    refresh_rotation::{self, RotationDecision},
    revocation::{RevocationEntry, RevocationTarget},
    session::{RefreshRecord, RefreshTokenHash, SessionRecord, SessionState, TokenRecord, TokenState},
    session_revocation::{self, RevocationWrites},
    user::UserRecord,
};

/// Advisory lock keys (one namespace per database; "Sigl" in ASCII, then a
/// number per purpose).
const MIGRATION_LOCK: i64 = 0x5369_676c_0001;
const KEY_LOCK: i64 = 0x5369_676c_0002;
const REVOCATION_LOCK: i64 = 0x5369_676c_0003;
const EVENT_LOCK: i64 = 0x5369_676c_0004;
/// Serializes admin-role changes of every instance (the last-admin rule).
const USER_RULES_LOCK: i64 = 0x5369_676c_0005;

/// Connections per instance. Each request holds one for one transaction.
const POOL_SIZE: usize = 16;
/// How long a request waits for a connection, or for a new one to open,
/// before it is refused with `UNAVAILABLE`.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL-backed implementation of every store trait.
pub struct PgStore {
    pool: Pool,
    changes: Arc<Changes>,
    listener: JoinHandle<()>,
    events: event_log::EventWriter,
    revoker: session_revocations::SessionRevoker,
}

impl PgStore {
    /// Connects to `url` (a libpq URL or key=value string), applies missing
    /// migrations, and starts listening for other instances' changes.
    ///
    /// With `ca` (PEM certificates), connections use TLS as the URL's
    /// `sslmode` says (`prefer`, the default, or `require`), and the
    /// server's certificate must chain to `ca` and name the host. Without
    /// it, connections are plain, and `sslmode=require` is refused.
    pub async fn connect(url: &str, ca: Option<&[u8]>) -> Result<Arc<Self>, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("invalid database URL: {e}")))?;
        config.connect_timeout(POOL_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("sigil-server");
        }
        match ca {
            Some(ca) => Self::connect_with(config, tls::connector(ca)?).await,
            None if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require => Err(StoreError::Backend(
                "the database URL says sslmode=require: give the server's CA with --database-ca".into(),
            )),
            None => Self::connect_with(config, NoTls).await,
        }
    }

    async fn connect_with<T>(config: tokio_postgres::Config, tls: T) -> Result<Arc<Self>, StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync + 'static,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (mut client, connection) = config.connect(tls.clone()).await.map_err(pg)?;
        let driver = tokio::spawn(connection);
        schema::migrate(&mut client).await?;
        drop(client);
        let _ = driver.await;

        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let changes = Arc::new(Changes::default());
        let listener = tokio::spawn(listener::listen(config, tls, changes.clone()));
        let events = event_log::EventWriter::start(pool.clone());
        let revoker = session_revocations::SessionRevoker::start(pool.clone());
        Ok(Arc::new(Self { pool, changes, listener, events, revoker }))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        checkout(&self.pool).await
    }
}

/// A connection from `pool`, within the pool's timeouts.
async fn checkout(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|e| StoreError::Backend(format!("PostgreSQL unreachable: {e}")))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Runs `sql` with `params` through the connection's statement cache.
async fn query<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    client.query(&statement, params).await.map_err(pg)
}

/// Like [`query`], for statements whose rows are not wanted.
async fn execute<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    client.execute(&statement, params).await.map_err(pg)
}

/// The JSON bodies in column 0 of `rows`.
fn bodies<T: DeserializeOwned>(rows: &[Row]) -> Result<Vec<T>, StoreError> {
    rows.iter().map(body).collect()
}

fn body<T: DeserializeOwned>(row: &Row) -> Result<T, StoreError> {
    row.try_get::<_, Json<T>>(0)
        .map(|json| json.0)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}")))
}

fn first<T: DeserializeOwned>(rows: &[Row]) -> Result<Option<T>, StoreError> {
    rows.first().map(body).transpose()
}

fn count(rows: &[Row]) -> Result<u64, StoreError> {
    let n: i64 = rows.first().ok_or_else(|| StoreError::Corrupt("count returned no row".into()))?.get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    // tokio-postgres' `Display` says only "db error"; the cause says what.
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => StoreError::Backend(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        (None, Some(cause)) => StoreError::Backend(format!("PostgreSQL: {e}: {cause}")),
        (None, None) => StoreError::Backend(format!("PostgreSQL: {e}")),
    }
}

/// Announces a change to the other instances when the transaction commits.
async fn announce<C: GenericClient + Sync>(client: &C, what: &str) -> Result<(), StoreError> {
    execute(client, "SELECT pg_notify($1, $2)", &[&listener::CHANNEL, &what]).await.map(drop)
}

/// The id a cursor starts after when there is none: below every UUIDv7.
fn after_or_nil(after: Option<Uuid>) -> Uuid {
    after.unwrap_or_else(Uuid::nil)
}

async fn insert_session<C: GenericClient + Sync>(client: &C, s: &SessionRecord) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO sessions (id, user_id, active, current_refresh, expires_at, body) VALUES ($1, $2, true, $3, $4, $5)",
        &[&s.id.uuid(), &s.user_id.uuid(), &s.current_refresh.uuid(), &s.expires_at.as_millis(), &Json(s)],
    )
    .await
    .map(drop)
}

/// Writes back a session changed in place (last seen, rotation, ending).
async fn update_session<C: GenericClient + Sync>(
    client: &C,
    s: &SessionRecord,
    ended_at: Option<Timestamp>,
) -> Result<(), StoreError> {
    execute(
        client,
        "UPDATE sessions SET active = $2, current_refresh = $3, ended_at = COALESCE($4, ended_at), body = $5
         WHERE id = $1",
        &[
            &s.id.uuid(),
            &(s.state == SessionState::Active),
            &s.current_refresh.uuid(),
            &ended_at.map(Timestamp::as_millis),
            &Json(s),
        ],
    )
    .await
    .map(drop)
}

/// Records new tokens in one statement: a login and a rotation each record
/// two, and a round trip saved there is saved on every login and refresh.
async fn insert_tokens<C: GenericClient + Sync>(client: &C, tokens: &[TokenRecord]) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = tokens.iter().map(|t| t.id.uuid()).collect();
    let sessions: Vec<Uuid> = tokens.iter().map(|t| t.session_id.uuid()).collect();
    let users: Vec<Uuid> = tokens.iter().map(|t| t.user_id.uuid()).collect();
    let expiries: Vec<i64> = tokens.iter().map(|t| t.expires_at.as_millis()).collect();
    let hashes: Vec<Option<Vec<u8>>> = tokens.iter().map(|t| t.refresh_hash.map(|h| h.0.to_vec())).collect();
    let records: Vec<Json<&TokenRecord>> = tokens.iter().map(Json).collect();
    execute(
        client,
        "INSERT INTO tokens (id, session_id, user_id, active, expires_at, refresh_hash, body)
         SELECT id, session_id, user_id, true, expires_at, refresh_hash, body
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::bytea[], $6::jsonb[])
           AS t(id, session_id, user_id, expires_at, refresh_hash, body)",
        &[&ids, &sessions, &users, &expiries, &hashes, &records],
    )
    .await
    .map(drop)
}

/// Ends an active token (revoked, expired or rotated) and writes it back.
async fn end_token<C: GenericClient + Sync>(
    client: &C,
    t: &mut TokenRecord,
    state: TokenState,
    at: Timestamp,
) -> Result<(), StoreError> {
    t.end(state, at);
    put_ended_token(client, t, at).await
}

/// Writes back a token that ended at `at`.
async fn put_ended_token<C: GenericClient + Sync>(
    client: &C,
    t: &TokenRecord,
    at: Timestamp,
) -> Result<(), StoreError> {
    execute(
        client,
        "UPDATE tokens SET active = false, ended_at = $2, body = $3 WHERE id = $1",
        &[&t.id.uuid(), &at.as_millis(), &Json(t)],
    )
    .await
    .map(drop)
}

/// Writes what the domain decided a revocation ends, appends its log
/// entries, and returns the outcome.
async fn apply_revocation<C: GenericClient + Sync>(
    client: &C,
    writes: RevocationWrites,
    cause: &RevocationCause,
) -> Result<RevokeOutcome, StoreError> {
    for session in &writes.ended_sessions {
        update_session(client, session, Some(cause.at)).await?;
    }
    for token in &writes.ended_tokens {
        put_ended_token(client, token, cause.at).await?;
    }
    let mut entries = Vec::with_capacity(writes.log.len());
    for target in &writes.log {
        entries.push(log_revocation(client, *target, cause).await?);
    }
    Ok(writes.outcome(entries))
}

/// Appends to the revocation log, in commit order (see the module docs),
/// with the cause's time and bound.
async fn log_revocation<C: GenericClient + Sync>(
    client: &C,
    target: RevocationTarget,
    cause: &RevocationCause,
) -> Result<RevocationEntry, StoreError> {
    execute(client, "SELECT pg_advisory_xact_lock($1)", &[&REVOCATION_LOCK]).await?;
    let rows = query(client, "SELECT nextval('revocation_sequence')", &[]).await?;
    let sequence: i64 = rows.first().ok_or_else(|| StoreError::Corrupt("nextval returned no row".into()))?.get(0);
    let entry = RevocationEntry {
        sequence: u64::try_from(sequence).unwrap_or(0),
        target,
        at: cause.at,
        expires_at: cause.expires_at,
    };
    execute(
        client,
        "INSERT INTO revocations (sequence, at, expires_at, body) VALUES ($1, $2, $3, $4)",
        &[&sequence, &entry.at.as_millis(), &entry.expires_at.as_millis(), &Json(&entry)],
    )
    .await?;
    announce(client, "revocation").await?;
    Ok(entry)
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached("INSERT INTO users (id, username, body) VALUES ($1, $2, $3)").await.map_err(pg)?;
        match client.execute(&statement, &[&user.id.uuid(), &user.username, &Json(user)]).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(StoreError::UsernameTaken),
            Err(e) => Err(pg(e)),
        }
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        first(&query(&client, "SELECT body FROM users WHERE id = $1", &[&id.uuid()]).await?)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        first(&query(&client, "SELECT body FROM users WHERE username = $1", &[&username]).await?)
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        count(&query(&client, "SELECT count(*) FROM users", &[]).await?)
    }

    async fn update_user(
        &self,
        user: &UserRecord,
        revocation: Option<(RevocationTarget, RevocationCause)>,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        execute(&tx, "UPDATE users SET body = $2 WHERE id = $1", &[&user.id.uuid(), &Json(user)]).await?;
        let entry = match revocation {
            Some((target, cause)) => Some(log_revocation(&tx, target, &cause).await?),
            None => None,
        };
        tx.commit().await.map_err(pg)?;
        Ok(entry)
    }

    async fn rename_user(&self, user: &UserRecord, _old_username: &str) -> Result<(), StoreError> {
        // The old name is only the row's `username` column: overwriting it frees it.
        let client = self.client().await?;
        let statement =
            client.prepare_cached("UPDATE users SET username = $2, body = $3 WHERE id = $1").await.map_err(pg)?;
        match client.execute(&statement, &[&user.id.uuid(), &user.username, &Json(user)]).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(StoreError::UsernameTaken),
            Err(e) => Err(pg(e)),
        }
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(execute(&client, "DELETE FROM users WHERE id = $1", &[&id.uuid()]).await? > 0)
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let client = self.client().await?;
        let after = after_or_nil(after.map(|id| id.uuid()));
        let rows =
            query(&client, "SELECT body FROM users WHERE id > $1 ORDER BY id LIMIT $2", &[&after, &limit_of(limit)])
                .await?;
        bodies(&rows)
    }

    async fn count_active_sessions_of(&self, user: UserId) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let rows =
            query(&client, "SELECT count(*) FROM sessions WHERE user_id = $1 AND active", &[&user.uuid()]).await?;
        Ok(u32::try_from(count(&rows)?).unwrap_or(u32::MAX))
    }

    async fn lock_user_rules(&self) -> Result<Option<UserRulesLock>, StoreError> {
        // A session-level advisory lock on a connection taken out of the
        // pool: dropping the guard closes that connection, which releases
        // the lock however the change ended (even if this task is cancelled
        // or the process dies). Back in the pool, the connection would carry
        // the lock to its next user. The check and the write run on other
        // connections; they see each other's committed writes because the
        // holder commits before it lets go.
        // A holder that stopped answering (a partitioned instance) keeps
        // its connection, and so the lock, until TCP gives up on it: wait
        // a bounded time, then fail the call as UNAVAILABLE (retry).
        let client = deadpool_postgres::Object::take(self.client().await?);
        client.batch_execute("SET lock_timeout = '10s'").await.map_err(pg)?;
        client.execute("SELECT pg_advisory_lock($1)", &[&USER_RULES_LOCK]).await.map_err(pg)?;
        Ok(Some(Box::new(client)))
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        session: &SessionRecord,
        refresh_hash: RefreshTokenHash,
        tokens: &[TokenRecord],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        insert_session(&tx, session).await?;
        insert_tokens(&tx, &refresh_rotation::carrying_hash(tokens, session.current_refresh, refresh_hash)).await?;
        tx.commit().await.map_err(pg)
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let client = self.client().await?;
        first(&query(&client, "SELECT body FROM sessions WHERE id = $1", &[&id.uuid()]).await?)
    }

    async fn refresh_record(&self, hash: RefreshTokenHash) -> Result<Option<RefreshRecord>, StoreError> {
        let client = self.client().await?;
        let rows =
            query(&client, "SELECT id, session_id FROM tokens WHERE refresh_hash = $1", &[&hash.0.as_slice()]).await?;
        Ok(rows.first().map(|row| RefreshRecord {
            token_id: TokenId::from_uuid(row.get(0)),
            session_id: SessionId::from_uuid(row.get(1)),
        }))
    }

    async fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.client().await?;
        first(&query(&client, "SELECT body FROM tokens WHERE id = $1", &[&id.uuid()]).await?)
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // The session's row lock is the whole of the race: of two
        // presentations of one token, on any instances, one locks the row;
        // the other waits, then reads the row as the first committed it
        // (READ COMMITTED re-reads a locked row once it is released), with
        // the current token moved on: reuse. The session is locked before
        // its token, in the order `revoke_session` takes them.
        // The two reads are sent together (tokio-postgres pipelines
        // futures polled at once on one connection, in the order first
        // polled), and PostgreSQL runs them one after the other in that
        // order, each with its own snapshot: the same locks, in the same
        // order, as two round trips would take, for the price of one.
        let (session_id, presented) = (rotation.session_id.uuid(), rotation.presented.uuid());
        let (session_id, presented): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
            ([&session_id], [&presented]);
        let (sessions, tokens) = futures::try_join!(
            query(&tx, "SELECT body FROM sessions WHERE id = $1 FOR UPDATE", &session_id),
            query(&tx, "SELECT body FROM tokens WHERE id = $1 FOR UPDATE", &presented),
        )?;
        match refresh_rotation::decide(rotation, first(&sessions)?, first(&tokens)?) {
            RotationDecision::Rotate(writes) => {
                // Rows already locked by this transaction: the writes
                // cannot wait on one another, so they go in one round trip.
                futures::try_join!(
                    put_ended_token(&tx, &writes.rotated, rotation.now),
                    insert_tokens(&tx, &writes.issued),
                    update_session(&tx, &writes.session, None),
                )?;
                tx.commit().await.map_err(pg)?;
                Ok(writes.outcome())
            }
            RotationDecision::Refuse(outcome) => {
                tx.rollback().await.map_err(pg)?;
                Ok(outcome)
            }
        }
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        cause: &RevocationCause,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        // With the revocations of other callers on this instance: see
        // `session_revocations.rs`. Locking the session first orders this
        // against a rotation, which must update the same row: the rotation
        // then finds it inactive.
        self.revoker.revoke(id, cause).await
    }

    async fn revoke_token(&self, id: TokenId, cause: &RevocationCause) -> Result<Option<RevokeOutcome>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let rows = query(&tx, "SELECT body FROM tokens WHERE id = $1 FOR UPDATE", &[&id.uuid()]).await?;
        let Some(token) = first::<TokenRecord>(&rows)? else {
            tx.rollback().await.map_err(pg)?;
            return Ok(None);
        };
        let outcome = apply_revocation(&tx, session_revocation::revoke_token(&token, cause), cause).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(outcome))
    }

    async fn revoke_user_sessions(&self, user: UserId, cause: &RevocationCause) -> Result<RevokeOutcome, StoreError> {
        let ids: Vec<Uuid> = {
            let client = self.client().await?;
            let rows =
                query(&client, "SELECT id FROM sessions WHERE user_id = $1 ORDER BY id", &[&user.uuid()]).await?;
            rows.iter().map(|row| row.get(0)).collect()
        };
        let mut total = RevokeOutcome::default();
        for id in ids {
            if let Some(outcome) = self.revoke_session(SessionId::from_uuid(id), cause).await? {
                total.absorb(outcome);
            }
        }
        Ok(total)
    }

    async fn list_sessions(&self, page: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let client = self.client().await?;
        let after = after_or_nil(page.after.map(|id| id.uuid()));
        let limit = limit_of(page.limit);
        let active = if page.include_inactive { "" } else { " AND active" };
        let rows = match page.user {
            Some(user) => {
                let sql = format!(
                    "SELECT body FROM sessions WHERE user_id = $1 AND id > $2{active} ORDER BY user_id, id LIMIT $3"
                );
                query(&client, &sql, &[&user.uuid(), &after, &limit]).await?
            }
            None => {
                let sql = format!("SELECT body FROM sessions WHERE id > $1{active} ORDER BY id LIMIT $2");
                query(&client, &sql, &[&after, &limit]).await?
            }
        };
        bodies(&rows)
    }

    async fn list_tokens(&self, page: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.client().await?;
        let after = after_or_nil(page.after.map(|id| id.uuid()));
        let limit = limit_of(page.limit);
        let session = page.session.map(|id| id.uuid());
        let user = page.user.map(|id| id.uuid());
        let mut conditions = vec!["id > $1"];
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &limit];
        if let Some(session) = &session {
            params.push(session);
            conditions.push(if params.len() == 3 { "session_id = $3" } else { "session_id = $4" });
        }
        if let Some(user) = &user {
            params.push(user);
            conditions.push(if params.len() == 3 { "user_id = $3" } else { "user_id = $4" });
        }
        if !page.include_inactive {
            conditions.push("active");
        }
        let sql = format!("SELECT body FROM tokens WHERE {} ORDER BY id LIMIT $2", conditions.join(" AND "));
        bodies(&query(&client, &sql, &params).await?)
    }

    async fn count_active(&self) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let sessions = count(&query(&client, "SELECT count(*) FROM sessions WHERE active", &[]).await?)?;
        let tokens = count(&query(&client, "SELECT count(*) FROM tokens WHERE active", &[]).await?)?;
        Ok((sessions, tokens))
    }

    async fn touch_sessions(&self, seen: &[(SessionId, Timestamp)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = seen.iter().map(|(id, _)| id.uuid()).collect();
        let times: Vec<i64> = seen.iter().map(|(_, at)| at.as_millis()).collect();
        let client = self.client().await?;
        // One statement for the whole batch; never lowers a time.
        execute(
            &client,
            "UPDATE sessions s SET body = jsonb_set(s.body, '{last_seen_at}', to_jsonb(v.at))
             FROM unnest($1::uuid[], $2::bigint[]) AS v(id, at)
             WHERE s.id = v.id AND (s.body->>'last_seen_at')::bigint < v.at",
            &[&ids, &times],
        )
        .await
        .map(drop)
    }

    async fn expire_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Expired>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // SKIP LOCKED: instances sweeping at once share the work.
        let rows = query(
            &tx,
            "SELECT body FROM sessions WHERE active AND expires_at <= $1
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now.as_millis(), &limit_of(limit)],
        )
        .await?;
        let mut expired = Vec::new();
        for mut session in bodies::<SessionRecord>(&rows)? {
            session.end(SessionState::Expired, now);
            update_session(&tx, &session, Some(now)).await?;
            expired.push(Expired::Session(Box::new(session)));
        }
        let rows = query(
            &tx,
            "SELECT body FROM tokens WHERE active AND expires_at <= $1
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now.as_millis(), &limit_of(limit.saturating_sub(expired.len()))],
        )
        .await?;
        for mut token in bodies::<TokenRecord>(&rows)? {
            end_token(&tx, &mut token, TokenState::Expired, now).await?;
            expired.push(Expired::Token(Box::new(token)));
        }
        tx.commit().await.map_err(pg)?;
        Ok(expired)
    }

    async fn purge_ended(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let sessions = execute(
            &client,
            "DELETE FROM sessions WHERE id IN
             (SELECT id FROM sessions WHERE NOT active AND ended_at < $1 LIMIT $2)",
            &[&before.as_millis(), &limit_of(limit)],
        )
        .await?;
        let left = limit_of(limit).saturating_sub(i64::try_from(sessions).unwrap_or(i64::MAX));
        let tokens = execute(
            &client,
            "DELETE FROM tokens WHERE id IN
             (SELECT id FROM tokens WHERE NOT active AND ended_at < $1 LIMIT $2)",
            &[&before.as_millis(), &left],
        )
        .await?;
        Ok(usize::try_from(sessions + tokens).unwrap_or(usize::MAX))
    }
}

async fn all_keys<C: GenericClient + Sync>(client: &C) -> Result<Vec<SigningKeyRecord>, StoreError> {
    bodies(&query(client, "SELECT body FROM signing_keys ORDER BY created_at, kid", &[]).await?)
}

async fn insert_key<C: GenericClient + Sync>(client: &C, key: &SigningKeyRecord) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO signing_keys (kid, created_at, body) VALUES ($1, $2, $3)",
        &[&key.kid, &key.created_at.as_millis(), &Json(key)],
    )
    .await
    .map(drop)
}

async fn update_key<C: GenericClient + Sync>(client: &C, key: &SigningKeyRecord) -> Result<(), StoreError> {
    execute(client, "UPDATE signing_keys SET body = $2 WHERE kid = $1", &[&key.kid, &Json(key)]).await.map(drop)
}

#[async_trait]
impl KeyStore for PgStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let client = self.client().await?;
        all_keys(&client).await
    }

    async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Instances starting together on an empty database: the first to
        // take the lock inserts, the others then find its key.
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK]).await?;
        if let Some(first) = key_rotation::first_key(&all_keys(&tx).await?, key) {
            insert_key(&tx, first).await?;
            announce(&tx, listener::KEYS).await?;
        }
        let keys = all_keys(&tx).await?;
        tx.commit().await.map_err(pg)?;
        Ok(keys)
    }

    async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK]).await?;
        let rotation = key_rotation::rotate(&all_keys(&tx).await?, key);
        for old in &rotation.superseded {
            update_key(&tx, old).await?;
        }
        insert_key(&tx, &rotation.activated).await?;
        announce(&tx, listener::KEYS).await?;
        let keys = all_keys(&tx).await?;
        tx.commit().await.map_err(pg)?;
        Ok(keys)
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let rows = query(&tx, "SELECT body FROM signing_keys WHERE kid = $1 FOR UPDATE", &[&kid]).await?;
        if let Some(key) = first::<SigningKeyRecord>(&rows)?
            && let Some(retired) = key_rotation::retire(&key, at)
        {
            update_key(&tx, &retired).await?;
            announce(&tx, listener::KEYS).await?;
        }
        tx.commit().await.map_err(pg)
    }
}

#[async_trait]
impl RevocationLog for PgStore {
    async fn append_revocation(
        &self,
        target: RevocationTarget,
        cause: &RevocationCause,
    ) -> Result<RevocationEntry, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let entry = log_revocation(&tx, target, cause).await?;
        tx.commit().await.map_err(pg)?;
        Ok(entry)
    }

    async fn revocations_live(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        let client = self.client().await?;
        let rows =
            query(&client, "SELECT body FROM revocations WHERE expires_at > $1 ORDER BY sequence", &[&now.as_millis()])
                .await?;
        bodies(&rows)
    }

    async fn revocations_after(&self, after: u64, limit: usize) -> Result<Vec<RevocationEntry>, StoreError> {
        let client = self.client().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = query(
            &client,
            "SELECT body FROM revocations WHERE sequence > $1 ORDER BY sequence LIMIT $2",
            &[&after, &limit_of(limit)],
        )
        .await?;
        bodies(&rows)
    }

    async fn purge_revocations(&self, now: Timestamp) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let purged = execute(&client, "DELETE FROM revocations WHERE expires_at <= $1", &[&now.as_millis()]).await?;
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_events(&self, events: Vec<EventRecord>) -> Result<Vec<EventRecord>, StoreError> {
        // With the events of other callers on this instance: see `event_log.rs`.
        self.events.append(events).await
    }

    async fn latest_event_sequence(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let rows = query(&client, "SELECT COALESCE(max(sequence), 0) FROM events", &[]).await?;
        count(&rows)
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let client = self.client().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = query(
            &client,
            "SELECT body FROM events WHERE sequence > $1 ORDER BY sequence LIMIT $2",
            &[&after, &limit_of(limit)],
        )
        .await?;
        bodies(&rows)
    }

    async fn trim_events(&self, keep_noise: usize, audit_before: Timestamp) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let noise = execute(
            &client,
            "DELETE FROM events WHERE NOT audit AND sequence <=
             (SELECT sequence FROM events WHERE NOT audit ORDER BY sequence DESC OFFSET $1 LIMIT 1)",
            &[&limit_of(keep_noise)],
        )
        .await?;
        let audit =
            execute(&client, "DELETE FROM events WHERE audit AND occurred_at < $1", &[&audit_before.as_millis()])
                .await?;
        Ok(usize::try_from(noise + audit).unwrap_or(usize::MAX))
    }
}

impl PgStore {
    /// Runs `change` on the failed-login counter under `key` inside one
    /// transaction holding the counter's row: concurrent attempts on every
    /// instance take their turn on it. A counter left with nothing in it is
    /// deleted.
    async fn update_counter<R>(
        &self,
        key: &str,
        change: impl FnOnce(&mut FailureRecord) -> R,
    ) -> Result<R, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        execute(
            &tx,
            "INSERT INTO login_failures (key, body) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key.as_bytes(), &Json(FailureRecord::default())],
        )
        .await?;
        let rows = query(&tx, "SELECT body FROM login_failures WHERE key = $1 FOR UPDATE", &[&key.as_bytes()]).await?;
        let mut record: FailureRecord = first(&rows)?.unwrap_or_default();
        let outcome = change(&mut record);
        if record.is_clear() {
            execute(&tx, "DELETE FROM login_failures WHERE key = $1", &[&key.as_bytes()]).await?;
        } else {
            execute(&tx, "UPDATE login_failures SET body = $2 WHERE key = $1", &[&key.as_bytes(), &Json(&record)])
                .await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(outcome)
    }
}

#[async_trait]
impl LoginThrottle for PgStore {
    async fn login_failures(&self, key: &str) -> Result<Option<FailureRecord>, StoreError> {
        let client = self.client().await?;
        first(&query(&client, "SELECT body FROM login_failures WHERE key = $1", &[&key.as_bytes()]).await?)
    }

    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<(FailureRecord, bool), StoreError> {
        self.update_counter(key, |record| {
            let locked = record.record_failure(now, policy);
            (record.clone(), locked)
        })
        .await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(&client, "DELETE FROM login_failures WHERE key = $1", &[&key.as_bytes()]).await.map(drop)
    }

    async fn purge_login_failures(
        &self,
        now: Timestamp,
        window: std::time::Duration,
        limit: usize,
    ) -> Result<usize, StoreError> {
        // The whole table, a page at a time in key order, so that counters
        // still in use at the front never hide stale ones behind them.
        const PAGE: i64 = 1000;
        let mut client = self.client().await?;
        let mut after: Vec<u8> = Vec::new();
        let mut purged = 0;
        while purged < limit {
            let tx = client.transaction().await.map_err(pg)?;
            // SKIP LOCKED: a counter an attempt holds right now is in use.
            let rows = query(
                &tx,
                "SELECT key, body FROM login_failures WHERE key > $1 ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&after, &PAGE],
            )
            .await?;
            let Some(last) = rows.last().map(|row| row.get::<_, Vec<u8>>(0)) else { break };
            let mut stale: Vec<Vec<u8>> = Vec::new();
            for row in &rows {
                let Json(record): Json<FailureRecord> = row.try_get(1).map_err(pg)?;
                if record.is_stale(now, window) && purged + stale.len() < limit {
                    stale.push(row.get(0));
                }
            }
            if !stale.is_empty() {
                execute(&tx, "DELETE FROM login_failures WHERE key = ANY($1)", &[&stale]).await?;
            }
            tx.commit().await.map_err(pg)?;
            purged += stale.len();
            if rows.len() < PAGE as usize {
                break;
            }
            after = last;
        }
        Ok(purged)
    }

    async fn login_attempt(
        &self,
        key: &str,
        step: AttemptStep,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<AttemptOutcome, StoreError> {
        self.update_counter(key, |record| record.apply(step, now, policy)).await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn close(&self) -> Result<(), StoreError> {
        // Every acknowledged write was committed; nothing is buffered here.
        self.listener.abort();
        self.pool.close();
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        // Not `SELECT 1`: a read-only database (a standby after a failover,
        // `default_transaction_read_only`) answers that while every write
        // fails. Assigning a transaction id needs a database that can write.
        execute(&client, "SELECT pg_current_xact_id()", &[]).await.map(drop)
    }

    fn changes(&self) -> Option<Arc<Changes>> {
        Some(self.changes.clone())
    }
}
