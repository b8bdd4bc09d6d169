//! The store conformance suite (`sigil_server::conformance`) run
//! against each engine on a fresh store.

use sigil_server::{PgStore, SledStore, conformance};
use sigil_tests::postgres::Postgres;

#[tokio::test]
async fn sled_engine_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("sled opens");
    conformance::run_all(store).await;
}

#[tokio::test]
async fn postgres_engine_passes_the_store_conformance_suite() {
    let Some(postgres) = Postgres::shared() else { return };
    let store = PgStore::connect(&postgres.fresh_database().await, None).await.expect("PostgreSQL store opens");
    conformance::run_all(store).await;
}
