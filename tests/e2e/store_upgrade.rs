//! A PostgreSQL database written by the previous schema (version 1) is
//! upgraded in place: revocations stored without their bound get the
//! legacy one (and stay live), and stored events are classified by kind, so
//! an old admin action is kept by age while old failed logins are trimmed
//! by count.

use std::time::Duration;

use sigil_server::{
    PgStore,
    domain::{
        SessionId, Timestamp,
        event::{EventKind, EventRecord},
        revocation::{LEGACY_ENTRY_LIFETIME, RevocationTarget},
    },
};
use sigil_tests::postgres::Postgres;

/// Takes a database with the current schema back to version 1's shape.
const BACK_TO_VERSION_1: &str = "
DELETE FROM sigil_migrations WHERE version >= 2;
DROP TABLE client_assertion_ids;
DROP TABLE client_secret_uses;
DROP TABLE service_accounts;
DROP TRIGGER revocations_legacy_bound ON revocations;
DROP FUNCTION revocations_legacy_bound();
DROP INDEX revocations_expiry;
ALTER TABLE revocations DROP COLUMN expires_at;
DROP INDEX events_noise;
DROP INDEX events_audit_age;
ALTER TABLE events DROP COLUMN audit;
ALTER TABLE events DROP COLUMN occurred_at;
";

#[tokio::test]
async fn a_version_1_database_keeps_its_revocations_and_classifies_its_events() {
    let Some(postgres) = Postgres::shared() else { return };
    let url = postgres.fresh_database().await;
    let store = PgStore::connect(&url, None).await.expect("PostgreSQL store opens");
    sigil_server::domain::port::Store::close(&*store).await.expect("close");

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connects");
    tokio::spawn(connection);
    client.batch_execute(BACK_TO_VERSION_1).await.expect("back to version 1");
    // What version 1 wrote: entries without a bound, events without a class.
    let at = Timestamp::now().minus(Duration::from_secs(3600));
    let session = SessionId::generate();
    let body = serde_json::json!({
        "sequence": 1, "target": {"kind": "session", "id": session}, "at": at.as_millis()
    });
    client
        .execute("INSERT INTO revocations (sequence, at, body) VALUES (1, $1, $2)", &[&at.as_millis(), &body])
        .await
        .expect("old revocation");
    let old_events = [
        (1i64, EventRecord::new(EventKind::UserCreated).detail("old admin action")),
        (2, EventRecord::new(EventKind::LoginFailed).detail("old failure 1")),
        (3, EventRecord::new(EventKind::LoginFailed).detail("old failure 2")),
    ];
    for (sequence, mut event) in old_events {
        event.sequence = sequence as u64;
        let body = serde_json::to_value(&event).expect("encode");
        client
            .execute("INSERT INTO events (sequence, body) VALUES ($1, $2)", &[&sequence, &body])
            .await
            .expect("old event");
    }
    client.execute("SELECT setval('event_sequence', 3)", &[]).await.expect("sequence");
    client.execute("SELECT setval('revocation_sequence', 1)", &[]).await.expect("sequence");

    let store = PgStore::connect(&url, None).await.expect("the upgrade applies");
    use sigil_server::domain::port::{EventStore as _, RevocationLog as _};
    let live = store.revocations_live(Timestamp::now()).await.expect("live");
    assert_eq!(live.len(), 1, "the old revocation is still live: {live:?}");
    assert_eq!(live[0].target, RevocationTarget::Session(session));
    assert_eq!(live[0].expires_at, at.plus(LEGACY_ENTRY_LIFETIME), "the legacy bound, in column and body alike");
    store.purge_revocations(at.plus(LEGACY_ENTRY_LIFETIME).minus(Duration::from_secs(1))).await.expect("purge");
    assert_eq!(store.revocations_after(0, 10).await.expect("log").len(), 1, "not purged before the legacy bound");

    // An instance of the previous version still inserts as it did (a
    // rolling upgrade): the row gets the legacy bound, not an error.
    let body = serde_json::json!({
        "sequence": 2, "target": {"kind": "session", "id": SessionId::generate()}, "at": at.as_millis()
    });
    client
        .execute("INSERT INTO revocations (sequence, at, body) VALUES (2, $1, $2)", &[&at.as_millis(), &body])
        .await
        .expect("an old instance's insert still works");
    let live = store.revocations_live(Timestamp::now()).await.expect("live");
    assert_eq!(live.iter().map(|e| e.expires_at).collect::<Vec<_>>(), vec![at.plus(LEGACY_ENTRY_LIFETIME); 2]);

    // One noise event kept: both old failures go, the old admin action stays.
    let newer = EventRecord::new(EventKind::LoginFailed).detail("new failure");
    store.append_events(vec![newer]).await.expect("append");
    store.trim_events(1, Timestamp::now().minus(Duration::from_secs(3600))).await.expect("trim");
    let kept: Vec<String> = store.events_after(0, 10).await.expect("replay").into_iter().map(|e| e.detail).collect();
    assert_eq!(kept, ["old admin action", "new failure"]);
}
