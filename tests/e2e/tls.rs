//! TLS and mTLS on the gRPC listener, with certificates made in the test:
//! a TLS client gets through, a plaintext one does not; with a client CA,
//! only clients holding a certificate it signed get through. The console
//! speaks TLS with `--ca-cert`.

use std::{path::Path, process::Command};

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login_request, make_test_pki as make_pki};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn tls_server(pki: &Path, mutual: bool) -> TestServer {
    let pki = pki.to_path_buf();
    TestServer::start_with(move |config| {
        config.tls_cert = Some(pki.join("server.pem"));
        config.tls_key = Some(pki.join("server.key"));
        if mutual {
            config.tls_client_ca = Some(pki.join("ca.pem"));
        }
    })
    .await
}

async fn call(server: &TestServer, tls: Option<ClientTlsConfig>) -> Result<pb::AuthenticateResponse, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", server.grpc_addr())).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    let request = login_request("admin", ADMIN_PASSWORD);
    IdentityServiceClient::new(channel)
        .authenticate(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{s:?}"))
}

fn ca(pki: &Path) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(pki.join("ca.pem")).expect("ca")))
}

#[tokio::test]
async fn tls_clients_get_through_and_plaintext_ones_do_not() {
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path());
    let server = tls_server(pki.path(), false).await;
    let login = call(&server, Some(ca(pki.path()))).await.expect("TLS login");
    assert!(!login.access_token.is_empty());
    assert!(call(&server, None).await.is_err(), "plaintext is refused");
}

#[tokio::test]
async fn with_a_client_ca_only_certified_clients_get_through() {
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path());
    let server = tls_server(pki.path(), true).await;
    assert!(call(&server, Some(ca(pki.path()))).await.is_err(), "no client certificate, no entry");
    let read = |name: &str| std::fs::read(pki.path().join(name)).expect("pem");
    let identity = Identity::from_pem(read("client.pem"), read("client.key"));
    call(&server, Some(ca(pki.path()).identity(identity))).await.expect("mTLS login");
}

#[tokio::test]
async fn the_console_speaks_tls_with_ca_cert() {
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path());
    let server = tls_server(pki.path(), false).await;
    let console = sigil_tests::console_binary();
    let address = format!("https://{}", server.grpc_addr());
    let run = |args: Vec<String>| {
        let console = console.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(console).args(args).env("SIGIL_PASSWORD", "wrong-password").output().expect("console runs")
        })
    };
    let ca_path = pki.path().join("ca.pem").display().to_string();
    // Through TLS to the login check: the server answered.
    let output = run(vec!["--server".into(), address.clone(), "--ca-cert".into(), ca_path]).await.expect("ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end(), "sigil-console: login failed: invalid username or password");
    // Without the CA it says what is missing.
    let output = run(vec!["--server".into(), address]).await.expect("ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("https:// needs --ca-cert"), "{stderr}");
}

#[tokio::test]
async fn the_http_listener_serves_https_with_the_same_certificate() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path());
    let server = tls_server(pki.path(), false).await;
    let ca_path = pki.path().join("ca.pem");
    let https = format!("https://{}/healthz", server.http_addr());
    let plain = format!("http://{}/healthz", server.http_addr());
    let (with_tls, without) = tokio::task::spawn_blocking(move || {
        let curl = |args: &[&str]| {
            Command::new("curl").args(["-sS", "--max-time", "5"]).args(args).output().expect("curl runs")
        };
        (curl(&["--cacert", ca_path.to_str().expect("utf-8 path"), &https]), curl(&[&plain]))
    })
    .await
    .expect("ran");
    assert!(with_tls.status.success(), "{:?} {}", with_tls.status, String::from_utf8_lossy(&with_tls.stderr));
    assert_eq!(String::from_utf8_lossy(&with_tls.stdout).trim(), "ok");
    assert!(
        !without.status.success() || !String::from_utf8_lossy(&without.stdout).contains("ok"),
        "plaintext HTTP is refused"
    );
}
