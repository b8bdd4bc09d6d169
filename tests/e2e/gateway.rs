//! Sigil as a gateway's authorizer, called directly (no proxy): Envoy's
//! `ext_authz` v3 `Check` over gRPC and forward-auth `/authz` over HTTP
//! give one decision from current state — identity headers that overwrite
//! a client's forgeries, 401 with a `WWW-Authenticate` challenge for no or
//! a bad token, 403 for a missing role, a revocation enforced on the very
//! next check — and count it by reason.

use std::{collections::HashMap, net::SocketAddr};

use envoy_types::pb::envoy::{
    config::core::v3::header_value_option::HeaderAppendAction,
    service::auth::v3::{
        AttributeContext, CheckRequest, CheckResponse,
        attribute_context::{HttpRequest, Request},
        authorization_client::AuthorizationClient,
        check_response::HttpResponse,
    },
};
use sigil_proto::pb;
use sigil_tests::{TestServer, http_get, login, with_bearer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The five identity headers an allowed request carries upstream.
const IDENTITY_HEADERS: [&str; 5] =
    ["x-sigil-user-id", "x-sigil-username", "x-sigil-roles", "x-sigil-session-id", "x-sigil-token-id"];

/// What a `Check` answered, flattened for assertions.
#[derive(Debug)]
struct Checked {
    /// The `google.rpc.Status` code (0 allows).
    code: i32,
    /// The HTTP status of a denial (0 when allowed).
    http_status: i32,
    /// Headers set: upstream ones when allowed, the denial's otherwise.
    headers: HashMap<String, String>,
    /// Whether every upstream header overwrites what the client sent.
    all_overwrite: bool,
    /// Headers removed from the client's request.
    removed: Vec<String>,
    /// The denial's body.
    body: String,
}

impl Checked {
    fn allowed(&self) -> bool {
        self.code == 0
    }
}

/// Sends `Check` with the client `headers` and the route's `extensions`.
async fn check(server: &TestServer, headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> Checked {
    let mut client = AuthorizationClient::new(server.channel().await);
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders/1".into(),
                    host: "app.example".into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
    };
    let response: CheckResponse =
        client.check(request).await.expect("Check answers (a denial is not an RPC error)").into_inner();
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Checked {
            code,
            http_status: 0,
            all_overwrite: ok
                .headers
                .iter()
                .all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32),
            headers: ok
                .headers
                .into_iter()
                .filter_map(|h| h.header)
                .map(|h| (h.key.to_ascii_lowercase(), h.value))
                .collect(),
            removed: ok.headers_to_remove,
            body: String::new(),
        },
        Some(HttpResponse::DeniedResponse(denied)) => Checked {
            code,
            http_status: denied.status.map_or(0, |s| s.code),
            all_overwrite: false,
            headers: denied
                .headers
                .into_iter()
                .filter_map(|h| h.header)
                .map(|h| (h.key.to_ascii_lowercase(), h.value))
                .collect(),
            removed: Vec::new(),
            body: denied.body,
        },
        other => panic!("Check answered {code} with {other:?}"),
    }
}

/// What `/authz` answered.
#[derive(Debug)]
struct Answered {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `method /authz{query}` with extra header lines.
async fn authz(addr: SocketAddr, method: &str, query: &str, headers: &str) -> Answered {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("http connects");
    let request = format!("{method} /authz{query} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut raw = Vec::new();
    // A refused request may be reset after its answer: what arrived counts.
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answered { status, headers, body: body.to_string() }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A user with roles, logged in; its access token and user id.
async fn user(server: &TestServer, name: &str, roles: &[&str]) -> (String, pb::AuthenticateResponse) {
    server.create_user(name, &format!("{name}-password"), roles).await;
    let tokens = login(&mut server.client().await, name, &format!("{name}-password")).await;
    (tokens.access_token.clone(), tokens)
}

/// Revokes an access token (holding it is enough).
async fn revoke(server: &TestServer, token: &str) {
    server
        .client()
        .await
        .revoke(pb::RevokeRequest {
            target: Some(pb::revoke_request::Target::AccessToken(token.to_string())),
            reason: "test".into(),
        })
        .await
        .expect("revoked");
}

async fn update_user(server: &TestServer, user_id: &str, disabled: Option<bool>, roles: Option<&[&str]>) {
    let (mut admin, admin_token) = server.admin().await;
    let request = pb::UpdateUserRequest {
        user_id: user_id.to_string(),
        disabled,
        roles: roles.map(|roles| pb::RoleList { roles: roles.iter().map(|r| r.to_string()).collect() }),
    };
    admin.update_user(with_bearer(request, &admin_token)).await.expect("user updated");
}

/// The value of `sigil_gateway_checks_total{via,outcome}` now.
async fn checks(server: &TestServer, via: &str, outcome: &str) -> f64 {
    let (status, text) = http_get(server.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let series = format!("sigil_gateway_checks_total{{via=\"{via}\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&series)).map_or(0.0, |v| v.trim().parse().expect("a number"))
}

// ----- Envoy ext_authz -----

#[tokio::test]
async fn ext_authz_allows_a_valid_token_with_the_identity_headers_overwriting_forgeries() {
    let server = TestServer::start().await;
    let (token, tokens) = user(&server, "alice", &["reader", "writer"]).await;
    let auth = bearer(&token);
    let checked = check(
        &server,
        &[
            ("authorization", &auth),
            ("x-sigil-user-id", "forged-admin-id"),
            ("x-sigil-other", "forged"),
            ("X-Sigil-Roles", "admin"),
            ("x-request-id", "kept"),
        ],
        &[],
    )
    .await;
    assert!(checked.allowed(), "{checked:?}");
    for name in IDENTITY_HEADERS {
        assert!(checked.headers.contains_key(name), "{name} missing: {checked:?}");
    }
    assert_eq!(checked.headers["x-sigil-user-id"], tokens.user_id);
    assert_eq!(checked.headers["x-sigil-username"], "alice");
    assert_eq!(checked.headers["x-sigil-roles"], "reader,writer");
    assert_eq!(checked.headers["x-sigil-session-id"], tokens.session_id);
    assert!(!checked.headers["x-sigil-token-id"].is_empty());
    assert!(checked.all_overwrite, "every identity header overwrites the client's: {checked:?}");
    assert_eq!(checked.removed, vec!["x-sigil-other".to_string()], "other x-sigil-* removed, nothing else");
}

/// Envoy applies every header of an answer, one by one, on its worker: an
/// answer sets only the identity headers that have a value for the
/// caller's kind (a user has no client id, a roleless user no roles), and
/// removes the client's own header of every other name, so nothing a
/// client sent under `x-sigil-` reaches the upstream either way.
#[tokio::test]
async fn ext_authz_sets_only_the_headers_a_user_has_and_removes_the_clients_others() {
    let server = TestServer::start().await;
    let (token, _) = user(&server, "alice", &["reader"]).await;
    let auth = bearer(&token);
    let checked = check(&server, &[("authorization", &auth)], &[]).await;
    assert!(checked.allowed(), "{checked:?}");
    let mut set: Vec<&str> = checked.headers.keys().map(String::as_str).collect();
    set.sort_unstable();
    let mut expected = IDENTITY_HEADERS.to_vec();
    expected.sort_unstable();
    assert_eq!(set, expected, "a user's answer sets the five user headers, nothing empty: {checked:?}");
    assert!(checked.removed.is_empty(), "nothing to remove when the client sent nothing: {checked:?}");

    let forged = [
        ("authorization", auth.as_str()),
        ("x-sigil-client-id", "forged-client"),
        ("X-Sigil-Scope", "orders:write"),
        ("x-sigil-user-id", "forged-admin-id"),
    ];
    let checked = check(&server, &forged, &[]).await;
    assert!(!checked.headers.contains_key("x-sigil-client-id") && !checked.headers.contains_key("x-sigil-scope"));
    assert_eq!(checked.removed, ["x-sigil-client-id", "x-sigil-scope"], "a user's forged service identity is removed");
    assert_ne!(checked.headers["x-sigil-user-id"], "forged-admin-id");

    let (roleless, _) = user(&server, "bob", &[]).await;
    let checked = check(&server, &[("authorization", &bearer(&roleless)), ("x-sigil-roles", "admin")], &[]).await;
    assert!(checked.allowed(), "{checked:?}");
    assert!(!checked.headers.contains_key("x-sigil-roles"), "no empty roles header: {checked:?}");
    assert_eq!(checked.removed, ["x-sigil-roles"], "the client's roles are removed: {checked:?}");
}

/// A service account's token passes as a service: its roles, token id,
/// client id and scope set, and a client's user identity removed.
#[tokio::test]
async fn ext_authz_a_service_token_sets_the_service_headers_and_removes_a_forged_user() {
    let server = TestServer::start().await;
    let (mut admin, admin_token) = server.admin().await;
    let request = pb::CreateServiceAccountRequest {
        name: "billing worker".into(),
        roles: vec!["billing".into()],
        audiences: vec!["orders".into()],
        scopes: vec!["read".into()],
    };
    let created = admin.create_service_account(with_bearer(request, &admin_token)).await.expect("created");
    let created = created.into_inner();
    let client_id = created.service_account.expect("account").client_id;
    let grant = pb::IssueServiceTokenRequest {
        client_id: client_id.clone(),
        credential: Some(pb::issue_service_token_request::Credential::ClientSecret(created.client_secret)),
        audience: "orders".into(),
        scope: String::new(),
    };
    let issued = server.client().await.issue_service_token(grant).await.expect("issued").into_inner();
    let forged = [
        ("authorization", bearer(&issued.access_token)),
        ("x-sigil-user-id", "forged-user".to_string()),
        ("x-sigil-session-id", "forged-session".to_string()),
    ];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let checked = check(&server, &forged, &[("sigil_audience", "orders")]).await;
    assert!(checked.allowed(), "{checked:?}");
    let mut set: Vec<&str> = checked.headers.keys().map(String::as_str).collect();
    set.sort_unstable();
    assert_eq!(set, ["x-sigil-client-id", "x-sigil-roles", "x-sigil-scope", "x-sigil-token-id"], "{checked:?}");
    assert_eq!(checked.headers["x-sigil-client-id"], client_id);
    assert_eq!(checked.headers["x-sigil-roles"], "billing");
    assert_eq!(checked.headers["x-sigil-scope"], "read");
    assert_eq!(checked.removed, ["x-sigil-session-id", "x-sigil-user-id"], "a forged user identity is removed");
}

#[tokio::test]
async fn ext_authz_without_a_token_is_401_with_a_realm_challenge() {
    let server = TestServer::start().await;
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cHc=")]] {
        let checked = check(&server, &headers, &[]).await;
        assert_eq!(checked.code, 16, "UNAUTHENTICATED: {checked:?}");
        assert_eq!(checked.http_status, 401, "{checked:?}");
        assert_eq!(checked.headers["www-authenticate"], "Bearer realm=\"sigil\"", "{checked:?}");
    }
}

#[tokio::test]
async fn ext_authz_refuses_a_revoked_token_on_the_very_next_check() {
    let server = TestServer::start().await;
    let (token, _) = user(&server, "alice", &[]).await;
    let auth = bearer(&token);
    assert!(check(&server, &[("authorization", &auth)], &[]).await.allowed());
    // Revoking by access token ends its session (the API contract).
    let before = checks(&server, "ext_authz", "session_revoked").await;
    revoke(&server, &token).await;
    let checked = check(&server, &[("authorization", &auth)], &[]).await;
    assert_eq!(checked.http_status, 401, "{checked:?}");
    assert!(checked.headers["www-authenticate"].contains("error=\"invalid_token\""), "{checked:?}");
    assert_eq!(checked.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&checked.body).expect("JSON body");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "session_revoked");
    assert!(!checked.body.contains(&token), "the body never repeats the token");
    assert!(checks(&server, "ext_authz", "session_revoked").await >= before + 1.0, "counted by reason");
}

#[tokio::test]
async fn ext_authz_a_garbage_token_is_invalid_token_malformed() {
    let server = TestServer::start().await;
    let checked = check(&server, &[("authorization", "Bearer not.a.jwt")], &[]).await;
    assert_eq!(checked.http_status, 401, "{checked:?}");
    assert!(checked.headers["www-authenticate"].contains("invalid_token"));
    assert!(checked.body.contains("malformed"), "{checked:?}");
    assert!(!checked.body.contains("not.a.jwt"));
}

#[tokio::test]
async fn ext_authz_route_audience_is_enforced() {
    let server = TestServer::start().await;
    server.create_user("alice", "alice-password", &[]).await;
    let orders = server
        .client()
        .await
        .authenticate(pb::AuthenticateRequest {
            audience: Some("orders".into()),
            ..sigil_tests::login_request("alice", "alice-password")
        })
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let auth = bearer(&orders);
    assert!(check(&server, &[("authorization", &auth)], &[("sigil_audience", "orders")]).await.allowed());
    for extensions in [vec![("sigil_audience", "billing")], vec![]] {
        let checked = check(&server, &[("authorization", &auth)], &extensions).await;
        assert_eq!(checked.http_status, 401, "{extensions:?}: {checked:?}");
        assert!(checked.body.contains("wrong_audience"), "{checked:?}");
    }
}

#[tokio::test]
async fn ext_authz_missing_role_is_403_and_any_listed_role_allows() {
    let server = TestServer::start().await;
    let (token, _) = user(&server, "alice", &["reader"]).await;
    let auth = bearer(&token);
    let before = checks(&server, "ext_authz", "missing_role").await;
    let checked = check(&server, &[("authorization", &auth)], &[("sigil_roles", "admin,writer")]).await;
    assert_eq!(checked.code, 7, "PERMISSION_DENIED: {checked:?}");
    assert_eq!(checked.http_status, 403, "{checked:?}");
    assert!(checked.headers["www-authenticate"].contains("error=\"insufficient_scope\""), "{checked:?}");
    assert!(checks(&server, "ext_authz", "missing_role").await >= before + 1.0);
    // Any one of the listed roles is enough.
    assert!(check(&server, &[("authorization", &auth)], &[("sigil_roles", "writer, reader")]).await.allowed());
}

#[tokio::test]
async fn ext_authz_reads_the_cookie_only_when_configured() {
    let configured = TestServer::start_with(|config| config.authz_cookie = Some("sigil_at".into())).await;
    let (token, _) = user(&configured, "alice", &[]).await;
    let cookie = format!("theme=dark; sigil_at={token}; other=1");
    assert!(check(&configured, &[("cookie", &cookie)], &[]).await.allowed());

    let plain = TestServer::start().await;
    let (token, _) = user(&plain, "alice", &[]).await;
    let cookie = format!("sigil_at={token}");
    let checked = check(&plain, &[("cookie", &cookie)], &[]).await;
    assert_eq!(checked.http_status, 401, "no cookie configured: no token ({checked:?})");
    assert_eq!(checked.headers["www-authenticate"], "Bearer realm=\"sigil\"");
}

#[tokio::test]
async fn ext_authz_follows_current_state_disabled_user_and_removed_role() {
    let server = TestServer::start().await;
    let (token, tokens) = user(&server, "alice", &["writer"]).await;
    let auth = bearer(&token);
    let policy = [("sigil_roles", "writer")];
    assert!(check(&server, &[("authorization", &auth)], &policy).await.allowed());

    // The role is taken away: the token minted with it stops at once (the
    // design revokes tokens minted before a role change), and a refreshed
    // token, which carries the current roles, is 403.
    update_user(&server, &tokens.user_id, None, Some(&[])).await;
    let checked = check(&server, &[("authorization", &auth)], &policy).await;
    assert_eq!(checked.http_status, 401, "{checked:?}");
    assert!(checked.body.contains("token_revoked"), "{checked:?}");
    let refreshed = server
        .client()
        .await
        .refresh(pb::RefreshRequest { refresh_token: tokens.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner()
        .access_token;
    let auth = bearer(&refreshed);
    assert_eq!(check(&server, &[("authorization", &auth)], &policy).await.http_status, 403);
    assert!(check(&server, &[("authorization", &auth)], &[]).await.allowed());

    // Disabled: 401 on the next check.
    update_user(&server, &tokens.user_id, Some(true), None).await;
    let checked = check(&server, &[("authorization", &auth)], &[]).await;
    assert_eq!(checked.http_status, 401, "{checked:?}");
    assert!(checked.headers["www-authenticate"].contains("invalid_token"));
}

/// A route policy no user can satisfy is the proxy's misconfiguration:
/// refused (fail closed) with a 400 that says what to fix, never an RPC
/// error, and headers Envoy sends raw (`encode_raw_headers`) are read too.
#[tokio::test]
async fn ext_authz_a_bad_policy_is_400_and_raw_headers_are_read() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let server = TestServer::start().await;
    let (token, _) = user(&server, "alice", &["reader"]).await;
    let auth = bearer(&token);
    let checked = check(&server, &[("authorization", &auth)], &[("sigil_roles", &"r,".repeat(40))]).await;
    assert_eq!(checked.code, 3, "INVALID_ARGUMENT: {checked:?}");
    assert_eq!(checked.http_status, 400, "{checked:?}");
    assert!(checked.body.contains("bad_policy") && checked.body.contains("at most 32 roles"), "{checked:?}");

    let mut client = AuthorizationClient::new(server.channel().await);
    let raw = |key: &str, value: &str| HeaderValue {
        key: key.into(),
        raw_value: value.as_bytes().to_vec(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    header_map: Some(HeaderMap {
                        headers: vec![raw("authorization", &auth), raw("x-sigil-admin", "yes")],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let response = client.check(request).await.expect("Check").into_inner();
    assert_eq!(response.status.map(|s| s.code), Some(0));
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else { panic!("not allowed") };
    assert_eq!(ok.headers_to_remove, vec!["x-sigil-admin".to_string()]);
}

// ----- forward-auth /authz -----

#[tokio::test]
async fn authz_allows_a_valid_token_with_identity_response_headers_for_any_method() {
    let server = TestServer::start().await;
    let (token, tokens) = user(&server, "alice", &["reader", "writer"]).await;
    let before = checks(&server, "forward_auth", "allowed").await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        let answered = authz(
            server.http_addr(),
            method,
            "",
            &format!(
                "Authorization: Bearer {token}\r\nX-Sigil-User-Id: forged\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Uri: /x\r\nContent-Length: 0\r\n"
            ),
        )
        .await;
        assert_eq!(answered.status, 200, "{method}: {answered:?}");
        assert_eq!(answered.headers["x-sigil-user-id"], tokens.user_id, "{method}");
        assert_eq!(answered.headers["x-sigil-username"], "alice");
        assert_eq!(answered.headers["x-sigil-roles"], "reader,writer");
        assert_eq!(answered.headers["x-sigil-session-id"], tokens.session_id);
        assert!(answered.headers.contains_key("x-sigil-token-id"));
    }
    assert!(checks(&server, "forward_auth", "allowed").await >= before + 7.0);
}

#[tokio::test]
async fn authz_denials_are_401_or_403_never_a_redirect_nor_5xx() {
    let server = TestServer::start().await;
    let (token, tokens) = user(&server, "alice", &["reader"]).await;
    let addr = server.http_addr();

    let none = authz(addr, "GET", "", "").await;
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.headers["www-authenticate"], "Bearer realm=\"sigil\"");

    let garbage = authz(addr, "GET", "", "Authorization: Bearer x.y.z\r\n").await;
    assert_eq!(garbage.status, 401, "{garbage:?}");
    assert!(garbage.headers["www-authenticate"].contains("error=\"invalid_token\""));
    assert!(garbage.body.contains("malformed"), "{garbage:?}");

    let auth = format!("Authorization: Bearer {token}\r\n");
    let missing = authz(addr, "GET", "?roles=admin,writer", &auth).await;
    assert_eq!(missing.status, 403, "{missing:?}");
    assert!(missing.headers["www-authenticate"].contains("insufficient_scope"));
    assert_eq!(authz(addr, "GET", "?roles=admin,reader", &auth).await.status, 200);

    let audience = authz(addr, "GET", "?audience=orders", &auth).await;
    assert_eq!(audience.status, 401, "{audience:?}");
    assert!(audience.body.contains("wrong_audience"));

    // Hostile query strings and policies are a client's mistake, not ours.
    for query in ["?roles=%ZZ", "?audience=&roles=", "?roles=,,,", &format!("?roles={}", "r,".repeat(5000))] {
        let answered = authz(addr, "GET", query, &auth).await;
        assert!(answered.status < 500 && !(300..400).contains(&answered.status), "{query:.40}: {answered:?}");
    }

    let before = checks(&server, "forward_auth", "session_revoked").await;
    revoke(&server, &token).await;
    let revoked = authz(addr, "GET", "", &auth).await;
    assert_eq!(revoked.status, 401, "revoked: {revoked:?}");
    assert!(revoked.body.contains("session_revoked"), "{revoked:?}");
    assert!(!revoked.body.contains(&token));
    assert!(checks(&server, "forward_auth", "session_revoked").await >= before + 1.0);

    // Disabled user, with a fresh login first.
    let fresh = login(&mut server.client().await, "alice", "alice-password").await.access_token;
    let auth = format!("Authorization: Bearer {fresh}\r\n");
    assert_eq!(authz(addr, "GET", "", &auth).await.status, 200);
    update_user(&server, &tokens.user_id, Some(true), None).await;
    let disabled = authz(addr, "GET", "", &auth).await;
    assert_eq!(disabled.status, 401, "{disabled:?}");
    assert!(disabled.body.contains("user_disabled"), "{disabled:?}");
}

#[tokio::test]
async fn authz_a_removed_role_is_refused_on_the_next_check() {
    let server = TestServer::start().await;
    let (token, tokens) = user(&server, "alice", &["writer"]).await;
    let addr = server.http_addr();
    assert_eq!(authz(addr, "GET", "?roles=writer", &format!("Authorization: Bearer {token}\r\n")).await.status, 200);
    update_user(&server, &tokens.user_id, None, Some(&[])).await;
    let stale = authz(addr, "GET", "?roles=writer", &format!("Authorization: Bearer {token}\r\n")).await;
    assert_eq!(stale.status, 401, "{stale:?}");
    let refreshed = server
        .client()
        .await
        .refresh(pb::RefreshRequest { refresh_token: tokens.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner()
        .access_token;
    let answered = authz(addr, "GET", "?roles=writer", &format!("Authorization: Bearer {refreshed}\r\n")).await;
    assert_eq!(answered.status, 403, "{answered:?}");
}

#[tokio::test]
async fn authz_reads_the_cookie_only_when_configured() {
    let configured = TestServer::start_with(|config| config.authz_cookie = Some("sigil_at".into())).await;
    let (token, _) = user(&configured, "alice", &[]).await;
    let answered = authz(configured.http_addr(), "GET", "", &format!("Cookie: a=1; sigil_at={token}\r\n")).await;
    assert_eq!(answered.status, 200, "{answered:?}");

    let plain = TestServer::start().await;
    let (token, _) = user(&plain, "alice", &[]).await;
    let answered = authz(plain.http_addr(), "GET", "", &format!("Cookie: sigil_at={token}\r\n")).await;
    assert_eq!(answered.status, 401, "{answered:?}");
    assert_eq!(answered.headers["www-authenticate"], "Bearer realm=\"sigil\"");
}

#[tokio::test]
async fn authz_an_oversized_header_is_431_not_5xx() {
    let server = TestServer::start().await;
    let huge = format!("Authorization: Bearer {}\r\n", "a".repeat(40 * 1024));
    let answered = authz(server.http_addr(), "GET", "", &huge).await;
    assert_eq!(answered.status, 431, "{answered:?}");
    // The listener still answers afterwards.
    assert_eq!(authz(server.http_addr(), "GET", "", "").await.status, 401);
}

// ----- the real binary -----

/// The `--authz-cookie` flag reaches the check, and a debug log of checks
/// allowed and refused never holds the token.
#[tokio::test]
async fn the_binary_reads_the_cookie_flag_and_never_logs_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        sigil_tests::ChildServer::spawn_logging(&dir.path().join("data"), &["--authz-cookie", "sigil_at"], "debug")
            .await;
    let mut client = server.client().await;
    let token = login(&mut client, "admin", sigil_tests::ADMIN_PASSWORD).await.access_token;
    let mut ext_authz = AuthorizationClient::new(sigil_tests::connect(server.grpc_addr).await);
    let request = |cookie: String| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest { headers: [("cookie".to_string(), cookie)].into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let allowed = ext_authz.check(request(format!("sigil_at={token}"))).await.expect("Check").into_inner();
    assert_eq!(allowed.status.map(|s| s.code), Some(0), "the cookie flag is read");
    client
        .revoke(pb::RevokeRequest {
            target: Some(pb::revoke_request::Target::AccessToken(token.clone())),
            reason: String::new(),
        })
        .await
        .expect("revoked");
    let refused = ext_authz.check(request(format!("sigil_at={token}"))).await.expect("Check").into_inner();
    assert_eq!(refused.status.map(|s| s.code), Some(16), "revoked: refused on the next check");
    let output = server.output.lock().expect("output").clone();
    assert!(output.contains("rpc"), "debug logging is on: {output:.400}");
    // The signature part alone is unique to this token.
    let signature = token.rsplit('.').next().expect("a JWT");
    assert!(!output.contains(signature), "a token reached the log");
    assert!(server.terminate().await);
}
