//! The schema, as numbered migrations embedded in the binary and applied at
//! start under a session-level advisory lock, so that instances starting
//! together apply each migration exactly once (the others wait, then find
//! it applied).
//!
//! Records are stored as JSON bodies (the same documents the sled engine
//! stores) beside the columns that queries filter and sort on; every write
//! sets both from one record, in one statement.

use tokio_postgres::Client;

use super::{MIGRATION_LOCK, pg};
use crate::domain::port::StoreError;

/// Migrations in order; a migration, once released, is never edited.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r"
CREATE TABLE users (
    id uuid PRIMARY KEY,
    username text NOT NULL UNIQUE,
    body jsonb NOT NULL
);

CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    active boolean NOT NULL,
    current_refresh uuid NOT NULL,
    expires_at bigint NOT NULL,
    ended_at bigint,
    body jsonb NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id, id);
CREATE INDEX sessions_active ON sessions (id) WHERE active;
CREATE INDEX sessions_expiry ON sessions (expires_at) WHERE active;
CREATE INDEX sessions_ended ON sessions (ended_at) WHERE NOT active;

CREATE TABLE tokens (
    id uuid PRIMARY KEY,
    session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    active boolean NOT NULL,
    expires_at bigint NOT NULL,
    ended_at bigint,
    refresh_hash bytea UNIQUE,
    body jsonb NOT NULL
);
CREATE INDEX tokens_by_session ON tokens (session_id, id);
CREATE INDEX tokens_by_user ON tokens (user_id, id);
CREATE INDEX tokens_active ON tokens (id) WHERE active;
CREATE INDEX tokens_expiry ON tokens (expires_at) WHERE active;
CREATE INDEX tokens_ended ON tokens (ended_at) WHERE NOT active;

CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    created_at bigint NOT NULL,
    body jsonb NOT NULL
);

-- Sequences are taken under an advisory lock held to commit, so sequence
-- order is commit order and a reader catching up by sequence never skips
-- an entry that commits late.
CREATE SEQUENCE revocation_sequence;
CREATE TABLE revocations (
    sequence bigint PRIMARY KEY,
    at bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX revocations_at ON revocations (at);

CREATE SEQUENCE event_sequence;
CREATE TABLE events (
    sequence bigint PRIMARY KEY,
    body jsonb NOT NULL
);

-- Keys are bytes: the domain's throttle keys hold a NUL separator, which
-- a text column refuses.
CREATE TABLE login_failures (
    key bytea PRIMARY KEY,
    body jsonb NOT NULL
);
",
    ),
    (
        2,
        // Each revocation stores until when it matters (the TTL in force
        // when it was made). Entries from before get the domain's legacy
        // bound, `at` + 30 days (`revocation::LEGACY_ENTRY_LIFETIME`), which
        // their bodies, lacking the field, decode to as well. So do entries
        // that instances of the previous version still insert during a
        // rolling upgrade (the trigger; NOT NULL is checked after it), whose
        // purge by `at` keeps its index.
        r"
ALTER TABLE revocations ADD COLUMN expires_at bigint;
UPDATE revocations SET expires_at = at + 2592000000;
ALTER TABLE revocations ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX revocations_expiry ON revocations (expires_at);
CREATE FUNCTION revocations_legacy_bound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.expires_at := COALESCE(NEW.expires_at, NEW.at + 2592000000);
    RETURN NEW;
END
$$;
CREATE TRIGGER revocations_legacy_bound BEFORE INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION revocations_legacy_bound();
",
    ),
    (
        3,
        // Audit-class events are trimmed by age, the rest by count
        // (`EventKind::class`); stored events are classified by their kind.
        r"
ALTER TABLE events ADD COLUMN audit boolean NOT NULL DEFAULT false;
ALTER TABLE events ADD COLUMN occurred_at bigint NOT NULL DEFAULT 0;
UPDATE events SET
    occurred_at = (body->>'occurred_at')::bigint,
    audit = body->>'kind' IN ('session_revoked', 'token_revoked', 'user_created', 'user_updated',
        'user_disabled', 'user_enabled', 'user_deleted', 'key_rotated', 'key_retired', 'refresh_reused');
CREATE INDEX events_noise ON events (sequence) WHERE NOT audit;
CREATE INDEX events_audit_age ON events (occurred_at) WHERE audit;
",
    ),
    (
        4,
        // Service accounts (OAuth clients): the record as a JSON body with
        // its version beside it for conditional replaces; the advisory
        // last uses of their secrets; and the ids of client assertions
        // already used, kept until the assertion expires.
        r"
CREATE TABLE service_accounts (
    id uuid PRIMARY KEY,
    version bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE TABLE client_secret_uses (
    secret_id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    used_at bigint NOT NULL
);
CREATE INDEX client_secret_uses_by_account ON client_secret_uses (account_id);
CREATE TABLE client_assertion_ids (
    account_id uuid NOT NULL,
    jti text NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (account_id, jti)
);
CREATE INDEX client_assertion_ids_expiry ON client_assertion_ids (expires_at);
",
    ),
];

/// Applies every migration `client`'s database lacks; returns how many.
pub(super) async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    let applied = apply_missing(client).await;
    // Unlocked even when a migration failed; the connection is dropped next
    // anyway, which would release it too.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.map_err(pg);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply_missing(client: &mut Client) -> Result<usize, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sigil_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg)?;
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        let done = client
            .query_opt("SELECT 1 FROM sigil_migrations WHERE version = $1", &[version])
            .await
            .map_err(pg)?
            .is_some();
        if done {
            continue;
        }
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute("INSERT INTO sigil_migrations (version) VALUES ($1)", &[version]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(version, "applied schema migration");
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_legacy_revocation_bound_matches_the_domains() {
        let millis = crate::domain::revocation::LEGACY_ENTRY_LIFETIME.as_millis();
        assert!(super::MIGRATIONS[1].1.contains(&format!("SET expires_at = at + {millis};")));
        assert!(super::MIGRATIONS[1].1.contains(&format!("NEW.at + {millis})")));
    }

    #[test]
    fn stored_events_are_classified_as_the_domain_does() {
        use crate::domain::event::{EventClass, EventKind};
        use EventKind::*;
        let every = [
            SessionCreated,
            SessionRefreshed,
            SessionRevoked,
            SessionExpired,
            TokenIssued,
            TokenRevoked,
            UserCreated,
            UserUpdated,
            UserDisabled,
            UserEnabled,
            UserDeleted,
            LoginFailed,
            KeyRotated,
            KeyRetired,
            RefreshReused,
            AccountLocked,
        ];
        for kind in every {
            let name = serde_json::to_value(kind).expect("encode");
            let listed = super::MIGRATIONS[2].1.contains(&format!("'{}'", name.as_str().expect("a string")));
            assert_eq!(listed, kind.class() == EventClass::Audit, "{kind:?}");
        }
    }
}
