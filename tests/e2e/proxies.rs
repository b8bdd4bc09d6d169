//! Sigil behind the real proxies: Envoy (`ext_authz` over gRPC), nginx
//! (`auth_request`) and Caddy (`forward_auth`), each run from its `deploy/`
//! configuration in front of an upstream that echoes the headers it got.
//! For each proxy: identity headers reach the upstream, a client cannot
//! forge them, no token is a 401 with a challenge, a revocation holds on the
//! very next request, a missing role is a 403, and with Sigil stopped the
//! proxy denies, then recovers by itself when Sigil is back.

use std::{net::SocketAddr, path::Path, time::Duration};

use sigil_proto::pb;
use sigil_tests::{
    ADMIN_PASSWORD, TestServer, eventually, login,
    proxies::{EchoUpstream, HttpReply, ProxyKind, ProxyPorts, RunningProxy, free_port},
};

const ALICE_PASSWORD: &str = "alice-password-1";

/// The five identity headers Sigil hands upstream.
const IDENTITY_HEADERS: [&str; 5] =
    ["x-sigil-user-id", "x-sigil-username", "x-sigil-roles", "x-sigil-session-id", "x-sigil-token-id"];

/// A Sigil server on `data_dir`, on the given ports or ephemeral ones.
async fn start_sigil(data_dir: &Path, addrs: Option<(SocketAddr, SocketAddr)>) -> TestServer {
    TestServer::start_with(|config| {
        config.data_dir = data_dir.to_path_buf();
        if let Some((grpc, http)) = addrs {
            config.listen = grpc.into();
            config.http_listen = http.into();
        }
    })
    .await
}

/// Sigil, the echo upstream and the proxy in front of them.
struct Gateway {
    sigil: TestServer,
    upstream: EchoUpstream,
    proxy: RunningProxy,
    data_dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts all three, or says why the proxy is missing and returns None.
    async fn start(kind: ProxyKind) -> Option<Self> {
        let binary = kind.locate()?;
        let data_dir = tempfile::tempdir().expect("data dir");
        let sigil = start_sigil(data_dir.path(), None).await;
        let upstream = EchoUpstream::start().await;
        let ports = ProxyPorts {
            listen: free_port(),
            sigil_grpc: sigil.grpc_addr().port(),
            sigil_http: sigil.http_addr().port(),
            upstream: upstream.addr.port(),
        };
        let proxy = kind.start(&binary, ports).await;
        Some(Self { sigil, upstream, proxy, data_dir })
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        self.proxy.request("GET", path, headers).await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The contract every proxy keeps, in one pass over one set-up.
async fn proxy_keeps_the_contract(kind: ProxyKind) {
    let Some(gateway) = Gateway::start(kind).await else { return };
    let name = kind.name();
    let alice = gateway.sigil.create_user("alice", ALICE_PASSWORD, &["user"]).await;
    let mut client = gateway.sigil.client().await;
    let session = login(&mut client, "alice", ALICE_PASSWORD).await;
    let alice_bearer = bearer(&session.access_token);

    // A valid token reaches the upstream with the identity headers.
    let reply = gateway.get("/orders/7", &[("authorization", &alice_bearer)]).await;
    assert_eq!(reply.status, 200, "{name}: a valid token was not let through: {reply:?}\n{}", gateway.proxy.log());
    let seen = reply.echoed();
    for header in IDENTITY_HEADERS {
        assert!(
            seen.get(header).is_some_and(|v| v.len() == 1 && !v[0].is_empty()),
            "{name}: {header} missing: {seen:?}"
        );
    }
    assert_eq!(seen["x-sigil-user-id"], [alice.id.to_string()], "{name}");
    assert_eq!(seen["x-sigil-username"], ["alice"], "{name}");
    assert_eq!(seen["x-sigil-roles"], ["user"], "{name}");
    assert_eq!(seen["x-sigil-session-id"].as_slice(), [session.session_id.as_str()], "{name}");

    // A client-supplied identity never reaches the upstream.
    let forged = [("authorization", alice_bearer.as_str()), ("x-sigil-user-id", "forged-admin-id")];
    let seen = gateway.get("/orders/7", &forged).await.echoed();
    assert_eq!(seen["x-sigil-user-id"], [alice.id.to_string()], "{name}: the client's x-sigil-user-id got through");
    // Nor a service account's identity claimed by a user's request: for a
    // user Sigil answers these two empty, and the proxy sends that, or none.
    let forged = [
        ("authorization", alice_bearer.as_str()),
        ("x-sigil-client-id", "forged-client"),
        ("x-sigil-scope", "orders:write"),
    ];
    let seen = gateway.get("/orders/7", &forged).await.echoed();
    for header in ["x-sigil-client-id", "x-sigil-scope"] {
        let values = seen.get(header).cloned().unwrap_or_default();
        assert!(values.iter().all(|v| v.is_empty()), "{name}: the client's {header} got through: {values:?}");
    }
    let hits = gateway.upstream.hits();
    let reply = gateway.get("/orders/7", &[("x-sigil-user-id", "forged-admin-id")]).await;
    assert_eq!(reply.status, 401, "{name}: a forged identity without a token: {reply:?}");
    assert_eq!(gateway.upstream.hits(), hits, "{name}: a request without a token reached the upstream");

    // A user without roles cannot borrow some from a header: the proxy
    // sends Sigil's empty roles, or none, never the client's.
    gateway.sigil.create_user("bob", ALICE_PASSWORD, &[]).await;
    let bob = bearer(&login(&mut client, "bob", ALICE_PASSWORD).await.access_token);
    let seen = gateway.get("/orders/7", &[("authorization", &bob), ("x-sigil-roles", "admin")]).await.echoed();
    let roles = seen.get("x-sigil-roles").cloned().unwrap_or_default();
    assert!(roles.iter().all(|r| r.is_empty()), "{name}: a roleless user's upstream roles: {roles:?}");

    // No token: 401 with a Bearer challenge.
    let reply = gateway.get("/orders/7", &[]).await;
    assert_eq!(reply.status, 401, "{name}: no token: {reply:?}");
    let challenge =
        reply.header("www-authenticate").unwrap_or_else(|| panic!("{name}: no WWW-Authenticate: {reply:?}"));
    assert!(challenge.starts_with("Bearer"), "{name}: challenge {challenge:?}");

    // A missing role: 403 on the stricter route; an admin passes it.
    let reply = gateway.get("/admin/users", &[("authorization", &alice_bearer)]).await;
    assert_eq!(reply.status, 403, "{name}: alice (no admin role) on /admin/: {reply:?}");
    let admin = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let reply = gateway.get("/admin/users", &[("authorization", &bearer(&admin.access_token))]).await;
    assert_eq!(reply.status, 200, "{name}: the admin on /admin/: {reply:?}");
    assert_eq!(reply.echoed()["x-sigil-roles"], ["admin"], "{name}");

    // A revoked token: 401 on the very next request.
    client
        .revoke(pb::RevokeRequest {
            target: Some(pb::revoke_request::Target::AccessToken(session.access_token.clone())),
            reason: "proxy test".into(),
        })
        .await
        .expect("revoke answers");
    let hits = gateway.upstream.hits();
    let reply = gateway.get("/orders/7", &[("authorization", &alice_bearer)]).await;
    assert_eq!(reply.status, 401, "{name}: a revoked token on the next request: {reply:?}");
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("invalid_token"), "{name}: challenge for a revoked token: {challenge:?}");
    assert_eq!(gateway.upstream.hits(), hits, "{name}: a revoked token reached the upstream");
}

/// With Sigil stopped the proxy denies; it recovers by itself when Sigil
/// is back on the same ports and data.
async fn proxy_fails_closed_and_recovers(kind: ProxyKind) {
    let Some(gateway) = Gateway::start(kind).await else { return };
    let name = kind.name();
    gateway.sigil.create_user("alice", ALICE_PASSWORD, &["user"]).await;
    let token = login(&mut gateway.sigil.client().await, "alice", ALICE_PASSWORD).await.access_token;
    let alice_bearer = bearer(&token);
    let reply = gateway.get("/orders/7", &[("authorization", &alice_bearer)]).await;
    assert_eq!(reply.status, 200, "{name}: before the stop: {reply:?}\n{}", gateway.proxy.log());

    let Gateway { sigil, upstream, proxy, data_dir } = gateway;
    let addrs = (sigil.grpc_addr(), sigil.http_addr());
    sigil.stop().await;
    let hits = upstream.hits();
    for _ in 0..3 {
        let reply = proxy.request("GET", "/orders/7", &[("authorization", &alice_bearer)]).await;
        assert!(!(200..300).contains(&reply.status), "{name}: let a request through with Sigil stopped: {reply:?}");
    }
    assert_eq!(upstream.hits(), hits, "{name}: a request reached the upstream while Sigil was stopped");

    let _sigil = start_sigil(data_dir.path(), Some(addrs)).await;
    let recovered = eventually(Duration::from_secs(20), || {
        let proxy = &proxy;
        let alice_bearer = &alice_bearer;
        async move {
            let reply = proxy.request("GET", "/orders/7", &[("authorization", alice_bearer)]).await;
            (reply.status == 200).then_some(())
        }
    })
    .await;
    assert!(recovered.is_some(), "{name}: did not recover within 20 s of Sigil's return:\n{}", proxy.log());
}

#[tokio::test]
async fn envoy_ext_authz_keeps_the_contract() {
    proxy_keeps_the_contract(ProxyKind::Envoy).await;
}

#[tokio::test]
async fn envoy_ext_authz_fails_closed_and_recovers() {
    proxy_fails_closed_and_recovers(ProxyKind::Envoy).await;
}

#[tokio::test]
async fn nginx_auth_request_keeps_the_contract() {
    proxy_keeps_the_contract(ProxyKind::Nginx).await;
}

#[tokio::test]
async fn nginx_auth_request_fails_closed_and_recovers() {
    proxy_fails_closed_and_recovers(ProxyKind::Nginx).await;
}

#[tokio::test]
async fn caddy_forward_auth_keeps_the_contract() {
    proxy_keeps_the_contract(ProxyKind::Caddy).await;
}

#[tokio::test]
async fn caddy_forward_auth_fails_closed_and_recovers() {
    proxy_fails_closed_and_recovers(ProxyKind::Caddy).await;
}
