//! A real identity core over a real sled store in a temporary directory,
//! built once per fuzzing process, with a genuine access token and an admin
//! bearer for the targets to start from.

// Each target uses part of the fixture.
#![allow(dead_code)]

use std::sync::{Arc, LazyLock};

use sigil_server::{
    Config, SledStore,
    domain::{Identity, Secret, identity::Login},
};

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub identity: Arc<Identity>,
    /// A genuine access token of the bootstrap admin.
    pub admin_token: String,
    _dir: tempfile::TempDir,
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (identity, admin_token) = runtime.block_on(async {
        let store = SledStore::open(dir.path()).expect("sled");
        let identity = Arc::new(Identity::open(store, Config::default().identity_settings()).await.expect("identity"));
        let password = Secret::new("fuzz-admin-password".to_string());
        identity.bootstrap_admin(Some(password.clone())).await.expect("admin");
        let login = Login {
            username: "admin".into(),
            password,
            device_name: None,
            audience: None,
            client_address: "127.0.0.1:1".into(),
            client_ip: None,
            user_agent: "fuzz".into(),
        };
        let issued = identity.authenticate(login).await.expect("login");
        (identity, issued.access_token.into_exposed())
    });
    Fixture { runtime, identity, admin_token, _dir: dir }
});
