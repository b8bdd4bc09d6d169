//! No user enumeration (OWASP ASVS V6.3, the Authentication cheat sheet):
//! unknown user, wrong password and disabled user get one status and one
//! message, in the same time; a locked account answers the same whether
//! the name exists or not. Passwords are hashed whole.

use std::time::{Duration, Instant};

use sigil_proto::pb;
use sigil_tests::{TestServer, login, login_request, with_bearer};
use tonic::{Code, Status};

async fn server_with_a_disabled_user() -> TestServer {
    let server = TestServer::start_with(|config| {
        config.lockout_threshold = 1000;
    })
    .await;
    server.create_user("erin", "erin-password", &[]).await;
    let fred = server.create_user("fred", "fred-password", &[]).await;
    let (mut admin, token) = server.admin().await;
    admin
        .update_user(with_bearer(
            pb::UpdateUserRequest { user_id: fred.id.to_string(), disabled: Some(true), roles: None },
            &token,
        ))
        .await
        .expect("fred disabled");
    server
}

#[tokio::test]
async fn unknown_user_wrong_password_and_disabled_user_get_one_answer() {
    let server = server_with_a_disabled_user().await;
    let mut client = server.client().await;
    let answers: Vec<Status> = vec![
        client.authenticate(login_request("nobody", "whatever")).await.expect_err("unknown"),
        client.authenticate(login_request("erin", "not-erin-password")).await.expect_err("wrong"),
        client.authenticate(login_request("fred", "fred-password")).await.expect_err("disabled, right password"),
    ];
    for status in &answers {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid username or password");
        assert!(status.metadata().get("retry-after").is_none());
    }
}

#[tokio::test]
async fn a_locked_name_answers_alike_whether_or_not_it_exists() {
    let server = TestServer::start_with(|config| {
        config.lockout_threshold = 2;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
    })
    .await;
    server.create_user("gina", "gina-password", &[]).await;
    let mut client = server.client().await;
    for name in ["gina", "ghost"] {
        for _ in 0..2 {
            client.authenticate(login_request(name, "guess")).await.expect_err("wrong");
        }
    }
    let real = client.authenticate(login_request("gina", "gina-password")).await.expect_err("locked");
    let ghost = client.authenticate(login_request("ghost", "gina-password")).await.expect_err("locked");
    for status in [&real, &ghost] {
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.metadata().get("retry-after").is_some());
    }
    assert_eq!(real.message(), ghost.message());
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn every_credential_failure_takes_the_same_time() {
    let server = server_with_a_disabled_user().await;
    let mut client = server.client().await;
    let kinds = [
        ("unknown user", "nobody", "whatever"),
        ("wrong password", "erin", "nope"),
        ("disabled", "fred", "fred-password"),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut rejected_early = Vec::new();
    // Interleaved rounds, so that machine noise falls on every kind alike.
    for round in 0..21 {
        // The order rotates too: no kind is always first after a pause.
        for i in (0..kinds.len()).map(|k| (k + round) % kinds.len()) {
            let (_, username, password) = kinds[i];
            let started = Instant::now();
            client.authenticate(login_request(username, password)).await.expect_err("refused");
            samples[i].push(started.elapsed());
        }
        let started = Instant::now();
        client.authenticate(login_request("erin", "")).await.expect_err("empty password");
        rejected_early.push(started.elapsed());
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let (fastest, slowest) = (medians.iter().min().copied(), medians.iter().max().copied());
    let (fastest, slowest) = (fastest.expect("samples"), slowest.expect("samples"));
    println!("median per kind: {:?}", kinds.iter().map(|k| k.0).zip(&medians).collect::<Vec<_>>());
    assert!(
        slowest.as_secs_f64() < 2.0 * fastest.as_secs_f64(),
        "credential failures are distinguishable by time: {medians:?}"
    );
    // The measurement can tell work from no work: a request refused before
    // any hashing is far quicker. (Without the dummy hash for unknown
    // users, that is how "unknown user" would look.)
    let early = median(rejected_early);
    assert!(early * 4 < fastest, "no-hash path {early:?} vs credential failures {medians:?}");
}

#[tokio::test]
async fn long_passphrases_are_hashed_whole() {
    let server = TestServer::start().await;
    let passphrase: String = (0..1000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    server.create_user("hana", &passphrase, &[]).await;
    let mut client = server.client().await;
    login(&mut client, "hana", &passphrase).await;
    let mut last_changed = passphrase.clone();
    last_changed.pop();
    last_changed.push('!');
    for (what, guess) in [("the last byte changed", last_changed.as_str()), ("its first 72 bytes", &passphrase[..72])] {
        let refused = client.authenticate(login_request("hana", guess)).await.expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}");
    }
}
