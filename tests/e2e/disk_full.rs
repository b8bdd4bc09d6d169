//! The real `sigil-server` with its data directory on a small tmpfs that
//! fills up: writes answer UNAVAILABLE (none is acknowledged), the
//! `sigil.store` health says NOT_SERVING, `Validate` keeps answering; once
//! space is freed the server recovers by itself — in place, or by exiting
//! with status 75 (EX_TEMPFAIL) for its supervisor to restart it, as the
//! README documents. Needs root (to mount a tmpfs); skips, saying so,
//! otherwise.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use sigil_proto::pb::{
    self, ValidationFailure, identity_service_client::IdentityServiceClient, revoke_request::Target,
};
use sigil_tests::{ADMIN_PASSWORD, connect, eventually, login, login_request, validate};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::corruption::{Launch, launch};

/// The exit status the README documents for "the store failed and cannot
/// recover in place; restart me".
const EXIT_RESTART_STORE: i32 = 75;

/// A tmpfs mounted for one test, unmounted (lazily, so even while busy)
/// when dropped.
struct Tmpfs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "16m"), or says why it cannot.
    fn mount(size: &str) -> Result<Self, String> {
        if !rustix_is_root() {
            return Err("not running as root, cannot mount a tmpfs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Self { mount_point, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.mount_point).status();
    }
}

fn rustix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Fills the filesystem holding `path` with one file until a write fails.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let mut written = 0;
    for chunk in [1 << 20, 4096, 512] {
        let bytes = vec![0xa5u8; chunk];
        while file.write_all(&bytes).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}

async fn store_status(grpc_addr: std::net::SocketAddr) -> ServingStatus {
    let mut health = HealthClient::new(connect(grpc_addr).await);
    health
        .check(HealthCheckRequest { service: "sigil.store".into() })
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

fn revoke_request(session: &pb::AuthenticateResponse) -> pb::RevokeRequest {
    pb::RevokeRequest { target: Some(Target::AccessToken(session.access_token.clone())), reason: "stolen".into() }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_says_not_serving_and_recovers_once_space_returns() {
    let tmpfs = match Tmpfs::mount("24m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let data = tmpfs.mount_point.join("data");
    let Launch::Listening { mut child, grpc_addr, .. } = launch(&data, &[], &[]).await else {
        panic!("sigil-server starts on the tmpfs");
    };
    let mut client: IdentityServiceClient<Channel> = IdentityServiceClient::new(connect(grpc_addr).await);
    let stolen = login(&mut client, "admin", ADMIN_PASSWORD).await;
    assert_eq!(store_status(grpc_addr).await, ServingStatus::Serving);

    let filler = tmpfs.mount_point.join("filler");
    let filled = fill(&filler);
    eprintln!("filled the tmpfs with {filled} bytes");

    // Every write is refused, with UNAVAILABLE; none is acknowledged.
    let refused = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let login = client.authenticate(login_request("admin", ADMIN_PASSWORD));
            match tokio::time::timeout(Duration::from_secs(5), login).await {
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => Some(status),
                Ok(answer) => {
                    eprintln!("login while the disk is full: {answer:?}");
                    None
                }
                Err(_) => panic!("a login while the disk is full got no answer within 5 s"),
            }
        }
    })
    .await
    .expect("logins answer UNAVAILABLE within 10 s of the disk filling up");
    eprintln!("login refused: {refused:?}");
    // Twice: a repeated revocation must not be answered "already revoked"
    // from what the failed one left in memory.
    for attempt in 0..2 {
        let revoke = tokio::time::timeout(Duration::from_secs(5), client.revoke(revoke_request(&stolen)))
            .await
            .expect("the revocation is answered within 5 s")
            .expect_err("the revocation cannot commit");
        assert_eq!(revoke.code(), tonic::Code::Unavailable, "attempt {attempt}: {revoke:?}");
    }
    // Health tells the truth about the write path.
    let not_serving = eventually(Duration::from_secs(10), || async {
        (store_status(grpc_addr).await == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert!(not_serving.is_some(), "sigil.store is NOT_SERVING within 10 s while writes fail");
    // Validation keeps answering from memory.
    assert!(validate(&mut client, &stolen.access_token).await.valid);

    // Space returns: the server recovers by itself, in place or by exiting
    // with the documented status for its supervisor.
    std::fs::remove_file(&filler).expect("free the space");
    let recovered_in_place = eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        let stolen = &stolen;
        async move {
            let revoke = tokio::time::timeout(Duration::from_secs(5), client.revoke(revoke_request(stolen)));
            revoke.await.ok().and_then(Result::ok)
        }
    });
    let exited = child.wait();
    let grpc_addr = tokio::select! {
        revoked = recovered_in_place => {
            let revoked = revoked.expect("a revocation commits within 20 s of space returning, or the server exits");
            assert_eq!(revoked.into_inner().revoked_sessions, 1);
            eprintln!("recovered in place");
            grpc_addr
        }
        status = exited => {
            let status = status.expect("reaped");
            assert_eq!(status.code(), Some(EXIT_RESTART_STORE), "the documented exit status: {status}");
            eprintln!("exited with {status} for the supervisor; restarting");
            // The supervisor's part: start it again on the same data.
            let Launch::Listening { child: restarted, grpc_addr, .. } = launch(&data, &[], &[]).await else {
                panic!("the restarted server starts (no false alarm from the high-water mark)");
            };
            child = restarted;
            let mut client = IdentityServiceClient::new(connect(grpc_addr).await);
            assert!(validate(&mut client, &stolen.access_token).await.valid, "the refused revocation was never applied");
            let revoked = client.revoke(revoke_request(&stolen)).await.expect("the revocation commits now");
            assert_eq!(revoked.into_inner().revoked_sessions, 1);
            grpc_addr
        }
    };
    let mut client = IdentityServiceClient::new(connect(grpc_addr).await);
    assert_eq!(validate(&mut client, &stolen.access_token).await.failure(), ValidationFailure::SessionRevoked);
    login(&mut client, "admin", ADMIN_PASSWORD).await;
    let serving = eventually(Duration::from_secs(10), || async {
        (store_status(grpc_addr).await == ServingStatus::Serving).then_some(())
    })
    .await;
    assert!(serving.is_some(), "sigil.store is SERVING again");
    let _ = child.start_kill();
    let _ = child.wait().await;
}
