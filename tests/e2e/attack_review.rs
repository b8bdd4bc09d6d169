//! The outside attack review of the OAuth endpoints, service accounts and
//! gateway checks: each test is one break found against the release binary,
//! written before its fix and failing without it (the message it failed
//! with is in the commit that fixed it).
//!
//! - a service account's token is no admin's at the introspection endpoint,
//!   whatever its roles;
//! - a client id is one string (RFC 6749 §2.2): another spelling of the same
//!   UUID is no client, so it neither dodges the client's lock nor signs
//!   assertions as it (RFC 7523 §3: `iss` and `sub` are the client id);
//! - failures of made-up clients never hide a real client's from the audit
//!   trail;
//! - a client key that would verify forged signatures (a small-order
//!   Ed25519 point, a P-256 point off the curve) is refused when registered;
//! - `/authz` never picks one of two tokens: two `Authorization` headers, or
//!   the token cookie twice (cookie tossing from a sibling domain), are a
//!   malformed token;
//! - a stranger who knows a client id (it is in every token the client
//!   holds, and in `x-sigil-client-id` upstream) cannot lock the client out:
//!   a lock refuses wrong credentials, never the right one;
//! - Sigil's own gRPC APIs take one bearer: two `authorization` values are
//!   refused, as at `/authz`, the OAuth endpoints and the verifier's layer.

use std::net::SocketAddr;

use base64::Engine as _;
use sigil_proto::pb;
use sigil_server::domain::{DomainError, ServiceAccountId, event::EventKind, service_account::NewServiceAccount};
use sigil_tests::{TestServer, login};

use super::oauth::Answer;

/// Sends one whole HTTP/1.1 `request` and reads the answer to its end.
async fn exchange(addr: SocketAddr, request: String) -> Answer {
    super::oauth::exchange(addr, request.as_bytes()).await
}

/// `POST path` of the form `body` with extra header lines (each ending in CRLF).
async fn post_form(addr: SocketAddr, path: &str, headers: &str, body: &str) -> Answer {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, request).await
}

/// `GET /authz{query}` with extra header lines (each ending in CRLF).
async fn authz(addr: SocketAddr, query: &str, headers: &str) -> Answer {
    exchange(addr, format!("GET /authz{query} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n")).await
}

/// An `Authorization: Basic` line of RFC 6749 §2.3.1 (our ids and secrets
/// need no form-encoding).
fn basic(id: &str, secret: &str) -> String {
    format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// A service account of `server`: its id, client id and first secret.
async fn service_account(
    server: &TestServer,
    roles: &[&str],
    audiences: &[&str],
) -> (ServiceAccountId, String, String) {
    let new = NewServiceAccount {
        name: "attacked".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        scopes: vec!["orders:read".into()],
    };
    let (account, secret) = server.identity().create_service_account(None, new).await.expect("created");
    (account.id, account.client_id(), secret.expose().clone())
}

/// A user's access token for Sigil's own audience.
async fn user_token(server: &TestServer, name: &str, roles: &[&str]) -> String {
    server.create_user(name, &format!("{name}-password"), roles).await;
    login(&mut server.client().await, name, &format!("{name}-password")).await.access_token
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ----- introspection -----

/// README: introspection takes "a service account with role `introspect`,
/// or ... `Authorization: Bearer <an admin's access token>`", and "a service
/// account's token never opens the admin API, whatever its roles". A
/// service account given role `admin` (for another service's meaning of
/// it) and audience `sigil` (to follow the revocation stream) introspected
/// everyone's tokens with its bearer token, without the `introspect` role.
#[tokio::test]
async fn a_service_accounts_bearer_token_never_introspects_as_an_admin() {
    let server = TestServer::start().await;
    let (_, client_id, secret) = service_account(&server, &["admin"], &["sigil"]).await;
    let granted =
        post_form(server.http_addr(), "/oauth2/token", &basic(&client_id, &secret), "grant_type=client_credentials")
            .await;
    assert_eq!(granted.status, 200, "{granted:?}");
    let service_token = serde_json::from_str::<serde_json::Value>(&granted.body).expect("json")["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let victim = user_token(&server, "victim", &["reader"]).await;

    let answer = post_form(
        server.http_addr(),
        "/oauth2/introspect",
        &format!("Authorization: Bearer {service_token}\r\n"),
        &format!("token={victim}"),
    )
    .await;
    assert_eq!(answer.status, 403, "a service token introspected as an admin: {answer:?}");
    assert_eq!(answer.error(), "insufficient_scope", "{answer:?}");
    assert!(!answer.body.contains("victim"), "the victim's claims leaked: {answer:?}");
    // An admin user's token still introspects.
    let admin = login(&mut server.client().await, "admin", sigil_tests::ADMIN_PASSWORD).await.access_token;
    let answer = post_form(
        server.http_addr(),
        "/oauth2/introspect",
        &format!("Authorization: Bearer {admin}\r\n"),
        &format!("token={victim}"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("\"active\":true"), "{answer:?}");
}

// ----- client ids -----

/// Other spellings of the UUID in `client_id`: upper case, without
/// hyphens, braced, as a URN. `Uuid::try_parse` reads them all as the
/// account's id.
fn other_spellings(client_id: &str) -> [String; 4] {
    [
        client_id.to_ascii_uppercase(),
        client_id.replace('-', ""),
        format!("{{{client_id}}}"),
        format!("urn:uuid:{client_id}"),
    ]
}

/// Each spelling of a client id had its own failure counter and opened the
/// same account: after the client was locked for repeated failures, the
/// right secret under another spelling got a token at once — and so could
/// a guesser, `threshold` guesses per spelling (2^32 spellings by case
/// alone). A client id is one string (RFC 6749 §2.2): another spelling is
/// an unknown client, locked or not. (A lock now turns away only wrong
/// secrets; the second half keeps a spelling from ever passing as the
/// locked client.)
#[tokio::test]
async fn another_spelling_of_a_client_id_is_no_client_and_dodges_no_lock() {
    const THRESHOLD: u32 = 3;
    let server = TestServer::start_with(|config| config.lockout_threshold = THRESHOLD).await;
    let (_, client_id, secret) = service_account(&server, &["reader"], &["orders"]).await;
    let addr = server.http_addr();
    let grant = "grant_type=client_credentials";

    // Before any lock: the right secret under another spelling is refused.
    for spelling in other_spellings(&client_id) {
        let answer = post_form(addr, "/oauth2/token", &basic(&spelling, &secret), grant).await;
        assert_eq!((answer.status, answer.error().as_str()), (401, "invalid_client"), "{spelling}: {answer:?}");
    }
    let mut grpc = server.client().await;
    let request = |id: &str| pb::IssueServiceTokenRequest {
        client_id: id.to_string(),
        credential: Some(pb::issue_service_token_request::Credential::ClientSecret(secret.clone())),
        ..Default::default()
    };
    let refused = grpc.issue_service_token(request(&client_id.to_ascii_uppercase())).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Lock the client, then try the right secret under every spelling.
    let fresh = TestServer::start_with(|config| config.lockout_threshold = THRESHOLD).await;
    let (_, client_id, secret) = service_account(&fresh, &["reader"], &["orders"]).await;
    let addr = fresh.http_addr();
    for attempt in 0..THRESHOLD {
        let answer = post_form(addr, "/oauth2/token", &basic(&client_id, &format!("wrong-{attempt}")), grant).await;
        assert_eq!(answer.status, 401, "{answer:?}");
    }
    let locked = post_form(addr, "/oauth2/token", &basic(&client_id, "wrong-again"), grant).await;
    assert_eq!(locked.status, 429, "the client is locked: {locked:?}");
    for spelling in other_spellings(&client_id) {
        let answer = post_form(addr, "/oauth2/token", &basic(&spelling, &secret), grant).await;
        assert_ne!(answer.status, 200, "the lock was dodged by spelling the client id {spelling:?}: {answer:?}");
    }
}

/// RFC 7523 §3: `iss` and `sub` must be the client id. An assertion naming
/// the client id in upper case verified as the client's.
#[tokio::test]
async fn an_assertion_must_name_the_client_id_as_it_is() {
    let server = TestServer::start().await;
    let (id, client_id, _) = service_account(&server, &["reader"], &["orders"]).await;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().expect("key");
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref().to_vec();
    let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, b64url(&public));
    server.identity().set_service_account_key(None, id, &jwk).await.expect("key registered");
    let sign = |name: &str| {
        let now = now_seconds();
        let header = b64url(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": name, "sub": name, "aud": "sigil", "iat": now, "exp": now + 60,
            "jti": uuid::Uuid::now_v7().to_string(),
        });
        let payload = b64url(claims.to_string().as_bytes());
        let signature = pair.sign(format!("{header}.{payload}").as_bytes());
        format!("{header}.{payload}.{}", b64url(signature.as_ref()))
    };
    let form = |assertion: &str| {
        format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        )
    };
    let good = post_form(server.http_addr(), "/oauth2/token", "", &form(&sign(&client_id))).await;
    assert_eq!(good.status, 200, "the client id as it is: {good:?}");
    for spelling in other_spellings(&client_id) {
        let answer = post_form(server.http_addr(), "/oauth2/token", "", &form(&sign(&spelling))).await;
        assert_eq!(answer.status, 401, "an assertion as {spelling:?} was the client's: {answer:?}");
    }
}

// ----- the audit trail -----

/// Failed client authentications are aggregated per minute so that a flood
/// cannot fill the log, but they were keyed by username, which no client
/// failure has: every client shared one key. A stranger's failure with a
/// made-up client id at the start of the minute left a real client's
/// failures — and its lock — out of the trail until the minute's summary,
/// which then named only the last client.
#[tokio::test]
async fn a_strangers_failures_never_hide_a_real_clients_from_the_audit_trail() {
    let server = TestServer::start().await;
    let (id, client_id, _) = service_account(&server, &["reader"], &["orders"]).await;
    let addr = server.http_addr();
    let grant = "grant_type=client_credentials";
    let stranger = post_form(addr, "/oauth2/token", &basic("made-up-client", "guess"), grant).await;
    assert_eq!(stranger.status, 401, "{stranger:?}");
    let failed = post_form(addr, "/oauth2/token", &basic(&client_id, "wrong-secret"), grant).await;
    assert_eq!(failed.status, 401, "{failed:?}");

    let events = server.identity().store().events_after(0, 10_000).await.expect("events");
    let named = events.iter().filter(|e| e.kind == EventKind::ClientAuthFailed && e.client_id == Some(id)).count();
    assert_eq!(named, 1, "the real client's failure is not in the trail: {events:#?}");
}

// ----- client keys -----

/// Registers `jwk` with a new account of `server`.
async fn register(server: &TestServer, jwk: &str) -> (Result<(), DomainError>, String) {
    let (id, client_id, _) = service_account(server, &["reader"], &["orders"]).await;
    (server.identity().set_service_account_key(None, id, jwk).await.map(|_| ()), client_id)
}

/// An Ed25519 public key of small order (here the all-zero encoding, a
/// point of order 4) verifies the "signature" R = identity, S = 0 for about
/// one message in four: anyone could mint assertions for an account that
/// registered one, by trying a few `jti`s. Registration must refuse it (and
/// P-256 points that are not on the curve), naming the problem.
#[tokio::test]
async fn a_client_key_that_verifies_forgeries_is_refused_when_registered() {
    let server = TestServer::start().await;
    let zero = b64url(&[0; 32]);
    let small_order = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{zero}"}}"#);
    let (registered, client_id) = register(&server, &small_order).await;
    if registered.is_ok() {
        // Show what it opens: forged assertions, no private key involved.
        let forged_signature = b64url(&[[1u8].as_slice(), &[0; 63]].concat());
        let mut accepted = 0;
        for _ in 0..32 {
            let now = now_seconds();
            let header = b64url(br#"{"alg":"EdDSA"}"#);
            let claims = serde_json::json!({
                "iss": client_id, "sub": client_id, "aud": "sigil", "exp": now + 60,
                "jti": uuid::Uuid::now_v7().to_string(),
            });
            let assertion = format!("{header}.{}.{forged_signature}", b64url(claims.to_string().as_bytes()));
            let form = format!(
                "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
            );
            accepted += u32::from(post_form(server.http_addr(), "/oauth2/token", "", &form).await.status == 200);
        }
        panic!("a small-order Ed25519 key was registered; {accepted} of 32 forged assertions got a token");
    }
    assert!(
        matches!(&registered, Err(DomainError::InvalidArgument(why)) if why.contains("small order")),
        "{registered:?}"
    );
    let off_curve = format!(r#"{{"kty":"EC","crv":"P-256","x":"{zero}","y":"{zero}"}}"#);
    let (registered, _) = register(&server, &off_curve).await;
    assert!(
        matches!(&registered, Err(DomainError::InvalidArgument(why)) if why.contains("not a point")),
        "{registered:?}"
    );
}

// ----- /authz -----

/// Two `Authorization` headers: `/authz` decided on the first and let the
/// request pass, while the upstream may read the other. Ambiguity is a
/// malformed token (Envoy joins the two into one value, which fails alike).
#[tokio::test]
async fn authz_refuses_two_authorization_headers() {
    let server = TestServer::start().await;
    let alice = user_token(&server, "alice", &[]).await;
    let bob = user_token(&server, "bob", &[]).await;
    let one = authz(server.http_addr(), "", &format!("Authorization: Bearer {alice}\r\n")).await;
    assert_eq!(one.status, 200, "{one:?}");
    for second in [bob.as_str(), "garbage"] {
        let answer = authz(
            server.http_addr(),
            "",
            &format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {second}\r\n"),
        )
        .await;
        assert_eq!(answer.status, 401, "two Authorization headers passed as the first: {answer:?}");
        assert!(answer.body.contains("\"reason\":\"malformed\""), "{answer:?}");
        assert!(answer.header("x-sigil-user-id").is_none(), "{answer:?}");
    }
}

/// The token cookie twice: a sibling domain can set a cookie of the same
/// name with a longer path, which browsers send first, so the victim's
/// requests passed as the attacker's (cookie tossing). Two different
/// values are a malformed token, on `/authz` and `ext_authz` alike (they
/// share the reading).
#[tokio::test]
async fn authz_refuses_the_token_cookie_sent_twice() {
    let server = TestServer::start_with(|config| config.authz_cookie = Some("sigil_at".into())).await;
    let attacker = user_token(&server, "attacker", &[]).await;
    let victim = user_token(&server, "victim", &[]).await;
    let one = authz(server.http_addr(), "", &format!("Cookie: theme=dark; sigil_at={victim}\r\n")).await;
    assert_eq!(one.status, 200, "{one:?}");
    for cookies in [
        format!("Cookie: sigil_at={attacker}; sigil_at={victim}\r\n"),
        format!("Cookie: sigil_at={attacker}\r\nCookie: sigil_at={victim}\r\n"),
    ] {
        let answer = authz(server.http_addr(), "", &cookies).await;
        assert_eq!(answer.status, 401, "the first of two token cookies passed: {answer:?}");
        assert!(answer.body.contains("\"reason\":\"malformed\""), "{answer:?}");
    }
    // The same value twice is no ambiguity.
    let same = authz(server.http_addr(), "", &format!("Cookie: sigil_at={victim}; sigil_at={victim}\r\n")).await;
    assert_eq!(same.status, 200, "{same:?}");
}

// ----- ext_authz -----

/// `ext_authz` `Check` of headers Envoy sends raw (`encode_raw_headers`),
/// in which a repeated header is one entry per value: the first
/// `authorization` decided, whatever the second said (the map form is
/// joined by Envoy and fails as malformed, as `/authz` does). Now the raw
/// values are joined the same way.
#[tokio::test]
async fn ext_authz_refuses_repeated_raw_authorization_headers() {
    use envoy_types::pb::envoy::{
        config::core::v3::{HeaderMap, HeaderValue},
        service::auth::v3::{
            AttributeContext, CheckRequest,
            attribute_context::{HttpRequest, Request},
            authorization_client::AuthorizationClient,
        },
    };
    let server = TestServer::start_with(|config| config.authz_cookie = Some("sigil_at".into())).await;
    let alice = user_token(&server, "alice", &[]).await;
    let bob = user_token(&server, "bob", &[]).await;
    let raw =
        |key: &str, value: String| HeaderValue { key: key.into(), raw_value: value.into_bytes(), ..Default::default() };
    for headers in [
        vec![raw("authorization", format!("Bearer {alice}")), raw("authorization", format!("Bearer {bob}"))],
        vec![raw("cookie", format!("sigil_at={alice}")), raw("cookie", format!("sigil_at={bob}"))],
    ] {
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest { header_map: Some(HeaderMap { headers }), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let response =
            AuthorizationClient::new(server.channel().await).check(request).await.expect("Check").into_inner();
        assert_eq!(
            response.status.map(|s| s.code),
            Some(tonic::Code::Unauthenticated as i32),
            "one of two tokens passed"
        );
    }
}

/// Anyone who knew a client id could lock the service out for the lock's
/// duration with `threshold` wrong secrets, and again when it ended: the
/// lock refused the right secret too. A 256-bit secret cannot be guessed,
/// so the lock is there to turn away a caller hammering with wrong ones,
/// not to keep the client itself out.
#[tokio::test]
async fn a_stranger_who_knows_a_client_id_cannot_lock_the_client_out() {
    const THRESHOLD: u32 = 3;
    let server = TestServer::start_with(|config| config.lockout_threshold = THRESHOLD).await;
    let (_, client_id, secret) = service_account(&server, &["reader"], &["orders"]).await;
    let addr = server.http_addr();
    let grant = "grant_type=client_credentials";
    for attempt in 0..THRESHOLD {
        let answer = post_form(addr, "/oauth2/token", &basic(&client_id, &format!("wrong-{attempt}")), grant).await;
        assert_eq!(answer.status, 401, "{answer:?}");
    }
    let hammering = post_form(addr, "/oauth2/token", &basic(&client_id, "wrong-again"), grant).await;
    assert_eq!(hammering.status, 429, "wrong secrets are turned away once locked: {hammering:?}");
    assert!(hammering.header("retry-after").is_some(), "{hammering:?}");

    let client = post_form(addr, "/oauth2/token", &basic(&client_id, &secret), grant).await;
    assert_eq!(client.status, 200, "the client itself was locked out by a stranger: {client:?}");
    let mut grpc = server.client().await;
    let request = pb::IssueServiceTokenRequest {
        client_id: client_id.clone(),
        credential: Some(pb::issue_service_token_request::Credential::ClientSecret(secret.clone())),
        ..Default::default()
    };
    grpc.issue_service_token(request).await.expect("the client gets its token over gRPC too");
    // The success leaves the lock: an early unlock would tell the stranger
    // that the id is real and its client just authenticated.
    let after = post_form(addr, "/oauth2/token", &basic(&client_id, "wrong-after"), grant).await;
    assert_eq!(after.status, 429, "{after:?}");
}

/// The admin API read the first of two `authorization` values. Sigil acts on
/// the token it checks, so nothing else saw the other; but every other door
/// refuses two (a proxy in front may have acted on the second), and this
/// one answers the same.
#[tokio::test]
async fn sigil_s_own_apis_refuse_two_authorization_values() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    for second in [token.as_str(), "not.a.token"] {
        let mut request = tonic::Request::new(pb::GetStatsRequest {});
        for bearer in [token.as_str(), second] {
            request.metadata_mut().append("authorization", format!("Bearer {bearer}").parse().expect("value"));
        }
        let refused = admin.get_stats(request).await.expect_err("two authorization values");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("one authorization header"), "{refused:?}");
    }
    let mut one = tonic::Request::new(pb::GetStatsRequest {});
    one.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("value"));
    admin.get_stats(one).await.expect("one value passes");
}
