//! Start-up failures of the real `sigil-console` binary end with one clear
//! line and a non-zero exit, never a panic or a debug dump. (This
//! integration test also makes `cargo test --workspace` build the binary
//! that the end-to-end tmux test drives.)

use std::{net::SocketAddr, process::Command};

use sigil_server::{Config, domain::Secret};

fn console(server: &str, password: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigil-console"))
        .args(["--server", server, "--username", "admin"])
        .env("SIGIL_PASSWORD", password)
        .output()
        .expect("runs")
}

fn one_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(stderr.trim_end().lines().count(), 1, "exactly one line: {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Status {"), "{stderr}");
    stderr
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let output = console(&format!("http://127.0.0.1:{port}"), "whatever");
    assert!(!output.status.success());
    let line = one_line(&output);
    assert!(line.starts_with(&format!("sigil-console: cannot reach http://127.0.0.1:{port}:")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

#[tokio::test]
async fn a_wrong_password_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let server = sigil_server::start(&config, Some(Secret::new("right-password".into()))).await.expect("server");
    let address = format!("http://{}", server.grpc_addr);
    let output = tokio::task::spawn_blocking(move || console(&address, "wrong-password")).await.expect("ran");
    assert!(!output.status.success());
    let line = one_line(&output);
    assert_eq!(line.trim_end(), "sigil-console: login failed: invalid username or password");
    server.shutdown().await.expect("shutdown");
}
