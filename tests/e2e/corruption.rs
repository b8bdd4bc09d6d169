//! The real `sigil-server` over a sled store damaged while it was stopped
//! (one flipped byte, a truncated log, a damaged high-water mark): it
//! refuses to start, naming the data directory, what is missing and the
//! ways out, instead of serving a store that silently forgot revocations or
//! generating a new signing key and admin over it. `--accept-data-loss`
//! starts anyway and records that in the audit trail. Clean and `kill -9`
//! restarts are never refused.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use sigil_proto::pb::{
    self, EventKind, ValidationFailure, admin_service_client::AdminServiceClient, revoke_request::Target,
};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, bound_grpc_addr, connect, login, server_binary, validate, with_bearer};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The file beside sled's own files that holds the high-water mark.
pub(crate) const HIGH_WATER_FILE: &str = "high-water.json";

/// How a launch of the real binary went.
pub(crate) enum Launch {
    /// It bound its ports (and still runs).
    Listening {
        /// The process (boxed: it is much larger than the other variant).
        child: Box<tokio::process::Child>,
        /// Its gRPC address.
        grpc_addr: std::net::SocketAddr,
        /// What it printed up to the "listening" line.
        output: String,
    },
    /// It exited before listening.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Everything it printed (stdout and stderr).
        output: String,
    },
}

/// Runs `sigil-server` on `data` with `flags` (and `env`) until it either
/// logs that it listens or exits, for at most 30 s.
pub(crate) async fn launch(data: &Path, flags: &[&str], env: &[(&str, &str)]) -> Launch {
    let mut child = tokio::process::Command::new(server_binary())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(flags)
        .arg("--data-dir")
        .arg(data)
        .env("SIGIL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SIGIL_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sigil-server starts");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            // Drained to the end (into the test's output once nobody
            // listens), so the server never writes into a closed pipe.
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[sigil-server] {line}");
                let _ = tx.send(line);
            }
        });
    }
    drop(lines_tx);
    let mut output = String::new();
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        // Both pipes close when the process exits.
        while let Some(line) = lines.recv().await {
            output.push_str(&line);
            output.push('\n');
            if let Some(grpc_addr) = bound_grpc_addr(&line) {
                return Some(grpc_addr);
            }
        }
        None
    })
    .await
    .expect("sigil-server listens or exits within 30 s");
    match outcome {
        Some(grpc_addr) => Launch::Listening { child: Box::new(child), grpc_addr, output },
        None => {
            let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .expect("exits once its output closed")
                .expect("child reaped");
            Launch::Exited { status, output }
        }
    }
}

/// Launches and expects a refusal: a non-zero exit before listening, with
/// a message naming the data directory and both ways out. A server that
/// starts instead is asked, to show what the damage did: whether
/// `revoked_access` (a token whose session was revoked) validates again,
/// or else what its JWKS now is.
async fn expect_refusal(data: &Path, what: &str, revoked_access: Option<&str>) -> String {
    match launch(data, &[], &[]).await {
        Launch::Listening { mut child, grpc_addr, .. } => {
            let mut client =
                sigil_proto::pb::identity_service_client::IdentityServiceClient::new(connect(grpc_addr).await);
            let seen = match revoked_access {
                Some(token) => format!("the revoked session now validates as {:?}", validate(&mut client, token).await),
                None => {
                    let jwks = client.get_jwks(pb::GetJwksRequest {}).await.map(|r| r.into_inner().jwks_json);
                    format!("its JWKS now: {jwks:?}")
                }
            };
            let _ = child.start_kill();
            panic!("{what}: sigil-server started over a damaged store instead of refusing ({seen})");
        }
        Launch::Exited { status, output } => {
            assert!(!status.success(), "{what}: a refusal exits non-zero: {status}");
            let dir = data.display().to_string();
            assert!(output.contains(&dir), "{what}: the refusal names the data directory {dir}:\n{output}");
            assert!(output.contains("backup"), "{what}: the refusal says to restore a backup:\n{output}");
            assert!(output.contains("--accept-data-loss"), "{what}: the refusal names the flag:\n{output}");
            output
        }
    }
}

/// Writes that later checks rely on: a revoked session, and the JWKS.
struct Written {
    revoked_access: String,
    jwks: String,
}

/// Starts the real binary on `data`, logs in twice, revokes one session,
/// and stops it cleanly (SIGTERM).
async fn write_and_stop(data: &Path) -> Written {
    let server = ChildServer::spawn(data).await;
    let mut client = server.client().await;
    let jwks = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    let doomed = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client
        .revoke(pb::RevokeRequest {
            target: Some(Target::AccessToken(doomed.access_token.clone())),
            reason: "stolen".into(),
        })
        .await
        .expect("revoked");
    assert_eq!(validate(&mut client, &doomed.access_token).await.failure(), ValidationFailure::SessionRevoked);
    assert!(server.terminate().await, "clean stop");
    Written { revoked_access: doomed.access_token, jwks }
}

/// sled's log file in a data directory.
fn sled_log(data: &Path) -> PathBuf {
    let log = data.join("db");
    assert!(log.is_file(), "sled keeps its log in {}", log.display());
    log
}

fn flip_byte(file: &Path, at: u64) {
    let mut bytes = std::fs::read(file).expect("read");
    let at = usize::try_from(at).expect("offset");
    assert!(at < bytes.len(), "{} has {} bytes", file.display(), bytes.len());
    bytes[at] ^= 0xff;
    std::fs::write(file, bytes).expect("write");
}

/// Every stored event, replayed from the start.
async fn all_events(grpc_addr: std::net::SocketAddr) -> Vec<pb::Event> {
    let mut client = sigil_proto::pb::identity_service_client::IdentityServiceClient::new(connect(grpc_addr).await);
    let token = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let mut admin = AdminServiceClient::new(connect(grpc_addr).await);
    let mut stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &token))
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    // The replay arrives at once; then the stream goes quiet.
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        match message.expect("no stream error") {
            Some(message) => events.extend(message.event),
            None => break,
        }
    }
    events
}

#[tokio::test]
async fn a_bad_first_byte_is_refused_instead_of_starting_over_with_a_new_key_and_admin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let written = write_and_stop(&data).await;
    flip_byte(&sled_log(&data), 0);

    let output = expect_refusal(&data, "bad first byte", None).await;
    assert!(output.to_lowercase().contains("empty"), "the refusal says the store opened empty:\n{output}");

    // The way out that accepts the loss: it starts, says so loudly, and the
    // audit trail records it.
    let Launch::Listening { mut child, grpc_addr, output } = launch(&data, &["--accept-data-loss"], &[]).await else {
        panic!("--accept-data-loss starts");
    };
    assert!(output.contains("accept"), "a loud log line says the loss was accepted:\n{output}");
    let events = all_events(grpc_addr).await;
    let accepted = events.iter().find(|e| e.kind() == EventKind::StoreLossAccepted);
    assert!(
        accepted.is_some_and(|e| !e.detail.is_empty()),
        "a STORE_LOSS_ACCEPTED event says what was lost: {events:?}"
    );
    let mut client = sigil_proto::pb::identity_service_client::IdentityServiceClient::new(connect(grpc_addr).await);
    let jwks = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    assert_ne!(jwks, written.jwks, "(the store really had lost its keys)");
    child.start_kill().expect("kill");
    child.wait().await.expect("reaped");

    // The loss was accepted once: the next start is an ordinary one.
    match launch(&data, &[], &[]).await {
        Launch::Listening { mut child, .. } => {
            child.start_kill().expect("kill");
            child.wait().await.expect("reaped");
        }
        Launch::Exited { output, .. } => panic!("after accepting the loss, a plain start works:\n{output}"),
    }
}

#[tokio::test]
async fn a_sled_log_that_lost_its_tail_is_refused_instead_of_reviving_revoked_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // A first run, then its log as it stood: the "old copy" of the tail.
    let _ = write_and_stop(&data).await;
    let log = sled_log(&data);
    let early = std::fs::metadata(&log).expect("log").len();
    // A second run revokes a session; then the log loses what it appended.
    let written = write_and_stop(&data).await;
    let late = std::fs::metadata(&log).expect("log").len();
    assert!(late > early, "the second run appended to the log ({early} → {late} bytes)");
    let file = std::fs::OpenOptions::new().write(true).open(&log).expect("open");
    file.set_len(early).expect("truncate");
    drop(file);

    let output = expect_refusal(&data, "truncated log", Some(&written.revoked_access)).await;
    assert!(output.contains("sequence"), "the refusal says which sequence is missing:\n{output}");
}

#[tokio::test]
async fn a_flipped_byte_mid_log_is_refused_instead_of_reviving_revoked_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let _ = write_and_stop(&data).await;
    let log = sled_log(&data);
    let early = std::fs::metadata(&log).expect("log").len();
    let written = write_and_stop(&data).await;
    // One byte of what the second run appended.
    flip_byte(&log, early + 16);

    expect_refusal(&data, "flipped byte", Some(&written.revoked_access)).await;
}

#[tokio::test]
async fn a_damaged_high_water_mark_is_refused_naming_it_and_a_missing_one_is_recreated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let _ = write_and_stop(&data).await;
    let mark = data.join(HIGH_WATER_FILE);
    assert!(mark.is_file(), "the high-water mark is kept in {}", mark.display());

    std::fs::write(&mark, b"{\"revocation_sequence\": 12, \"eve").expect("damage");
    let output = expect_refusal(&data, "damaged mark", None).await;
    assert!(output.contains(HIGH_WATER_FILE), "the refusal names the damaged file:\n{output}");

    // No mark at all beside a store with data: the first start after an
    // upgrade. It starts, and writes the mark as it opens the store (so a
    // kill right after is enough to find it).
    std::fs::remove_file(&mark).expect("remove");
    let server = ChildServer::spawn(&data).await;
    server.kill_9().await;
    assert!(mark.is_file(), "the mark is written again");
    match launch(&data, &[], &[]).await {
        Launch::Listening { mut child, .. } => {
            child.start_kill().expect("kill");
            child.wait().await.expect("reaped");
        }
        Launch::Exited { output, .. } => panic!(
            "the recreated mark matches the store:
{output}"
        ),
    }
}

#[tokio::test]
async fn clean_and_kill_9_restarts_are_never_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut revoked: Vec<String> = Vec::new();
    for round in 0..6 {
        // ChildServer::spawn panics if the server refuses to start.
        let server = ChildServer::spawn(&data).await;
        let mut client = server.client().await;
        for token in &revoked {
            assert_eq!(
                validate(&mut client, token).await.failure(),
                ValidationFailure::SessionRevoked,
                "round {round}"
            );
        }
        // Writes in flight when the process dies: concurrent logins and
        // revocations, some acknowledged, some not.
        let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut writers = Vec::new();
        for _ in 0..4 {
            let mut client = client.clone();
            let acked_tx = acked_tx.clone();
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for _ in 0..5 {
                    let Ok(session) = client.authenticate(sigil_tests::login_request("admin", ADMIN_PASSWORD)).await
                    else {
                        break;
                    };
                    let session = session.into_inner();
                    let revoke = pb::RevokeRequest {
                        target: Some(Target::AccessToken(session.access_token.clone())),
                        reason: "round".into(),
                    };
                    if client.revoke(revoke).await.is_err() {
                        break;
                    }
                    acknowledged.push(session.access_token);
                    let _ = acked_tx.send(());
                }
                acknowledged
            }));
        }
        if round % 2 == 0 {
            for writer in writers {
                revoked.extend(writer.await.expect("writer"));
            }
            assert!(server.terminate().await, "round {round}: clean stop");
        } else {
            // Kill while the writers run (once the first revocation was
            // acknowledged); only what they saw acknowledged counts.
            acked.recv().await.expect("a first revocation acknowledged");
            server.kill_9().await;
            for writer in writers {
                revoked.extend(writer.await.expect("writer"));
            }
        }
    }
    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    for token in &revoked {
        assert_eq!(validate(&mut client, token).await.failure(), ValidationFailure::SessionRevoked);
    }
    server.kill_9().await;
}

#[tokio::test]
async fn damaged_sled_files_it_cannot_open_are_refused_pointing_to_a_backup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let _ = write_and_stop(&data).await;
    // sled's `conf` ends in a checksum; one flipped byte and sled refuses
    // it (and blames an old sled version).
    flip_byte(&data.join("conf"), 5);
    match launch(&data, &[], &[]).await {
        Launch::Listening { mut child, .. } => {
            let _ = child.start_kill();
            panic!("sigil-server started over a damaged sled config");
        }
        Launch::Exited { status, output } => {
            assert!(!status.success());
            let dir = data.display().to_string();
            assert!(output.contains(&dir) && output.contains("damaged"), "names the directory and why:\n{output}");
            assert!(output.contains("backup"), "says to restore a backup:\n{output}");
        }
    }
}
