//! The conformance checks of [`ServiceAccountStore`]: records round-trip
//! and page, replaces are conditional on the version read and carry their
//! revocation entry, secret uses are merged and go with their secret, and
//! an assertion id is accepted once until it is purged.

use std::{sync::Arc, time::Duration};

use crate::domain::{
    ServiceAccountId, Timestamp,
    port::{RevocationCause, Store, StoreError},
    revocation::RevocationTarget,
    service_account::{NewClientSecret, ServiceAccountRecord},
};

/// Runs every check in turn.
pub(super) async fn run_all(store: Arc<dyn Store>) {
    service_accounts_round_trip_and_page(&*store).await;
    replaces_are_conditional_and_carry_their_revocation(&*store).await;
    secret_uses_are_merged_and_go_with_their_secret(&*store).await;
    an_assertion_id_is_used_once_until_purged(store).await;
}

fn account(name: &str) -> ServiceAccountRecord {
    let now = Timestamp::now();
    let secret = NewClientSecret::generate(now, None).expect("random");
    ServiceAccountRecord {
        id: ServiceAccountId::generate(),
        name: name.to_string(),
        roles: vec!["reader".into()],
        audiences: vec!["orders".into()],
        scopes: vec!["read".into()],
        disabled: false,
        created_at: now,
        updated_at: now,
        version: 1,
        secrets: vec![secret.record],
        key: None,
    }
}

async fn service_accounts_round_trip_and_page(store: &dyn Store) {
    let first = account("first");
    std::thread::sleep(Duration::from_millis(2));
    let second = account("second");
    store.create_service_account(&first).await.expect("create");
    store.create_service_account(&second).await.expect("create");
    let read = store.service_account(first.id).await.expect("read").expect("found");
    assert_eq!((read.name.as_str(), read.secrets.clone()), ("first", first.secrets.clone()));
    assert!(store.service_account(ServiceAccountId::generate()).await.expect("read").is_none());
    let page = store.list_service_accounts(None, 1).await.expect("list");
    let after = page.last().map(|a| a.id);
    let rest = store.list_service_accounts(after, 10).await.expect("list");
    let ids: Vec<_> = page.iter().chain(&rest).map(|a| a.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order");
    assert!(ids.contains(&first.id) && ids.contains(&second.id));
}

async fn replaces_are_conditional_and_carry_their_revocation(store: &dyn Store) {
    let original = account("replaced");
    store.create_service_account(&original).await.expect("create");
    let mut changed = original.clone();
    changed.version = 2;
    changed.disabled = true;
    let at = Timestamp::now();
    let target = RevocationTarget::ServiceAccountNotBefore(original.id);
    let cause = RevocationCause { at, expires_at: at.plus(Duration::from_secs(60)), reason: "disabled".into() };
    let entry = store
        .replace_service_account(original.id, 1, Some(&changed), Some((target, cause.clone())))
        .await
        .expect("replace")
        .expect("an entry");
    assert_eq!(entry.target, target);
    assert!(store.revocations_live(at).await.expect("live").iter().any(|e| e.sequence == entry.sequence));
    let stored = store.service_account(original.id).await.expect("read").expect("found");
    assert!(stored.disabled && stored.version == 2);

    // A second writer that read version 1 writes nothing, nor its entry.
    let before = store.revocations_after(entry.sequence, 10).await.expect("after").len();
    let stale = store.replace_service_account(original.id, 1, Some(&original), Some((target, cause))).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    assert_eq!(store.revocations_after(entry.sequence, 10).await.expect("after").len(), before);
    assert!(store.service_account(original.id).await.expect("read").expect("found").disabled);

    // Deleting is conditional too.
    assert!(matches!(store.replace_service_account(original.id, 1, None, None).await, Err(StoreError::Conflict)));
    store.replace_service_account(original.id, 2, None, None).await.expect("delete");
    assert!(store.service_account(original.id).await.expect("read").is_none());
    let again = store.replace_service_account(original.id, 2, None, None).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "deleting twice: {again:?}");
}

async fn secret_uses_are_merged_and_go_with_their_secret(store: &dyn Store) {
    let mut stored = account("used");
    let extra = NewClientSecret::generate(Timestamp::now(), None).expect("random").record;
    stored.secrets.push(extra.clone());
    store.create_service_account(&stored).await.expect("create");
    let used = stored.secrets[0].id;
    let at = Timestamp::now();
    store.note_secret_used(used, at).await.expect("noted");
    store.note_secret_used(used, at.minus(Duration::from_secs(5))).await.expect("an older use never lowers it");
    let read = store.service_account(stored.id).await.expect("read").expect("found");
    assert_eq!(read.secrets[0].last_used_at, Some(at));
    assert_eq!(read.secrets[1].last_used_at, None);
    let listed = store.list_service_accounts(None, 100).await.expect("list");
    let listed = listed.iter().find(|a| a.id == stored.id).expect("listed");
    assert_eq!(listed.secrets[0].last_used_at, Some(at));

    // The used secret is revoked: a secret of the same id added back has no use.
    let mut without = read.clone();
    without.version = 2;
    without.secrets.retain(|s| s.id != used);
    store.replace_service_account(stored.id, 1, Some(&without), None).await.expect("replace");
    let mut back = without.clone();
    back.version = 3;
    back.secrets.push(stored.secrets[0].clone());
    store.replace_service_account(stored.id, 2, Some(&back), None).await.expect("replace");
    let read = store.service_account(stored.id).await.expect("read").expect("found");
    assert_eq!(read.secrets.iter().find(|s| s.id == used).and_then(|s| s.last_used_at), None);
}

async fn an_assertion_id_is_used_once_until_purged(store: Arc<dyn Store>) {
    let client = ServiceAccountId::generate();
    let other = ServiceAccountId::generate();
    let now = Timestamp::now();
    let soon = now.plus(Duration::from_secs(60));
    // Concurrent presentations of one assertion: exactly one is fresh.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.use_assertion_id(client, "jti-1", soon).await.expect("recorded") })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        fresh += usize::from(task.await.expect("joined"));
    }
    assert_eq!(fresh, 1, "a jti is fresh exactly once");
    assert!(store.use_assertion_id(other, "jti-1", soon).await.expect("recorded"), "per client");
    let past = now.minus(Duration::from_secs(1));
    assert!(store.use_assertion_id(client, "jti-old", past).await.expect("recorded"));
    let purged = store.purge_assertion_ids(now, 100).await.expect("purged");
    assert!(purged >= 1, "{purged}");
    assert!(store.use_assertion_id(client, "jti-old", soon).await.expect("recorded"), "forgotten once expired");
    assert!(!store.use_assertion_id(client, "jti-1", soon).await.expect("recorded"), "a live one stays");
}
