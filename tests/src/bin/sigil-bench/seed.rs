//! `sigil-bench seed`: fills a store with users, sessions and tokens for the
//! scenarios that need big data (list-sessions), and with live revocation
//! entries for the verifier's snapshot (verifier-snapshot).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::ADMIN_PASSWORD;

/// Fills a store through the store trait: a precomputed password hash, and
/// many concurrent writers so group commit batches the flushes.
pub(crate) async fn seed(
    dir: Option<&Path>,
    database_url: Option<&str>,
    sessions: usize,
    users: usize,
) -> anyhow::Result<()> {
    use sigil_server::{
        PgStore, SledStore,
        domain::{
            SessionId, Timestamp, TokenId, UserId,
            port::Store,
            session::{NewRefreshToken, SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
            user::UserRecord,
        },
    };
    let store: Arc<dyn Store> = match (database_url, dir) {
        (Some(url), _) => PgStore::connect(url, None).await?,
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            SledStore::open(dir)?
        }
        (None, None) => anyhow::bail!("seed needs --data-dir or --database-url"),
    };
    let started = Instant::now();
    let hash =
        "$argon2id$v=19$m=19456,t=2,p=1$c2VlZHNlZWRzZWVkc2VlZA$5t1Ob6KdC7r7u0gR2cJq1pNQ4xS0oTcNQm4m1bwC1bM".to_string();
    let now = Timestamp::now();
    ensure_admin(&*store, now).await?;
    let mut user_records = Vec::with_capacity(users);
    for i in 0..users {
        let user = UserRecord {
            id: UserId::generate(),
            username: format!("seed-user-{i}"),
            password_hash: hash.clone(),
            roles: vec![],
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        store.create_user(&user).await?;
        user_records.push(user);
    }
    let users = Arc::new(user_records);
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..64 {
        let (store, users, next) = (store.clone(), users.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= sessions {
                    return Ok::<_, anyhow::Error>(());
                }
                let user = &users[n % users.len()];
                let session = SessionRecord {
                    id: SessionId::generate(),
                    user_id: user.id,
                    username: user.username.clone(),
                    audience: vec!["sigil".into()],
                    created_at: now,
                    last_seen_at: now,
                    expires_at: now.plus(Duration::from_secs(30 * 86_400)),
                    client_address: format!("10.0.{}.{}:443", n / 250 % 250, n % 250),
                    user_agent: "sigil-bench/seed".into(),
                    device_name: format!("seed-{n}"),
                    state: SessionState::Active,
                    revoked_at: None,
                    revoke_reason: None,
                    current_refresh: TokenId::generate(),
                };
                let token = |id, kind, expires_at| TokenRecord {
                    id,
                    kind,
                    session_id: session.id,
                    user_id: user.id,
                    username: user.username.clone(),
                    issued_at: now,
                    expires_at,
                    state: TokenState::Active,
                    revoked_at: None,
                    refresh_hash: None,
                };
                let refresh = NewRefreshToken::generate()?;
                let records = [
                    token(session.current_refresh, TokenKind::Refresh, session.expires_at),
                    token(TokenId::generate(), TokenKind::Access, now.plus(Duration::from_secs(900))),
                ];
                store.create_session(&session, refresh.hash, &records).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    store.close().await?;
    let elapsed = started.elapsed();
    println!(
        "seeded {sessions} sessions ({} tokens) over {} users in {elapsed:?} ({:.0} sessions/s)",
        sessions * 2,
        users.len(),
        sessions as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// The admin the benchmark logs in as, with a real argon2id hash, unless
/// the store has one.
async fn ensure_admin(
    store: &dyn sigil_server::domain::port::Store,
    now: sigil_server::domain::Timestamp,
) -> anyhow::Result<()> {
    use argon2::{Argon2, PasswordHasher as _, password_hash::SaltString};
    use sigil_server::domain::{
        UserId,
        event::{EventKind, EventRecord},
        user::UserRecord,
    };
    let salt = SaltString::encode_b64(b"sigil-bench-seed").map_err(|e| anyhow::anyhow!("{e}"))?;
    let phc = Argon2::default().hash_password(ADMIN_PASSWORD.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = UserRecord {
        id: UserId::generate(),
        username: "admin".into(),
        password_hash: phc.to_string(),
        roles: vec!["admin".into()],
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    if store.user_by_name("admin").await?.is_none() {
        store.create_user(&admin).await?;
        // As the server records it. On sled this event also takes the
        // store's first id (0), which the revocation log would otherwise
        // give its first entry: an entry of sequence 0 does not reach a
        // verifier's snapshot (see BENCHMARKS.md, #13).
        store.append_events(vec![EventRecord::new(EventKind::UserCreated).user(admin.id, "admin")]).await?;
    }
    Ok(())
}

/// Fills the sled store in `dir` with the admin and `count` live
/// revocation entries (revoked token ids, each kept for `live`), through
/// the store's revocation log: what a server rebuilds its index from and
/// streams as its snapshot. Many concurrent appenders, so group commit
/// batches the flushes.
pub(crate) async fn seed_revocations(dir: &Path, count: usize, live: Duration) -> anyhow::Result<()> {
    use sigil_server::{
        SledStore,
        domain::{
            Timestamp, TokenId,
            port::{RevocationCause, RevocationLog as _, Store as _},
            revocation::RevocationTarget,
        },
    };
    std::fs::create_dir_all(dir)?;
    let store = SledStore::open(dir)?;
    let started = Instant::now();
    let now = Timestamp::now();
    ensure_admin(&*store, now).await?;
    let cause = Arc::new(RevocationCause { at: now, expires_at: now.plus(live), reason: "sigil-bench seed".into() });
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..64 {
        let (store, next, cause) = (store.clone(), next.clone(), cause.clone());
        writers.push(tokio::spawn(async move {
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < count {
                store.append_revocation(RevocationTarget::Token(TokenId::generate()), &cause).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    store.close().await?;
    let elapsed = started.elapsed();
    println!("seeded {count} live revocation entries in {elapsed:?} ({:.0}/s)", count as f64 / elapsed.as_secs_f64());
    Ok(())
}
