//! A real Sigil server for the console's integration tests: in-process, on
//! ephemeral loopback ports, over a fresh data dir.

use std::net::SocketAddr;

use sigil_server::{Config, domain::Secret};

/// A server with `admin`'s password `password`; its data dir lives as long
/// as the returned guard.
pub(crate) async fn start(password: &str) -> (sigil_server::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let server = sigil_server::start(&config, Some(Secret::new(password.into()))).await.expect("server");
    (server, dir)
}
