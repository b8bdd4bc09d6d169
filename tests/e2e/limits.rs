//! Every listener has limits, and saturation never spins: the real binary
//! against idle and slowloris connections, requests that never send their
//! body, more streams than a connection may carry, a connection flood, and
//! the process's file-descriptor limit. Throughout, an established client's
//! `Validate` stays fast and a new client's `/healthz` answers.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sigil_proto::pb::identity_service_client::IdentityServiceClient;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::process;

/// The default handshake timeout (10 s) plus a generous margin.
const HANDSHAKE_AND_MARGIN: Duration = Duration::from_secs(10 + 10);

/// CPU (in cores) a saturated but idle server may use: far below a spinning
/// accept loop (a whole core), far above what waiting costs.
const NOT_SPINNING: f64 = 0.5;

/// Reads until the server closes the connection; `Some(elapsed)` if it did
/// within `limit`. While waiting, `dribble` (when given) sends one byte a
/// second, as a slowloris client does.
async fn closed_within(mut stream: TcpStream, dribble: Option<&[u8]>, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next = 0;
    let mut buffer = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Some(start.elapsed()),
                Ok(_) => {}
            },
            _ = tick.tick(), if dribble.is_some() => {
                let bytes = dribble.unwrap_or_default();
                if next < bytes.len() {
                    if stream.write_all(&bytes[next..next + 1]).await.is_err() {
                        return Some(start.elapsed());
                    }
                    next += 1;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Silent connections and slowloris clients are closed on both ports.
#[tokio::test]
async fn idle_and_slowloris_connections_are_closed_on_both_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = process::start(&[], &dir.path().join("data"), &[]).await;
    let slow_http = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let slow_grpc = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let cases = [
        ("silent gRPC", server.grpc(), None),
        ("silent HTTP", server.http(), None),
        ("slowloris gRPC", server.grpc(), Some(&slow_grpc[..])),
        ("slowloris HTTP", server.http(), Some(&slow_http[..])),
    ];
    let results = futures::future::join_all(cases.iter().map(|(name, addr, dribble)| async move {
        let stream = TcpStream::connect(addr).await.expect("connects");
        (*name, closed_within(stream, *dribble, HANDSHAKE_AND_MARGIN * 2).await)
    }))
    .await;
    for (name, closed) in results {
        let closed = closed.unwrap_or_else(|| panic!("{name}: still open after {:?}", HANDSHAKE_AND_MARGIN * 2));
        assert!(closed <= HANDSHAKE_AND_MARGIN, "{name}: closed only after {closed:?}");
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// An HTTP/2 connection to the gRPC port, driven by the `h2` crate.
async fn h2_connection(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// A gRPC request whose headers are sent and whose body never is.
pub(crate) fn headers_only(addr: SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/sigil.v1.IdentityService/Validate"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// The gRPC port advertises SETTINGS_MAX_CONCURRENT_STREAMS, and a request
/// whose body never comes is answered (not left pending) after the request
/// timeout.
#[tokio::test]
async fn grpc_limits_streams_and_ends_requests_that_never_send_a_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = process::start(&[], &dir.path().join("data"), &[]).await;
    let send = h2_connection(server.grpc()).await;
    let mut ready = send.clone().ready().await.expect("ready");
    let advertised = sigil_tests::eventually(Duration::from_secs(5), || {
        let max = ready.current_max_send_streams();
        async move { (max <= 1000).then_some(max) }
    })
    .await;
    assert!(advertised.is_some(), "no stream limit advertised: {}", ready.current_max_send_streams());

    let (response, _body) = ready.send_request(headers_only(server.grpc()), false).expect("stream opened");
    // Default request timeout 10 s, plus a margin.
    let answer = tokio::time::timeout(Duration::from_secs(20), response).await;
    let response = answer.expect("a request without a body is not left pending").expect("answered, not reset");
    // Trailers-only: CANCELLED ("Timeout expired", tonic's status for its timeout).
    let status = response.headers().get("grpc-status").and_then(|s| s.to_str().ok());
    assert_eq!(status, Some("1"), "{response:?}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// An established client, ready before the attack.
struct Bystander {
    client: IdentityServiceClient<tonic::transport::Channel>,
    token: String,
}

impl Bystander {
    async fn new(server: &process::Server) -> Self {
        let mut client = IdentityServiceClient::new(sigil_tests::connect(server.grpc()).await);
        let token = sigil_tests::login(&mut client, "admin", sigil_tests::ADMIN_PASSWORD).await.access_token;
        Self { client, token }
    }

    /// `Validate` answers, and fast (generous bound).
    async fn validates_fast(&mut self) {
        let start = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(3), sigil_tests::validate(&mut self.client, &self.token))
            .await
            .expect("Validate answers within 3 s under attack");
        assert!(answer.valid, "{answer:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}

/// A new client's `/healthz` answers within a few seconds.
async fn healthz_answers(addr: SocketAddr) {
    let answer = tokio::time::timeout(Duration::from_secs(5), sigil_tests::http_get(addr, "/healthz"))
        .await
        .expect("/healthz answers within 5 s under attack");
    assert_eq!(answer, (200, "ok\n".to_string()));
}

/// An attacker holds every connection the gRPC port allows, each with every
/// stream it allows left pending, and keeps knocking for more: the
/// established client's `Validate` stays fast, `/healthz` answers, the
/// refusals are logged and the server does not spin.
#[tokio::test]
async fn a_saturated_grpc_port_still_serves_established_clients_and_healthz() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = process::start(
        &[],
        &dir.path().join("data"),
        &["--max-connections", "16", "--max-concurrent-streams", "32", "--request-timeout", "60s"],
    )
    .await;
    let mut bystander = Bystander::new(&server).await;
    let mut held = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..15 {
        let tcp = TcpStream::connect(server.grpc()).await.expect("connects");
        let Ok(Ok((send, connection))) = tokio::time::timeout(Duration::from_secs(5), h2::client::handshake(tcp)).await
        else {
            continue;
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let Ok(mut ready) = send.ready().await else { continue };
        for _ in 0..32 {
            if let Ok((response, body)) = ready.send_request(headers_only(server.grpc()), false) {
                held.push((response, body));
            }
        }
        senders.push(ready);
    }
    // More connections than the cap: refused, not queued without bound.
    let mut knocking = Vec::new();
    for _ in 0..50 {
        if let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(server.grpc())).await {
            knocking.push(tcp);
        }
    }
    bystander.validates_fast().await;
    healthz_answers(server.http()).await;
    let cpu = server.cpu_over_a_second().await;
    assert!(cpu < NOT_SPINNING, "the server spins at {cpu:.2} cores while saturated");
    bystander.validates_fast().await;
    assert!(
        server.wait_for_output("connection limit reached", Duration::from_secs(5)).await,
        "refusals are logged:\n{}",
        server.text()
    );
    drop((held, senders, knocking));
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// At the process's file-descriptor limit (here 256, soft = hard, as under
/// a unit that keeps systemd's small default), a connection flood on the
/// gRPC port locks out neither `/healthz` nor the established client, and
/// the server does not spin on failed accepts.
#[tokio::test]
async fn a_connection_flood_at_the_fd_limit_neither_locks_out_healthz_nor_spins() {
    if !process::have_prlimit() {
        eprintln!("skipped: prlimit (util-linux) cannot run programs here");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = process::start(&["prlimit", "--nofile=256:256", "--"], &dir.path().join("data"), &[]).await;
    let mut bystander = Bystander::new(&server).await;
    let mut flood = Vec::new();
    for _ in 0..600 {
        if let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(server.grpc())).await {
            flood.push(tcp);
        }
    }
    healthz_answers(server.http()).await;
    bystander.validates_fast().await;
    let cpu = server.cpu_over_a_second().await;
    assert!(cpu < NOT_SPINNING, "the server spins at {cpu:.2} cores at the fd limit");
    healthz_answers(server.http()).await;
    drop(flood);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// A quiet WatchEvents stream outlives both the request timeout (which
/// bounds unary calls only) and the idle timeout (the client's answers to
/// keepalive pings count as traffic).
#[tokio::test]
async fn quiet_watch_streams_outlive_the_request_and_idle_timeouts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--request-timeout", "1s", "--idle-timeout", "2s", "--keepalive-interval", "500ms"];
    let mut server = process::start(&[], &dir.path().join("data"), &flags).await;
    let channel = sigil_tests::connect(server.grpc()).await;
    let token =
        sigil_tests::login(&mut IdentityServiceClient::new(channel.clone()), "admin", sigil_tests::ADMIN_PASSWORD)
            .await
            .access_token;
    let mut admin = sigil_proto::pb::admin_service_client::AdminServiceClient::new(channel);
    let mut events = admin
        .watch_events(sigil_tests::with_bearer(sigil_proto::pb::WatchEventsRequest { after_sequence: None }, &token))
        .await
        .expect("watch opens")
        .into_inner();
    // Longer than both timeouts: what is tested is time passing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut other = IdentityServiceClient::new(sigil_tests::connect(server.grpc()).await);
    sigil_tests::login(&mut other, "admin", sigil_tests::ADMIN_PASSWORD).await;
    let event = tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("an event arrives");
    assert!(matches!(event, Ok(Some(_))), "the stream ended: {event:?}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// Connections beyond the cap are closed at once; a connection past its
/// opening that then goes silent is closed after the idle timeout (HTTP/1
/// keep-alive and an HTTP/2 peer that answers nothing); a connection older
/// than max_connection_age is sent away (GOAWAY) even while it answers pings.
#[tokio::test]
async fn the_connection_cap_idle_timeout_and_connection_age_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--max-connections",
        "2",
        "--handshake-timeout",
        "60s",
        "--idle-timeout",
        "2s",
        "--keepalive-interval",
        "1s",
        "--max-connection-age",
        "3s",
    ];
    let mut server = process::start(&[], &dir.path().join("data"), &flags).await;
    let limit = Duration::from_secs(10);

    // Cap: two HTTP/2 connections held, the third is closed at once.
    let first = h2_connection_task(server.grpc()).await;
    let _second = h2_connection_task(server.grpc()).await;
    let third = TcpStream::connect(server.grpc()).await.expect("TCP connects (the kernel accepts)");
    let closed = closed_within(third, None, limit).await.expect("the connection over the cap is closed");
    assert!(closed < Duration::from_secs(5), "closed only after {closed:?}");

    // Age: the first connection answers every ping, and is still sent away.
    let ended = tokio::time::timeout(Duration::from_secs(15), first).await;
    assert!(ended.is_ok(), "a connection older than max_connection_age is still open");

    // Idle, HTTP/1 keep-alive: one request answered, then silence.
    let mut http = TcpStream::connect(server.http()).await.expect("connects");
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("sent");
    let mut response = [0u8; 256];
    let read = http.read(&mut response).await.expect("answered");
    assert!(response[..read].starts_with(b"HTTP/1.1 200"));
    let closed = closed_within(http, None, limit).await.expect("an idle keep-alive connection is closed");
    assert!(closed >= Duration::from_millis(1500), "closed before the idle timeout: {closed:?}");

    // Idle, HTTP/2 past its opening that answers nothing (no pings either).
    let mut silent = TcpStream::connect(server.http()).await.expect("connects");
    silent.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("sent");
    closed_within(silent, None, limit).await.expect("a silent HTTP/2 connection is closed");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// An HTTP/2 connection whose driver runs as a task; the task ends when the
/// server closes the connection.
async fn h2_connection_task(addr: SocketAddr) -> tokio::task::JoinHandle<h2::client::SendRequest<bytes::Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let send = send.ready().await.expect("the server's settings arrive");
    tokio::spawn(async move {
        let _ = connection.await;
        send
    })
}
