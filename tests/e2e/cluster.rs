//! Several real `sigil-server` processes on one throwaway PostgreSQL
//! database: what one instance commits, every instance enforces.

use std::time::Duration;

use futures::future::join_all;
use sigil_proto::pb::{self, EventKind, ValidationFailure, revoke_request::Target};
use sigil_tests::{
    ADMIN_PASSWORD, ChildServer, eventually, login, login_request, postgres::Postgres, validate, with_bearer,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Server processes sharing one fresh database (the revocation stream's
/// tests use it too).
pub(crate) struct Cluster {
    pub(crate) servers: Vec<ChildServer>,
    url: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` instances at once on a fresh database (so they race for
    /// the migrations, the first key and the bootstrap admin).
    pub(crate) async fn start(postgres: &Postgres, n: usize) -> Self {
        let url = postgres.fresh_database().await;
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let servers = join_all(dirs.iter().map(|dir| spawn(dir, &url))).await;
        Self { servers, url, _dirs: dirs }
    }

    pub(crate) async fn client(
        &self,
        i: usize,
    ) -> pb::identity_service_client::IdentityServiceClient<tonic::transport::Channel> {
        self.servers[i].client().await
    }
}

async fn spawn(dir: &tempfile::TempDir, url: &str) -> ChildServer {
    ChildServer::spawn_with(dir.path(), &["--database-url", url]).await
}

async fn revoke_session(
    client: &mut pb::identity_service_client::IdentityServiceClient<tonic::transport::Channel>,
    access_token: &str,
) {
    let counts = client
        .revoke(pb::RevokeRequest { target: Some(Target::AccessToken(access_token.into())), reason: "test".into() })
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(counts.revoked_sessions, 1);
}

#[tokio::test]
async fn instances_starting_together_share_one_schema_one_key_and_one_admin() {
    let Some(postgres) = Postgres::shared() else { return };
    let cluster = Cluster::start(postgres, 3).await;
    let mut key_sets = Vec::new();
    for i in 0..3 {
        let mut client = cluster.client(i).await;
        key_sets.push(client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json);
        login(&mut client, "admin", ADMIN_PASSWORD).await;
    }
    assert!(key_sets.iter().all(|k| k == &key_sets[0]), "one signing key for all: {key_sets:?}");
    let created: usize =
        cluster.servers.iter().map(|s| s.output.lock().expect("log").matches("created bootstrap admin").count()).sum();
    assert!(created <= 1, "the admin was bootstrapped once, not {created} times");
}

#[tokio::test]
async fn a_login_on_one_instance_validates_and_refreshes_on_another() {
    let Some(postgres) = Postgres::shared() else { return };
    let cluster = Cluster::start(postgres, 2).await;
    let (mut a, mut b) = (cluster.client(0).await, cluster.client(1).await);
    let session = login(&mut a, "admin", ADMIN_PASSWORD).await;
    assert!(validate(&mut b, &session.access_token).await.valid, "B validates A's token");
    let rotated = b
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("B refreshes A's session")
        .into_inner();
    assert!(validate(&mut a, &rotated.access_token).await.valid, "A validates B's token");

    // The old refresh token, replayed on A: reuse, and the family dies everywhere.
    let reused = a.refresh(pb::RefreshRequest { refresh_token: session.refresh_token }).await.expect_err("reuse");
    assert_eq!(reused.code(), Code::Unauthenticated);
    for client in [&mut a, &mut b] {
        let refused = eventually(Duration::from_secs(2), || {
            let mut client = client.clone();
            let token = rotated.access_token.clone();
            async move { (!validate(&mut client, &token).await.valid).then_some(()) }
        })
        .await;
        assert!(refused.is_some(), "the family's newest access token is refused on every instance");
    }
    let refused = b.refresh(pb::RefreshRequest { refresh_token: rotated.refresh_token }).await.expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn one_refresh_token_presented_to_two_instances_at_once_rotates_once_and_kills_the_family() {
    let Some(postgres) = Postgres::shared() else { return };
    let cluster = Cluster::start(postgres, 2).await;
    let (mut a, b) = (cluster.client(0).await, cluster.client(1).await);
    for trial in 0..5 {
        let session = login(&mut a, "admin", ADMIN_PASSWORD).await;
        let request = || pb::RefreshRequest { refresh_token: session.refresh_token.clone() };
        let (mut to_a, mut to_b) = (a.clone(), b.clone());
        let (on_a, on_b) = tokio::join!(to_a.refresh(request()), to_b.refresh(request()));
        let winners: Vec<pb::RefreshResponse> =
            [on_a, on_b].into_iter().filter_map(Result::ok).map(tonic::Response::into_inner).collect();
        assert_eq!(winners.len(), 1, "trial {trial}: exactly one instance rotated");
        let winner = &winners[0];
        let refused = eventually(Duration::from_secs(2), || {
            let (mut a, mut b) = (a.clone(), b.clone());
            let token = winner.access_token.clone();
            async move {
                let (va, vb) = (validate(&mut a, &token).await, validate(&mut b, &token).await);
                (va.failure() == ValidationFailure::SessionRevoked && vb.failure() == ValidationFailure::SessionRevoked)
                    .then_some(())
            }
        })
        .await;
        assert!(refused.is_some(), "trial {trial}: the reuse revoked the family on both instances");
        let refresh = a.refresh(pb::RefreshRequest { refresh_token: winner.refresh_token.clone() }).await;
        assert_eq!(refresh.expect_err("family revoked").code(), Code::Unauthenticated, "trial {trial}");
    }
}

#[tokio::test]
async fn a_revocation_on_one_instance_is_enforced_by_all_within_the_catch_up_interval() {
    let Some(postgres) = Postgres::shared() else { return };
    let cluster = Cluster::start(postgres, 3).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    let mut delays = Vec::new();
    for trial in 0..10 {
        let session = login(&mut clients[0], "admin", ADMIN_PASSWORD).await;
        for other in &mut clients[1..] {
            assert!(validate(other, &session.access_token).await.valid, "trial {trial}: valid before");
        }
        revoke_session(&mut clients[0], &session.access_token).await;
        let revoked_at = tokio::time::Instant::now();
        assert_eq!(validate(&mut clients[0], &session.access_token).await.failure(), ValidationFailure::SessionRevoked);
        for other in &mut clients[1..] {
            loop {
                if validate(other, &session.access_token).await.failure() == ValidationFailure::SessionRevoked {
                    break;
                }
                // Within one catch-up interval (1 s by default) even if every
                // notification were lost.
                assert!(revoked_at.elapsed() < Duration::from_millis(1500), "trial {trial}: not enforced in time");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        delays.push(revoked_at.elapsed());
    }
    delays.sort();
    println!("revocation enforced on every instance after: median {:?}, max {:?}", delays[5], delays[9]);
}

#[tokio::test]
async fn key_rotations_and_events_on_one_instance_reach_the_others() {
    let Some(postgres) = Postgres::shared() else { return };
    let cluster = Cluster::start(postgres, 2).await;
    let (mut a, mut b) = (cluster.client(0).await, cluster.client(1).await);
    let admin_a = login(&mut a, "admin", ADMIN_PASSWORD).await.access_token;
    let admin_b = login(&mut b, "admin", ADMIN_PASSWORD).await.access_token;
    let mut admin_api_a =
        pb::admin_service_client::AdminServiceClient::new(sigil_tests::connect(cluster.servers[0].grpc_addr).await);
    let mut admin_api_b =
        pb::admin_service_client::AdminServiceClient::new(sigil_tests::connect(cluster.servers[1].grpc_addr).await);
    let mut watch_b = admin_api_b
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: None }, &admin_b))
        .await
        .expect("watch on B")
        .into_inner();

    let rotated = admin_api_a
        .rotate_signing_key(with_bearer(pb::RotateSigningKeyRequest::default(), &admin_a))
        .await
        .expect("rotate on A")
        .into_inner();
    let kid = rotated.key.expect("new key").kid;
    let signed_with_new_key = login(&mut a, "admin", ADMIN_PASSWORD).await;
    let valid_on_b = eventually(Duration::from_secs(2), || {
        let mut b = b.clone();
        let token = signed_with_new_key.access_token.clone();
        async move { validate(&mut b, &token).await.valid.then_some(()) }
    })
    .await;
    assert!(valid_on_b.is_some(), "B learned A's new key {kid}");
    let jwks = b.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    assert!(jwks.contains(&kid), "B publishes the new key");

    let seen = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(message) = watch_b.message().await.expect("stream ok") {
            let event = message.event.expect("event");
            if event.kind() == EventKind::SessionCreated && event.session_id == signed_with_new_key.session_id {
                return event.sequence;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("B's watcher saw the login made on A");
    assert!(seen > 0);
}

#[tokio::test]
async fn an_instance_killed_with_sigkill_loses_nothing_and_catches_up_when_restarted() {
    let Some(postgres) = Postgres::shared() else { return };
    let mut cluster = Cluster::start(postgres, 2).await;
    let mut b = cluster.client(1).await;
    let on_b = login(&mut b, "admin", ADMIN_PASSWORD).await;
    let victim = cluster.servers.pop().expect("B");
    victim.kill_9().await;

    let mut a = cluster.client(0).await;
    assert!(validate(&mut a, &on_b.access_token).await.valid, "B's acknowledged login survives its death");
    a.refresh(pb::RefreshRequest { refresh_token: on_b.refresh_token }).await.expect("and refreshes on A");
    let revoked_while_down = login(&mut a, "admin", ADMIN_PASSWORD).await;
    revoke_session(&mut a, &revoked_while_down.access_token).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let restarted = spawn(&dir, &cluster.url).await;
    let mut b = restarted.client().await;
    assert_eq!(
        validate(&mut b, &revoked_while_down.access_token).await.failure(),
        ValidationFailure::SessionRevoked,
        "the restarted instance enforces what was revoked while it was down"
    );
}

#[tokio::test]
async fn losing_postgres_refuses_writes_keeps_validating_and_recovers_without_a_restart() {
    let Some(postgres) = Postgres::start_new() else { return };
    let url = postgres.fresh_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = spawn(&dir, &url).await;
    let mut client = server.client().await;
    let mut health = HealthClient::new(sigil_tests::connect(server.grpc_addr).await);
    let store_status = |mut health: HealthClient<tonic::transport::Channel>| async move {
        health
            .check(HealthCheckRequest { service: "sigil.store".into() })
            .await
            .map(|r| r.into_inner().status())
            .unwrap_or(ServingStatus::Unknown)
    };
    assert_eq!(store_status(health.clone()).await, ServingStatus::Serving);
    let held = login(&mut client, "admin", ADMIN_PASSWORD).await;

    // Light load throughout: logins, each kept if (and only if) acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (mut client, stop) = (client.clone(), stop.clone());
        async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.authenticate(login_request("admin", ADMIN_PASSWORD)).await {
                    Ok(response) => acknowledged.push(response.into_inner()),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "a refused write says UNAVAILABLE: {status:?}");
                        refused += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (acknowledged, refused)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    postgres.stop();
    let down = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            client
                .authenticate(login_request("admin", ADMIN_PASSWORD))
                .await
                .err()
                .filter(|s| s.code() == Code::Unavailable)
        }
    })
    .await;
    assert!(down.is_some(), "logins answer UNAVAILABLE while PostgreSQL is down");
    assert!(validate(&mut client, &held.access_token).await.valid, "Validate keeps answering from memory");
    let revoke = client
        .revoke(pb::RevokeRequest { target: Some(Target::AccessToken(held.access_token.clone())), reason: "x".into() })
        .await;
    assert_eq!(revoke.expect_err("no revocation without the database").code(), Code::Unavailable);
    assert!(validate(&mut client, &held.access_token).await.valid, "an unacknowledged revocation changed nothing");
    let refresh = client.refresh(pb::RefreshRequest { refresh_token: held.refresh_token.clone() }).await;
    assert_eq!(refresh.expect_err("no rotation without the database").code(), Code::Unavailable);
    let not_serving = eventually(Duration::from_secs(5), || {
        let health = health.clone();
        async move { (store_status(health).await == ServingStatus::NotServing).then_some(()) }
    })
    .await;
    assert!(not_serving.is_some(), "the write path reports NOT_SERVING");
    let overall = health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving, "the service as a whole still validates");

    postgres.start();
    let back = eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        async move { client.authenticate(login_request("admin", ADMIN_PASSWORD)).await.ok() }
    })
    .await;
    assert!(back.is_some(), "logins work again without a restart");
    let serving = eventually(Duration::from_secs(5), || {
        let health = health.clone();
        async move { (store_status(health).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    assert!(serving.is_some(), "the write path reports SERVING again");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, refused) = load.await.expect("load task");
    assert!(refused > 0, "the load saw the outage");
    for (i, session) in acknowledged.iter().enumerate() {
        let rotated = client.refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() }).await;
        assert!(rotated.is_ok(), "acknowledged login {i} of {} was lost: {rotated:?}", acknowledged.len());
    }
    client.refresh(pb::RefreshRequest { refresh_token: held.refresh_token }).await.expect("the held session is intact");
}

#[tokio::test]
async fn with_a_database_ca_every_connection_to_postgres_is_tls() {
    let pki = tempfile::tempdir().expect("temp dir");
    sigil_tests::make_test_pki(pki.path());
    let read = |name: &str| std::fs::read_to_string(pki.path().join(name)).expect("pem");
    let Some(postgres) = Postgres::start_with_tls(&read("server.pem"), &read("server.key")) else { return };
    let url = format!("{}?sslmode=require", postgres.fresh_database().await);
    let ca = pki.path().join("ca.pem");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::spawn_with(
        dir.path(),
        &["--database-url", &url, "--database-ca", ca.to_str().expect("utf-8 path")],
    )
    .await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client.refresh(pb::RefreshRequest { refresh_token: session.refresh_token }).await.expect("writes over TLS");

    // Every connection Sigil holds (pool and LISTEN) is encrypted.
    let (db, connection) =
        tokio_postgres::connect(&postgres.url("postgres"), tokio_postgres::NoTls).await.expect("inspect pg_stat_ssl");
    tokio::spawn(connection);
    let rows = db
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'sigil-server'",
            &[],
        )
        .await
        .expect("query");
    assert!(rows.len() >= 2, "the pool and the listener are connected: {} connections", rows.len());
    assert!(rows.iter().all(|row| row.get::<_, bool>(0)), "a connection without TLS");

    // Without the CA, sslmode=require is refused at start with a clear line;
    // with a CA that did not sign the server's certificate, too.
    let refused = std::process::Command::new(sigil_tests::server_binary())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--database-url", &url])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--database-ca"), "{refused:?}");
    let other = tempfile::tempdir().expect("temp dir");
    sigil_tests::make_test_pki(other.path());
    let wrong_ca = other.path().join("ca.pem");
    let untrusted = std::process::Command::new(sigil_tests::server_binary())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--database-url", &url])
        .args(["--database-ca", wrong_ca.to_str().expect("utf-8 path")])
        .output()
        .expect("runs");
    assert!(!untrusted.status.success(), "a server certificate from another CA is refused");
}
