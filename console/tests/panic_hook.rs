//! A panic in the console revokes the console's own session, and never
//! hangs doing so. The hook `sigil-console` installs is driven here by a
//! real panic, in-process, against a real server: the binary has no way to
//! panic on purpose, nor should it. Its own test binary, as a panic hook
//! is one per process.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sigil_console::{backend, panic_hook};
use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;
#[path = "support/test_server.rs"]
mod test_server;

const ADMIN_PASSWORD: &str = "panic-admin-password";

async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connects")
}

/// A TCP relay to `upstream` that can go silent: once `silent` is set, new
/// connections are accepted and then never answered (a server that hangs).
async fn relay(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = Arc::new(AtomicBool::new(false));
    let hang = silent.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            if hang.load(Ordering::SeqCst) {
                held.push(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, silent)
}

/// The console's sessions (device `sigil-console`) and their states.
async fn console_sessions(server: SocketAddr) -> Vec<(String, pb::SessionState)> {
    let mut identity = IdentityServiceClient::new(connect(server).await);
    let login = pb::AuthenticateRequest {
        username: "admin".into(),
        password: ADMIN_PASSWORD.into(),
        device_name: Some("panic-test".into()),
        audience: None,
    };
    let token = identity.authenticate(login).await.expect("login").into_inner().access_token;
    let mut request =
        tonic::Request::new(pb::ListSessionsRequest { include_inactive: true, page_size: 1000, ..Default::default() });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    let mut admin = AdminServiceClient::new(connect(server).await);
    let sessions = admin.list_sessions(request).await.expect("list").into_inner().sessions;
    sessions
        .into_iter()
        .filter(|s| s.device_name == backend::DEVICE_NAME)
        .map(|s| (s.session_id.clone(), s.state()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_revokes_the_consoles_own_session_and_never_hangs() {
    let (server, _dir) = test_server::start(ADMIN_PASSWORD).await;
    let tls = backend::TlsFiles::default();

    // A panic on any thread: the hook revokes the console's session.
    let console = backend::login(&format!("http://{}", server.grpc_addr), "admin", ADMIN_PASSWORD, &tls)
        .await
        .expect("console login");
    panic_hook::install(console.revoker());
    let own = console.session_id();
    assert_eq!(console_sessions(server.grpc_addr).await, vec![(own.clone(), pb::SessionState::Active)]);
    let panicked = tokio::task::spawn_blocking(|| std::thread::spawn(|| panic!("a bug in the console")).join())
        .await
        .expect("joined");
    assert!(panicked.is_err(), "the thread panicked");
    assert_eq!(
        console_sessions(server.grpc_addr).await,
        vec![(own, pb::SessionState::Revoked)],
        "the panic revoked the console's own session"
    );

    // A server that accepts and never answers: the hook gives up in time.
    let (relay, silent) = relay(server.grpc_addr).await;
    let hanging = backend::login(&format!("http://{relay}"), "admin", ADMIN_PASSWORD, &tls).await.expect("login");
    panic_hook::install(hanging.revoker());
    silent.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let panicked =
        tokio::task::spawn_blocking(|| std::thread::spawn(|| panic!("another bug")).join()).await.expect("joined");
    let took = started.elapsed();
    assert!(panicked.is_err());
    assert!(
        took < panic_hook::REVOKE_WITHIN + Duration::from_secs(1),
        "the hook took {took:?} against a silent server; its bound is {:?}",
        panic_hook::REVOKE_WITHIN
    );
    server.shutdown().await.expect("shutdown");
}
