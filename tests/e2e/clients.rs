//! Clients generated from `proto/` in other languages, run against a real
//! server: they must do everything without reading any Rust.

use sigil_tests::{ADMIN_PASSWORD, TestServer};

/// The Python example (`examples/python`), run by `examples/python/run.sh`
/// with the interpreter in `SIGIL_PYTHON` (which `.ci/run` prepares with
/// grpcio-tools in a local folder).
#[tokio::test]
async fn the_python_example_client_logs_in_validates_refreshes_and_revokes() {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        println!("SKIPPED: SIGIL_PYTHON is not set (.ci/run sets it after installing grpcio-tools locally)");
        return;
    };
    let server = TestServer::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python/run.sh");
    let address = server.grpc_addr().to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .env("PYTHON", python)
            .env("SIGIL_ADDR", address)
            .env("SIGIL_PASSWORD", ADMIN_PASSWORD)
            .output()
            .expect("bash runs")
    })
    .await
    .expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{stderr}");
    for line in [
        "services:",
        "logged in",
        "refreshed",
        "revoked 1 session(s)",
        "VALIDATION_FAILURE_SESSION_REVOKED",
        "UNAUTHENTICATED",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("sigil.v1.AdminService") && stdout.contains("grpc.health.v1.Health"), "{stdout}");
}

/// PyJWT's `PyJWKClient`, configured only by the discovery document,
/// verifies a Sigil token offline (`examples/python/verify_offline.py`).
#[tokio::test]
async fn pyjwt_verifies_tokens_by_discovery_and_jwks_alone() {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        println!("SKIPPED: SIGIL_PYTHON is not set (.ci/run sets it after installing PyJWT locally)");
        return;
    };
    let server = TestServer::start().await;
    let session = sigil_tests::login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python/verify_offline.py");
    let base = format!("http://{}", server.http_addr());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("SIGIL_HTTP", base)
            .env("SIGIL_TOKEN", &session.access_token)
            .output()
            .expect("python runs")
    })
    .await
    .expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("verified offline: sub {}", session.user_id)), "{stdout}");
    assert!(stdout.contains("tampered token refused"), "{stdout}");
}

/// The Node.js example (`examples/node/client.js`, @grpc/grpc-js with
/// @grpc/proto-loader), with the modules in `SIGIL_NODE_PATH` (which
/// `.ci/run` installs into a local folder).
#[tokio::test]
async fn the_node_example_client_logs_in_validates_and_revokes() {
    let Ok(node_path) = std::env::var("SIGIL_NODE_PATH") else {
        println!("SKIPPED: SIGIL_NODE_PATH is not set (.ci/run sets it after installing @grpc/grpc-js locally)");
        return;
    };
    let server = TestServer::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/node/client.js");
    let address = server.grpc_addr().to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .env("NODE_PATH", node_path)
            .env("SIGIL_ADDR", address)
            .env("SIGIL_PASSWORD", ADMIN_PASSWORD)
            .output()
            .expect("node runs")
    })
    .await
    .expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for line in [
        "logged in",
        "valid token of admin",
        "revoked 1 session(s)",
        "VALIDATION_FAILURE_SESSION_REVOKED",
        "UNAUTHENTICATED",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

/// The Prometheus client library's own text parser reads `/metrics`
/// (`examples/python/check_metrics.py`) and finds every sigil_* family.
#[tokio::test]
async fn prometheus_clients_parser_reads_the_metrics_page() {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        println!("SKIPPED: SIGIL_PYTHON is not set (.ci/run sets it after installing prometheus_client locally)");
        return;
    };
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = sigil_tests::login(&mut client, "admin", ADMIN_PASSWORD).await;
    for _ in 0..2 {
        assert!(sigil_tests::validate(&mut client, &session.access_token).await.valid);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python/check_metrics.py");
    let base = format!("http://{}", server.http_addr());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).env("SIGIL_HTTP", base).output().expect("python runs")
    })
    .await
    .expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let valid: u64 = stdout
        .rsplit("valid validations: ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout}"));
    assert!(valid >= 2, "{stdout}");
}
