//! The store conformance suite (`sigil_server::store::conformance`) run
//! against each engine on a fresh store.

use sigil_server::store::{conformance, sled_store::SledStore};

#[tokio::test]
async fn sled_engine_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("sled opens");
    conformance::run_all(store).await;
}
