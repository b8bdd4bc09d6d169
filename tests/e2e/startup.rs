//! Start-up of the real binary: host names as listen addresses, a data
//! directory already in use, a busy port, and errors said once, clearly.

use std::time::Duration;

use crate::process;

/// `--listen localhost:0` is a host name, resolved at start.
#[tokio::test]
async fn listen_addresses_accept_host_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = process::spawn(
        &[],
        &dir.path().join("data"),
        &["--listen", "localhost:0", "--http-listen", "localhost:0"],
        Some(sigil_tests::ADMIN_PASSWORD),
    );
    server.wait_listening().await;
    let (status, body) = sigil_tests::http_get(server.http(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let mut client =
        sigil_proto::pb::identity_service_client::IdentityServiceClient::new(sigil_tests::connect(server.grpc()).await);
    let session = sigil_tests::login(&mut client, "admin", sigil_tests::ADMIN_PASSWORD).await;
    assert!(sigil_tests::validate(&mut client, &session.access_token).await.valid);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.expect("exits").success());
}

/// A second server on the same data directory says which directory is held
/// by another `sigil-server`, once, and exits non-zero.
#[tokio::test]
async fn a_second_server_on_the_same_data_dir_names_the_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut first = process::start(&[], &data, &[]).await;
    let mut second = process::spawn(&[], &data, &[], Some(sigil_tests::ADMIN_PASSWORD));
    let status = second.wait_exit(Duration::from_secs(30)).await.expect("the second server exits");
    assert!(!status.success());
    let text = second.text();
    let expected = format!("data directory {} is in use by another sigil-server", data.display());
    assert_eq!(text.matches(&expected).count(), 1, "said once, naming the directory:\n{text}");
    assert!(!text.contains("could not acquire lock"), "no raw sled error:\n{text}");
    // The first one is unharmed.
    let (status, _) = sigil_tests::http_get(first.http(), "/healthz").await;
    assert_eq!(status, 200);
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).await.expect("exits").success());
}

/// A busy port fails the start before anything is created, with the cause
/// said once; the next start on a free port creates the admin and prints
/// the generated password.
#[tokio::test]
async fn a_busy_port_fails_before_the_bootstrap_admin_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").to_string();
    let mut server = process::spawn(&[], &data, &["--listen", &port], None);
    let status = server.wait_exit(Duration::from_secs(30)).await.expect("exits");
    assert!(!status.success());
    let text = server.text();
    assert_eq!(text.matches(&format!("cannot listen on {port}")).count(), 1, "said once:\n{text}");
    assert_eq!(text.matches("in use").count(), 1, "the cause is not repeated:\n{text}");
    assert!(!text.contains("Created user"), "{text}");

    let mut server = process::spawn(&[], &data, &[], None);
    server.wait_listening().await;
    assert!(
        server.wait_for_output("Created user \"admin\" (role admin) with password: ", Duration::from_secs(5)).await,
        "the generated password is printed on the first start that succeeds:\n{}",
        server.text()
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.expect("exits").success());
}
