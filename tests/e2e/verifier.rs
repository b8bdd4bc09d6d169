//! `sigil-verifier` following real servers: the example service
//! (`examples/rust-service`) behind its layer refuses what was revoked,
//! disabled or distrusted at once; a killed server makes it stale within
//! `max_staleness` (fail closed, or the `Validate` fallback); a restart on
//! the same data resumes without a snapshot, a new store sends one; two
//! instances on PostgreSQL; and the Python verifier (`examples/python/verifier.py`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sigil_example_service::pb::{GreetRequest, greeter_client::GreeterClient};
use sigil_proto::pb::{self, revoke_request::Target};
use sigil_tests::{
    ADMIN_PASSWORD, ChildServer, TestServer, connect, eventually, login, postgres::Postgres, with_bearer,
};
use sigil_verifier::{Refusal, ValidationFailure, Verifier, VerifierConfig, WhenStale};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

use crate::verifier_parity::{LoginBearer, follow, verifier_login, verifier_token};

/// A revocation reaches the example service well within this.
const PROPAGATION: Duration = Duration::from_secs(2);

/// The example service behind the layer, on an ephemeral port.
async fn example_service(verifier: Arc<Verifier>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = sigil_example_service::protected(verifier, "sigil");
    tokio::spawn(sigil_example_service::serve(listener, app, std::future::pending()));
    addr
}

/// `Greet` on the example service with `token` as the bearer.
async fn greet(addr: SocketAddr, token: Option<&str>) -> Result<String, tonic::Status> {
    let mut client = GreeterClient::new(connect(addr).await);
    let request = sigil_tests::maybe_bearer(GreetRequest {}, token);
    client.greet(request).await.map(|r| r.into_inner().message)
}

/// `GET /hello` on the example service: the status, the `WWW-Authenticate` header, the body.
async fn hello(addr: SocketAddr, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    hello_with(addr, &auth).await
}

/// `GET /hello` with these header lines (each ending in CRLF).
async fn hello_with(addr: SocketAddr, headers: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /hello HTTP/1.1\r\nhost: example\r\n{headers}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let challenge = response
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("www-authenticate:").then(|| l[17..].trim().to_string()))
        .unwrap_or_default();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, challenge, body)
}

/// Waits until `Greet` with `token` fails with `code`.
async fn refused_with(addr: SocketAddr, token: &str, code: Code) {
    let refused =
        eventually(PROPAGATION, || async { (greet(addr, Some(token)).await.err()?.code() == code).then_some(()) });
    assert!(refused.await.is_some(), "still {:?} after {PROPAGATION:?}", greet(addr, Some(token)).await);
}

#[tokio::test]
async fn the_example_service_refuses_revoked_disabled_and_distrusted_tokens_and_takes_rotated_keys() {
    let server = TestServer::start().await;
    let verifier = follow(server.grpc_addr(), verifier_login(&server).await).await;
    let service = example_service(verifier.clone()).await;
    let (mut admin, admin_token) = server.admin().await;
    let alice = server.create_user("alice", "alice-password", &["reader"]).await;
    server.create_user("mallory", "mallory-password", &["writer"]).await;
    let alice_login = || async { login(&mut server.client().await, "alice", "alice-password").await };

    // The hostile cases first: no token, garbage, no required role.
    assert_eq!(greet(service, None).await.expect_err("no token").code(), Code::Unauthenticated);
    let (status, challenge, _) = hello(service, None).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));
    let refused = greet(service, Some("not.a.token")).await.expect_err("garbage");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("malformed token"), "{refused:?}");
    let (status, challenge, _) = hello(service, Some("not.a.token")).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#), "{challenge}");
    let mallory = login(&mut server.client().await, "mallory", "mallory-password").await;
    assert_eq!(greet(service, Some(&mallory.access_token)).await.expect_err("no role").code(), Code::PermissionDenied);
    let (status, challenge, _) = hello(service, Some(&mallory.access_token)).await;
    assert_eq!(status, 403);
    assert!(challenge.starts_with(r#"Bearer error="insufficient_scope""#), "{challenge}");

    // A valid token: both halves answer with the caller.
    let session = alice_login().await;
    assert_eq!(greet(service, Some(&session.access_token)).await.expect("greets"), "hello, alice");
    assert_eq!(hello(service, Some(&session.access_token)).await, (200, String::new(), "hello, alice".into()));

    // Revoke the session: the next calls are refused.
    let mut client = server.client().await;
    let revoke =
        pb::RevokeRequest { target: Some(Target::AccessToken(session.access_token.clone())), reason: "e2e".into() };
    client.revoke(revoke).await.expect("revoke");
    refused_with(service, &session.access_token, Code::Unauthenticated).await;
    assert_eq!(hello(service, Some(&session.access_token)).await.0, 401);

    // Rotate: tokens of the new key are accepted, the old key's still are.
    let before = alice_login().await;
    let rotate = pb::RotateSigningKeyRequest { distrust_previous: false };
    admin.rotate_signing_key(with_bearer(rotate, &admin_token)).await.expect("rotate");
    let after = alice_login().await;
    let accepted = eventually(PROPAGATION, || async { greet(service, Some(&after.access_token)).await.ok() });
    assert_eq!(accepted.await.as_deref(), Some("hello, alice"), "a token of the new key");
    assert!(greet(service, Some(&before.access_token)).await.is_ok(), "the old key still verifies its tokens");

    // Distrust: the previous keys' tokens are refused at once.
    let distrust = pb::RotateSigningKeyRequest { distrust_previous: true };
    admin.rotate_signing_key(with_bearer(distrust, &admin_token)).await.expect("distrust");
    refused_with(service, &after.access_token, Code::Unauthenticated).await;
    refused_with(service, &before.access_token, Code::Unauthenticated).await;

    // Disable the user: refused. (The admin's token went with the distrusted key.)
    let (mut admin, admin_token) = server.admin().await;
    let current = alice_login().await;
    assert!(
        eventually(PROPAGATION, || async { greet(service, Some(&current.access_token)).await.ok() }).await.is_some()
    );
    let disable = pb::UpdateUserRequest { user_id: alice.id.to_string(), disabled: Some(true), ..Default::default() };
    admin.update_user(with_bearer(disable, &admin_token)).await.expect("disable");
    refused_with(service, &current.access_token, Code::Unauthenticated).await;
    assert_eq!(
        verifier.verify(&current.access_token, None).err(),
        Some(Refusal::Invalid(ValidationFailure::UserDisabled))
    );
}

/// Two `authorization` headers are refused whichever comes first, over
/// HTTP (400 `invalid_request`, RFC 6750 §3.1: "uses more than one method
/// for including an access token") and gRPC (`INVALID_ARGUMENT`): the
/// layer would vouch for one token while the service behind it, or a
/// proxy, may act on the other.
#[tokio::test]
async fn the_example_service_refuses_two_authorization_headers() {
    let server = TestServer::start().await;
    let verifier = follow(server.grpc_addr(), verifier_login(&server).await).await;
    let service = example_service(verifier).await;
    server.create_user("alice", "alice-password", &["reader"]).await;
    let alice = login(&mut server.client().await, "alice", "alice-password").await.access_token;
    assert_eq!(hello(service, Some(&alice)).await.0, 200, "one header passes");

    for (first, second) in [(alice.as_str(), "not.a.token"), ("not.a.token", alice.as_str()), (&alice, &alice)] {
        let headers = format!("authorization: Bearer {first}\r\nauthorization: Bearer {second}\r\n");
        let (status, challenge, _) = hello_with(service, &headers).await;
        assert_eq!(status, 400, "two headers, {first:.12}… then {second:.12}…");
        assert!(challenge.starts_with(r#"Bearer error="invalid_request""#), "{challenge}");
        assert!(challenge.contains("one authorization header"), "{challenge}");

        let mut request = tonic::Request::new(GreetRequest {});
        for token in [first, second] {
            let value = format!("Bearer {token}").parse().expect("metadata value");
            request.metadata_mut().append("authorization", value);
        }
        let refused = GreeterClient::new(connect(service).await).greet(request).await.expect_err("two headers");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("one authorization header"), "{refused:?}");
    }
}

/// Starts the real binary on `data_dir` at `addr` (port 0: any).
async fn spawn_at(data_dir: &std::path::Path, addr: SocketAddr) -> ChildServer {
    let listen = addr.to_string();
    ChildServer::spawn_with(data_dir, &["--listen", &listen, "--revocation-heartbeat", "200ms"]).await
}

#[tokio::test]
async fn a_killed_server_makes_the_verifier_stale_and_a_restart_resumes_without_a_snapshot() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = spawn_at(data.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let addr = server.grpc_addr;
    let max_staleness = Duration::from_millis(1000);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let config = VerifierConfig::new(endpoint, LoginBearer { addr, username: "admin", password: ADMIN_PASSWORD })
        .max_staleness(max_staleness);
    let verifier = Verifier::start(config);
    verifier.wait_until_current(Duration::from_secs(10)).await.expect("current");
    let token = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await.access_token;
    assert!(verifier.verify(&token, None).is_ok());
    // One revocation, so that there is a sequence to resume from (0 asks
    // for a snapshot).
    let spare = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await.access_token;
    let revoke = pb::RevokeRequest { target: Some(Target::AccessToken(spare.clone())), reason: "e2e".into() };
    server.client().await.revoke(revoke).await.expect("revoke");
    refused_then_session_revoked(&verifier, &spare).await;
    let first = verifier.state();
    assert!(first.sequence > 0, "{first:?}");
    assert_eq!((first.snapshots, first.connections, first.connected), (1, 1, true), "{first:?}");

    // Killed: within max_staleness (plus one heartbeat of slack) every
    // token is refused as stale.
    server.kill_9().await;
    let killed = tokio::time::Instant::now();
    let stale = eventually(max_staleness * 3, || async {
        (verifier.verify(&token, None).err() == Some(Refusal::Stale)).then_some(())
    });
    assert!(stale.await.is_some(), "still judging locally: {:?}", verifier.state());
    let took = killed.elapsed();
    assert!(took <= max_staleness + Duration::from_millis(500), "stale after {took:?}");
    assert!(took >= max_staleness - Duration::from_millis(300), "stale too early, after {took:?}");
    assert!(!verifier.state().current);

    // The same data back on the same port: resumed from its sequence, no snapshot.
    let server = spawn_at(data.path(), addr).await;
    verifier.wait_until_current(Duration::from_secs(10)).await.expect("current again");
    let resumed = verifier.state();
    assert_eq!(resumed.snapshots, 1, "resumed without a snapshot: {resumed:?}");
    assert!(resumed.connections >= 2, "{resumed:?}");
    assert_eq!(resumed.epoch, first.epoch);
    assert!(resumed.sequence >= first.sequence, "{resumed:?}");
    assert!(verifier.verify(&token, None).is_ok());
    assert_eq!(verifier.verify(&spare, None).err(), Some(Refusal::Invalid(ValidationFailure::SessionRevoked)));
    // And it follows live again.
    let revoke = pb::RevokeRequest { target: Some(Target::AccessToken(token.clone())), reason: "e2e".into() };
    server.client().await.revoke(revoke).await.expect("revoke");
    refused_then_session_revoked(&verifier, &token).await;

    // Another store (a new data directory): a new epoch, a full snapshot,
    // and the old store's keys are gone.
    server.kill_9().await;
    let other = tempfile::tempdir().expect("temp dir");
    let _server = spawn_at(other.path(), addr).await;
    let reloaded = eventually(Duration::from_secs(10), || async {
        let state = verifier.state();
        (state.current && state.snapshots == 2).then_some(state)
    });
    let reloaded = reloaded.await.unwrap_or_else(|| panic!("no new snapshot: {:?}", verifier.state()));
    assert_ne!(reloaded.epoch, first.epoch, "a new store has a new epoch");
    assert_eq!(verifier.verify(&token, None).err(), Some(Refusal::Invalid(ValidationFailure::UnknownKey)));
}

#[tokio::test]
async fn a_stale_verifier_falls_back_to_validate_when_configured_and_refuses_otherwise() {
    let server = TestServer::start().await;
    // A credential without role `verifier`: the stream is refused, so the
    // verifier never becomes current.
    server.create_user("nobody", "nobody-password", &[]).await;
    let nobody = login(&mut server.client().await, "nobody", "nobody-password").await.access_token;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr())).expect("endpoint");
    let closed = Verifier::start(VerifierConfig::new(endpoint.clone(), nobody.clone()));
    let falling_back =
        Verifier::start(VerifierConfig::new(endpoint, nobody.clone()).when_stale(WhenStale::RemoteValidate));
    assert_eq!(closed.wait_until_current(Duration::from_millis(500)).await, Err(Refusal::Stale));

    let session = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    assert_eq!(closed.verify_or_fallback(&session.access_token, None).await.err(), Some(Refusal::Stale));
    let claims = falling_back.verify_or_fallback(&session.access_token, None).await.expect("Validate says valid");
    assert_eq!(claims.claims.username, "admin");
    let wrong = falling_back.verify_or_fallback(&session.access_token, Some("billing")).await.err();
    assert_eq!(wrong, Some(Refusal::Invalid(ValidationFailure::WrongAudience)));
    let revoke =
        pb::RevokeRequest { target: Some(Target::AccessToken(session.access_token.clone())), reason: "e2e".into() };
    server.client().await.revoke(revoke).await.expect("revoke");
    let revoked = falling_back.verify_or_fallback(&session.access_token, None).await.err();
    assert_eq!(revoked, Some(Refusal::Invalid(ValidationFailure::SessionRevoked)));
    // The synchronous path never calls out: still stale.
    assert_eq!(falling_back.verify(&session.access_token, None).err(), Some(Refusal::Stale));

    // The example service behind a stale, fail-closed verifier: UNAVAILABLE / 503.
    let service = example_service(Arc::new(closed)).await;
    let fresh = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    assert_eq!(greet(service, Some(&fresh.access_token)).await.expect_err("stale").code(), Code::Unavailable);
    assert_eq!(hello(service, Some(&fresh.access_token)).await.0, 503);
}

#[tokio::test]
async fn a_revocation_on_one_postgres_instance_reaches_a_verifier_following_the_other() {
    let Some(postgres) = Postgres::shared() else { return };
    let url = postgres.fresh_database().await;
    let dirs = [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    let first = ChildServer::spawn_with(dirs[0].path(), &["--database-url", &url]).await;
    let second = ChildServer::spawn_with(dirs[1].path(), &["--database-url", &url]).await;
    let verifier =
        follow(second.grpc_addr, login(&mut second.client().await, "admin", ADMIN_PASSWORD).await.access_token).await;
    let session = login(&mut first.client().await, "admin", ADMIN_PASSWORD).await;
    assert!(verifier.verify(&session.access_token, None).is_ok());
    let revoke =
        pb::RevokeRequest { target: Some(Target::AccessToken(session.access_token.clone())), reason: "e2e".into() };
    first.client().await.revoke(revoke).await.expect("revoke on the first instance");
    refused_then_session_revoked(&verifier, &session.access_token).await;
}

#[tokio::test]
async fn the_python_verifier_follows_the_stream_and_refuses_a_revoked_token() {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must provide SIGIL_PYTHON (grpcio, PyJWT)");
        println!("skipped: SIGIL_PYTHON is not set (.ci/run sets it after installing grpcio and PyJWT locally)");
        return;
    };
    let server = TestServer::start().await;
    let bearer = verifier_token(&server).await;
    let session = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    // The Python code of revocation.proto, generated as the README says.
    let generated = tempfile::tempdir().expect("temp dir");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python");
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let protoc = tokio::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc", &format!("-I{proto}")])
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .arg("sigil/v1/revocation.proto")
        .status()
        .await
        .expect("protoc runs");
    assert!(protoc.success(), "grpc_tools.protoc failed");
    let mut child = tokio::process::Command::new(&python)
        .arg(format!("{examples}/verifier.py"))
        .env("PYTHONPATH", generated.path())
        .env("SIGIL_ADDR", server.grpc_addr().to_string())
        .env("SIGIL_VERIFIER_TOKEN", bearer)
        .env("SIGIL_TOKEN", &session.access_token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    use tokio::io::AsyncBufReadExt as _;
    let mut seen = Vec::new();
    let mut next_line = async || {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let line = line.expect("the Python verifier answers in time").expect("read").expect("a line");
        seen.push(line.clone());
        line
    };
    while next_line().await != "verdict: valid" {}
    let revoke =
        pb::RevokeRequest { target: Some(Target::AccessToken(session.access_token.clone())), reason: "e2e".into() };
    server.client().await.revoke(revoke).await.expect("revoke");
    while !next_line().await.starts_with("verdict: VALIDATION_FAILURE_SESSION_REVOKED") {}
    child.kill().await.expect("stopped");
    assert!(seen.iter().any(|l| l.starts_with("snapshot ")), "{seen:?}");
}

/// Waits for `token`, just revoked with `Revoke`, to be refused, and then
/// for the refusal to be Validate's `SESSION_REVOKED`. The revoke wrote two
/// entries (the token, then its session) and the verifier may answer
/// between applying them, so the first refusal may be `TOKEN_REVOKED`.
async fn refused_then_session_revoked(verifier: &Verifier, token: &str) {
    let refused = eventually(PROPAGATION, || async { verifier.verify(token, None).err() });
    assert!(matches!(refused.await, Some(Refusal::Invalid(_))), "the revoked token is still accepted");
    let settled = eventually(PROPAGATION, || async {
        (verifier.verify(token, None).err() == Some(Refusal::Invalid(ValidationFailure::SessionRevoked))).then_some(())
    });
    assert!(
        settled.await.is_some(),
        "never Validate's verdict SESSION_REVOKED: {:?}",
        verifier.verify(token, None).err()
    );
}
