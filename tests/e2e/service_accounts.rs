//! Service accounts over gRPC (issue 15): an admin creates one, the service
//! obtains tokens with `IssueServiceToken` (a client secret or a
//! `private_key_jwt` assertion), `Validate` and `/authz` tell it from a
//! user, and every hostile case fails the one way it must: wrong secret and
//! unknown client alike, disabled or expired refused, assertions replayed
//! (even across a restart), aimed elsewhere, unsigned or HMAC'd with the
//! public key refused, failures locking the client id, revocations by
//! token and by account taking effect on the very next call, the admin RPCs
//! closed to non-admins, and no secret in a log line or an event.

use std::time::Duration;

use aws_lc_rs::{
    encoding::AsDer as _,
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _},
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sigil_proto::pb::{
    self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient,
    issue_service_token_request::Credential, revoke_request::Target,
};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, TestServer, connect, login, validate, with_bearer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Code, transport::Channel};

type Admin = (AdminServiceClient<Channel>, String);

/// A service account and its first secret.
struct Account {
    client_id: String,
    secret: String,
}

async fn create(admin: &mut Admin, roles: &[&str], audiences: &[&str], scopes: &[&str]) -> Account {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    let request = pb::CreateServiceAccountRequest {
        name: "billing worker".into(),
        roles: strings(roles),
        audiences: strings(audiences),
        scopes: strings(scopes),
    };
    let created = admin.0.create_service_account(with_bearer(request, &admin.1)).await.expect("created").into_inner();
    let account = created.service_account.expect("account");
    assert_eq!(account.secrets.len(), 1, "one secret, listed by id and times only");
    assert_eq!(created.secret_id, account.secrets[0].secret_id);
    Account { client_id: account.client_id, secret: created.client_secret }
}

fn secret_grant(client_id: &str, secret: &str, audience: &str, scope: &str) -> pb::IssueServiceTokenRequest {
    pb::IssueServiceTokenRequest {
        client_id: client_id.into(),
        credential: Some(Credential::ClientSecret(secret.into())),
        audience: audience.into(),
        scope: scope.into(),
    }
}

fn assertion_grant(client_id: &str, assertion: &str) -> pb::IssueServiceTokenRequest {
    pb::IssueServiceTokenRequest {
        client_id: client_id.into(),
        credential: Some(Credential::ClientAssertion(assertion.into())),
        audience: String::new(),
        scope: String::new(),
    }
}

async fn issue(
    client: &mut IdentityServiceClient<Channel>,
    request: pb::IssueServiceTokenRequest,
) -> Result<pb::IssueServiceTokenResponse, tonic::Status> {
    client.issue_service_token(request).await.map(tonic::Response::into_inner)
}

async fn update(admin: &mut Admin, client_id: &str, change: impl FnOnce(&mut pb::UpdateServiceAccountRequest)) {
    let mut request = pb::UpdateServiceAccountRequest { client_id: client_id.into(), ..Default::default() };
    change(&mut request);
    admin.0.update_service_account(with_bearer(request, &admin.1)).await.expect("updated");
}

/// A client key pair and how the server is told of its public half.
struct ClientKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// JWK or PEM text for SetServiceAccountKey.
    public: String,
    /// The raw public key bytes (for the HS256 confusion attack).
    public_bytes: Vec<u8>,
}

fn ed25519_key() -> ClientKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let raw = pair.public_key().as_ref().to_vec();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    ClientKey {
        algorithm: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        public: format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#),
        public_bytes: raw,
    }
}

fn p256_key_as_pem() -> ClientKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    let spki = pair.public_key().as_der().expect("spki");
    let body = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    ClientKey {
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public: format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"),
        public_bytes: pair.public_key().as_ref().to_vec(),
    }
}

async fn register(admin: &mut Admin, client_id: &str, key: &ClientKey) {
    let request = pb::SetServiceAccountKeyRequest { client_id: client_id.into(), public_key: key.public.clone() };
    let account = admin.0.set_service_account_key(with_bearer(request, &admin.1)).await.expect("key set").into_inner();
    let registered = account.service_account.and_then(|a| a.key).expect("key shown");
    assert_eq!(registered.algorithm, format!("{:?}", key.algorithm));
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// RFC 7523 claims for `client_id`, aimed at `audience`, living `lifetime` seconds.
fn claims(client_id: &str, audience: &str, lifetime: i64, jti: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now(), "exp": now() + lifetime, "jti": jti,
    })
}

fn sign(key: &ClientKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(key.algorithm), claims, &key.encoding).expect("signed")
}

fn unique_jti() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Sends `GET /authz?audience=…` with a bearer token; the status and headers.
async fn authz(addr: std::net::SocketAddr, audience: &str, token: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("http connects");
    let request = format!(
        "GET /authz?audience={audience} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         X-Sigil-User-Id: forged\r\nX-Sigil-Client-Id: forged\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    (status, text.split_once("\r\n\r\n").map_or(text.clone(), |(head, _)| head.to_ascii_lowercase()))
}

#[tokio::test]
async fn a_service_token_validates_as_a_service_with_its_roles_scope_and_audience() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &["billing"], &["orders", "ledger"], &["read", "write"]).await;
    let mut client = server.client().await;

    let issued =
        issue(&mut client, secret_grant(&account.client_id, &account.secret, "ledger", "read")).await.expect("issued");
    assert_eq!((issued.audience.as_str(), issued.scopes.as_slice()), ("ledger", &["read".to_string()][..]));
    let verdict = client
        .validate(pb::ValidateRequest { token: issued.access_token.clone(), audience: Some("ledger".into()) })
        .await
        .expect("validate")
        .into_inner();
    assert!(verdict.valid, "{verdict:?}");
    let claims = verdict.claims.expect("claims");
    assert_eq!(claims.subject_kind(), pb::SubjectKind::Service);
    assert_eq!(claims.client_id, account.client_id);
    assert_eq!(claims.user_id, account.client_id, "sub is the client id");
    assert_eq!((claims.session_id.as_str(), claims.username.as_str()), ("", ""), "no session, no username");
    assert_eq!(claims.roles, ["billing"]);
    assert_eq!(claims.scopes, ["read"]);
    assert_eq!(claims.audience, ["ledger"]);
    assert_eq!(claims.token_id, issued.token_id);

    // The JWT itself: sub = client_id, no sid, scope as a string (RFC 9068).
    let payload = issued.access_token.split('.').nth(1).expect("payload");
    let payload: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
            .expect("json");
    assert_eq!(payload["sub"], account.client_id.as_str());
    assert_eq!(payload["client_id"], account.client_id.as_str());
    assert_eq!(payload["scope"], "read");
    assert!(payload.get("sid").is_none(), "{payload}");

    // A user's token says user.
    let user = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let verdict = validate(&mut client, &user.access_token).await;
    assert_eq!(verdict.claims.expect("claims").subject_kind(), pb::SubjectKind::User);

    // Defaults: the first audience, every allowed scope. Beyond what is allowed: refused.
    let default = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    assert_eq!((default.audience.as_str(), default.scopes.len()), ("orders", 2));
    let scope = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "read admin")).await;
    assert_eq!(scope.expect_err("scope not allowed").code(), Code::PermissionDenied);
    let audience = issue(&mut client, secret_grant(&account.client_id, &account.secret, "sigil", "")).await;
    assert_eq!(audience.expect_err("audience not allowed").code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_client_answer_alike() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let mut client = server.client().await;
    let wrong =
        issue(&mut client, secret_grant(&account.client_id, "not-the-secret", "", "")).await.expect_err("wrong");
    let unknown_id = uuid::Uuid::now_v7().to_string();
    let unknown = issue(&mut client, secret_grant(&unknown_id, &account.secret, "", "")).await.expect_err("unknown");
    let nonsense = issue(&mut client, secret_grant("nobody", "x", "", "")).await.expect_err("not even an id");
    for refused in [&wrong, &unknown, &nonsense] {
        assert_eq!((refused.code(), refused.message()), (Code::Unauthenticated, "invalid client credentials"));
    }
    // Oversized input is refused before any work, and says which field.
    let huge = issue(&mut client, secret_grant(&account.client_id, &"x".repeat(10_000), "", "")).await;
    let huge = huge.expect_err("oversized");
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert!(huge.message().contains("client_secret"), "{}", huge.message());
}

#[tokio::test]
async fn a_disabled_client_gets_no_token_and_its_tokens_fail_at_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let mut client = server.client().await;
    let before = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    update(&mut admin, &account.client_id, |r| r.disabled = Some(true)).await;
    let refused = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await;
    assert_eq!(refused.expect_err("disabled").message(), "invalid client credentials");
    assert!(!validate(&mut client, &before.access_token).await.valid, "disabling ends its tokens at once");

    // Enabled again: new tokens work, the old one stays revoked.
    update(&mut admin, &account.client_id, |r| r.disabled = Some(false)).await;
    let after = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    assert!(validate(&mut client, &after.access_token).await.valid);
    assert!(!validate(&mut client, &before.access_token).await.valid);

    // A change of roles ends the tokens carrying the old ones; deleting ends the rest.
    update(&mut admin, &account.client_id, |r| r.roles = Some(pb::StringList { items: vec!["reader".into()] })).await;
    assert!(!validate(&mut client, &after.access_token).await.valid, "a role change revokes older tokens");
    let last = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    assert_eq!(validate(&mut client, &last.access_token).await.claims.expect("valid").roles, ["reader"]);
    let delete = pb::DeleteServiceAccountRequest { client_id: account.client_id.clone() };
    admin.0.delete_service_account(with_bearer(delete, &admin.1)).await.expect("deleted");
    assert!(!validate(&mut client, &last.access_token).await.valid, "deleting ends its tokens at once");
    let gone = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await;
    assert_eq!(gone.expect_err("deleted").code(), Code::Unauthenticated);
}

#[tokio::test]
async fn secrets_rotate_an_expired_one_is_refused_and_a_revoked_one_alone_stops() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let mut client = server.client().await;
    let add = |expires_in_seconds| pb::AddServiceAccountSecretRequest {
        client_id: account.client_id.clone(),
        expires_in_seconds,
    };
    let second =
        admin.0.add_service_account_secret(with_bearer(add(None), &admin.1)).await.expect("added").into_inner();
    assert_ne!(second.client_secret, account.secret);
    for secret in [&account.secret, &second.client_secret] {
        issue(&mut client, secret_grant(&account.client_id, secret, "", "")).await.expect("both secrets work");
    }
    let first_id = second.service_account.as_ref().expect("account").secrets[0].secret_id.clone();
    let revoke = pb::RevokeServiceAccountSecretRequest { client_id: account.client_id.clone(), secret_id: first_id };
    admin.0.revoke_service_account_secret(with_bearer(revoke, &admin.1)).await.expect("revoked");
    let old = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await;
    assert_eq!(old.expect_err("revoked secret").code(), Code::Unauthenticated);
    issue(&mut client, secret_grant(&account.client_id, &second.client_secret, "", "")).await.expect("the other works");

    // The secret that was used shows its last use.
    let get = pb::GetServiceAccountRequest { client_id: account.client_id.clone() };
    let shown = admin.0.get_service_account(with_bearer(get, &admin.1)).await.expect("got").into_inner();
    let shown = shown.service_account.expect("account");
    assert_eq!(shown.secrets.len(), 1);
    assert!(shown.secrets[0].last_used_at.is_some(), "{shown:?}");

    // A secret that expires in a second works, then does not.
    let expiring =
        admin.0.add_service_account_secret(with_bearer(add(Some(1)), &admin.1)).await.expect("added").into_inner();
    issue(&mut client, secret_grant(&account.client_id, &expiring.client_secret, "", "")).await.expect("works");
    // Time is what is tested here: the secret's expiry passes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = issue(&mut client, secret_grant(&account.client_id, &expiring.client_secret, "", "")).await;
    assert_eq!(expired.expect_err("expired").message(), "invalid client credentials");
}

#[tokio::test]
async fn private_key_jwt_with_eddsa_and_es256_works_once_per_assertion() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut client = server.client().await;
    for key in [ed25519_key(), p256_key_as_pem()] {
        let account = create(&mut admin, &["svc"], &["orders"], &[]).await;
        register(&mut admin, &account.client_id, &key).await;
        let assertion = sign(&key, &claims(&account.client_id, "sigil", 60, &unique_jti()));
        let issued = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await.expect("issued");
        assert!(validate(&mut client, &issued.access_token).await.valid);
        let replayed = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await;
        assert_eq!(replayed.expect_err("replay").message(), "invalid client credentials", "{:?}", key.algorithm);
        // The client id may come from the assertion alone (RFC 7521 §4.2).
        let fresh = sign(&key, &claims(&account.client_id, "sigil", 60, &unique_jti()));
        issue(&mut client, assertion_grant("", &fresh)).await.expect("client id from sub");
    }
}

#[tokio::test]
async fn forged_and_misdirected_assertions_are_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut client = server.client().await;
    let key = ed25519_key();
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    register(&mut admin, &account.client_id, &key).await;
    let id = account.client_id.as_str();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);

    let mut refused = vec![
        ("another audience", sign(&key, &claims(id, "https://elsewhere.example/token", 60, &unique_jti()))),
        ("too long-lived", sign(&key, &claims(id, "sigil", 24 * 3600, &unique_jti()))),
        ("expired", sign(&key, &claims(id, "sigil", -120, &unique_jti()))),
        ("another key", sign(&ed25519_key(), &claims(id, "sigil", 60, &unique_jti()))),
    ];
    let mut no_jti = claims(id, "sigil", 60, "x");
    no_jti.as_object_mut().expect("object").remove("jti");
    refused.push(("no jti", sign(&key, &no_jti)));
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(id, "sigil", 60, &unique_jti()).to_string().as_bytes())
    );
    refused.push(("alg none", none));
    let hmac = EncodingKey::from_secret(&key.public_bytes);
    let hs256 = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(id, "sigil", 60, &unique_jti()), &hmac)
        .expect("signed");
    refused.push(("HS256 keyed with the public key", hs256));
    let hmac_of_jwk = EncodingKey::from_secret(key.public.as_bytes());
    let hs256_jwk =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(id, "sigil", 60, &unique_jti()), &hmac_of_jwk)
            .expect("signed");
    refused.push(("HS256 keyed with the registered JWK text", hs256_jwk));
    for (what, assertion) in refused {
        let answer = issue(&mut client, assertion_grant(id, &assertion)).await;
        let status = answer.expect_err(what);
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "invalid client credentials"), "{what}");
    }
    // A client without a registered key gets no token from an assertion.
    let keyless = create(&mut admin, &[], &["orders"], &[]).await;
    let assertion = sign(&key, &claims(&keyless.client_id, "sigil", 60, &unique_jti()));
    assert!(issue(&mut client, assertion_grant(&keyless.client_id, &assertion)).await.is_err());
    // Keys of the wrong kind are refused when registered.
    for bad in [r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#, "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----"]
    {
        let request = pb::SetServiceAccountKeyRequest { client_id: keyless.client_id.clone(), public_key: bad.into() };
        let status = admin.0.set_service_account_key(with_bearer(request, &admin.1)).await.expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
    }
}

/// Failures within a minute that lock a client id in [`locking_server`].
const LOCK_THRESHOLD: u32 = 3;

/// A server that locks a client id for ten minutes after
/// [`LOCK_THRESHOLD`] failures within a minute.
async fn locking_server() -> TestServer {
    TestServer::start_with(|config| {
        config.lockout_threshold = LOCK_THRESHOLD;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
    })
    .await
}

/// The lock turns away wrong secrets; the right one still passes (a
/// stranger who knows the client id must not keep the client out: see
/// `attack_review::a_stranger_who_knows_a_client_id_cannot_lock_the_client_out`),
/// and the lock stays until it runs out.
#[tokio::test]
async fn repeated_failures_lock_the_client_id_against_wrong_secrets() {
    let server = locking_server().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let other = create(&mut admin, &[], &["orders"], &[]).await;
    let mut client = server.client().await;
    for _ in 0..LOCK_THRESHOLD {
        let wrong = issue(&mut client, secret_grant(&account.client_id, "guess", "", "")).await;
        assert_eq!(wrong.expect_err("wrong").code(), Code::Unauthenticated);
    }
    let locked = issue(&mut client, secret_grant(&account.client_id, "guess", "", "")).await;
    let locked = locked.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(locked.metadata().get("retry-after").is_some(), "a retry-after hint");
    issue(&mut client, secret_grant(&account.client_id, &account.secret, "", ""))
        .await
        .expect("the right secret passes");
    let still_locked = issue(&mut client, secret_grant(&account.client_id, "guess", "", "")).await;
    assert_eq!(still_locked.expect_err("wrong").code(), Code::ResourceExhausted, "a success leaves the lock");
    issue(&mut client, secret_grant(&other.client_id, &other.secret, "", ""))
        .await
        .expect("another client is unaffected");
    // Unknown ids lock alike.
    let made_up = uuid::Uuid::now_v7().to_string();
    for _ in 0..LOCK_THRESHOLD {
        let _ = issue(&mut client, secret_grant(&made_up, "guess", "", "")).await;
    }
    let status = issue(&mut client, secret_grant(&made_up, "guess", "", "")).await.expect_err("locked");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

/// The same for `private_key_jwt`: during a lock a fresh assertion passes
/// (its `jti` spent), and a replayed or forged one is turned away with the
/// lock's answer.
#[tokio::test]
async fn a_locked_client_id_still_takes_a_fresh_assertion_and_turns_away_a_replay() {
    let server = locking_server().await;
    let mut admin = server.admin().await;
    let mut client = server.client().await;
    let account = create(&mut admin, &["svc"], &["orders"], &[]).await;
    let key = ed25519_key();
    register(&mut admin, &account.client_id, &key).await;
    let forged = sign(&ed25519_key(), &claims(&account.client_id, "sigil", 60, &unique_jti()));
    for _ in 0..LOCK_THRESHOLD {
        let wrong = issue(&mut client, assertion_grant(&account.client_id, &forged)).await;
        assert_eq!(wrong.expect_err("forged").code(), Code::Unauthenticated);
    }
    let locked = issue(&mut client, assertion_grant(&account.client_id, &forged)).await.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");

    let assertion = sign(&key, &claims(&account.client_id, "sigil", 60, &unique_jti()));
    let issued = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await.expect("a fresh assertion");
    assert!(validate(&mut client, &issued.access_token).await.valid);
    let replayed = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await.expect_err("replay");
    assert_eq!(replayed.code(), Code::ResourceExhausted, "a replay during the lock: {replayed:?}");
}

#[tokio::test]
async fn revoking_by_token_id_and_by_account_refuses_the_next_validate() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let mut client = server.client().await;
    let grant = || secret_grant(&account.client_id, &account.secret, "", "");

    let one = issue(&mut client, grant()).await.expect("issued");
    let two = issue(&mut client, grant()).await.expect("issued");
    let revoke = |target| pb::RevokeRequest { target: Some(target), reason: "e2e".into() };
    let counts = client
        .revoke(with_bearer(revoke(Target::TokenId(one.token_id.clone())), &admin.1))
        .await
        .expect("revoked by id")
        .into_inner();
    assert_eq!(counts.revoked_tokens, 1);
    let verdict = validate(&mut client, &one.access_token).await;
    assert_eq!(verdict.failure(), pb::ValidationFailure::TokenRevoked);
    assert!(validate(&mut client, &two.access_token).await.valid, "only that token");

    // Holding the token is enough to revoke it, as for users.
    client.revoke(revoke(Target::AccessToken(two.access_token.clone()))).await.expect("revoked by its holder");
    assert_eq!(validate(&mut client, &two.access_token).await.failure(), pb::ValidationFailure::TokenRevoked);

    let three = issue(&mut client, grant()).await.expect("issued");
    let four = issue(&mut client, grant()).await.expect("issued");
    let all = pb::RevokeServiceAccountTokensRequest { client_id: account.client_id.clone(), reason: "leaked".into() };
    admin.0.revoke_service_account_tokens(with_bearer(all, &admin.1)).await.expect("revoked");
    for token in [&three, &four] {
        assert_eq!(validate(&mut client, &token.access_token).await.failure(), pb::ValidationFailure::TokenRevoked);
    }
    let later = issue(&mut client, grant()).await.expect("new tokens are issued");
    assert!(validate(&mut client, &later.access_token).await.valid);
}

#[tokio::test]
async fn authz_passes_a_service_token_with_its_client_headers_and_stops_it_once_revoked() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &["billing"], &["orders"], &["read"]).await;
    let mut client = server.client().await;
    let issued = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    let (status, headers) = authz(server.http_addr(), "orders", &issued.access_token).await;
    assert_eq!(status, 200, "{headers}");
    assert!(headers.contains(&format!("x-sigil-client-id: {}", account.client_id)), "{headers}");
    assert!(headers.contains("x-sigil-roles: billing"), "{headers}");
    assert!(headers.contains("x-sigil-scope: read"), "{headers}");
    assert!(!headers.contains("forged"), "a client's own identity headers never pass: {headers}");
    // Minted for "orders", it does not open Sigil's own routes.
    assert_eq!(authz(server.http_addr(), "", &issued.access_token).await.0, 401);
    let all = pb::RevokeServiceAccountTokensRequest { client_id: account.client_id.clone(), reason: String::new() };
    admin.0.revoke_service_account_tokens(with_bearer(all, &admin.1)).await.expect("revoked");
    assert_eq!(authz(server.http_addr(), "orders", &issued.access_token).await.0, 401, "the very next check");
}

#[tokio::test]
async fn only_an_admin_user_calls_the_service_account_rpcs() {
    let server = TestServer::start().await;
    server.create_user("bob", "bob-password", &["billing"]).await;
    let mut client = server.client().await;
    let bob = login(&mut client, "bob", "bob-password").await.access_token;
    let mut admin = server.admin().await;
    let create_request = || pb::CreateServiceAccountRequest {
        name: "x".into(),
        roles: vec!["admin".into()],
        audiences: vec!["sigil".into()],
        scopes: vec![],
    };
    let denied = admin.0.create_service_account(with_bearer(create_request(), &bob)).await.expect_err("not admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = admin.0.create_service_account(create_request()).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let list = admin.0.list_service_accounts(with_bearer(pb::ListServiceAccountsRequest::default(), &bob)).await;
    assert_eq!(list.expect_err("not admin").code(), Code::PermissionDenied);

    // A service account with role admin and Sigil's own audience is still no admin user.
    let account = create(&mut admin, &["admin"], &["sigil"], &[]).await;
    let token = issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    let request = with_bearer(pb::ListServiceAccountsRequest::default(), &token.access_token);
    assert_eq!(admin.0.list_service_accounts(request).await.expect_err("a service").code(), Code::PermissionDenied);
    let users = with_bearer(pb::ListUsersRequest::default(), &token.access_token);
    assert_eq!(admin.0.list_users(users).await.expect_err("a service").code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_after_a_restart_and_no_secret_reaches_logs_or_events() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = ChildServer::spawn_logging(data.path(), &[], "debug").await;
    let mut admin: Admin = (AdminServiceClient::new(connect(first.grpc_addr).await), String::new());
    let mut client = first.client().await;
    admin.1 = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let key = ed25519_key();
    register(&mut admin, &account.client_id, &key).await;
    let add = pb::AddServiceAccountSecretRequest { client_id: account.client_id.clone(), expires_in_seconds: None };
    let second = admin.0.add_service_account_secret(with_bearer(add, &admin.1)).await.expect("added").into_inner();
    let assertion = sign(&key, &claims(&account.client_id, "sigil", 120, &unique_jti()));
    let issued = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await.expect("issued");
    let by_secret =
        issue(&mut client, secret_grant(&account.client_id, &account.secret, "", "")).await.expect("issued");
    let _ = issue(&mut client, secret_grant(&account.client_id, "a-wrong-secret-guess", "", "")).await;
    let _ = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await;

    // Every event of the trail, none with a secret or a token in it.
    let mut stream = admin
        .0
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &admin.1))
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Ok(Some(message))) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        events.push(message.event.expect("event"));
    }
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    for kind in [pb::EventKind::ServiceAccountCreated, pb::EventKind::ClientKeySet, pb::EventKind::ClientSecretAdded] {
        assert!(kinds.contains(&kind), "{kind:?} in {kinds:?}");
    }
    assert!(events.iter().any(|e| e.kind() == pb::EventKind::ClientAuthFailed && e.client_id == account.client_id));
    let first_output = first.output.clone();
    first.kill_9().await;

    // The same data, a new process: the assertion is still spent.
    let second_life = ChildServer::spawn_logging(data.path(), &[], "debug").await;
    let mut client = second_life.client().await;
    let replayed = issue(&mut client, assertion_grant(&account.client_id, &assertion)).await;
    assert_eq!(replayed.expect_err("replay after restart").message(), "invalid client credentials");
    issue(&mut client, secret_grant(&account.client_id, &second.client_secret, "", "")).await.expect("secrets survive");
    let output = format!("{}{}", first_output.lock().expect("log").clone(), second_life.output.lock().expect("log"));
    let secrets = [&account.secret, &second.client_secret, &issued.access_token, &by_secret.access_token, &assertion];
    for secret in secrets {
        assert!(!output.contains(secret.as_str()), "a secret or token in the log");
        assert!(!events.iter().any(|e| format!("{e:?}").contains(secret.as_str())), "a secret or token in an event");
    }
    assert!(!output.contains("a-wrong-secret-guess"), "a presented secret in the log");
    assert!(output.contains("client assertion was replayed"), "the replay is logged (without the assertion)");
    second_life.terminate().await;
}

#[tokio::test]
async fn the_revocation_stream_carries_a_service_accounts_not_before_bound() {
    use pb::watch_revocations_response::Message;
    use pb::{revocation::Target as Entry, revocation_service_client::RevocationServiceClient};
    let server = TestServer::start().await;
    server.create_user("edge", "edge-password", &["verifier"]).await;
    let edge = login(&mut server.client().await, "edge", "edge-password").await.access_token;
    let mut admin = server.admin().await;
    let account = create(&mut admin, &[], &["orders"], &[]).await;
    let request = pb::WatchRevocationsRequest { after_sequence: 0, epoch: String::new(), batches: false };
    let mut stream = RevocationServiceClient::new(server.channel().await)
        .watch_revocations(with_bearer(request, &edge))
        .await
        .expect("watching")
        .into_inner();
    let mut next = async || {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        message.expect("in time").expect("open").expect("a message").message.expect("set")
    };
    while !matches!(next().await, Message::SnapshotEnd(_)) {}
    let all = pb::RevokeServiceAccountTokensRequest { client_id: account.client_id.clone(), reason: String::new() };
    admin.0.revoke_service_account_tokens(with_bearer(all, &admin.1)).await.expect("revoked");
    let entry = loop {
        match next().await {
            Message::Heartbeat(_) => continue,
            Message::Revocation(entry) => break entry,
            other => panic!("expected the revocation, got {other:?}"),
        }
    };
    let Some(Entry::ServiceAccountNotBefore(bound)) = entry.target else { panic!("{entry:?}") };
    assert_eq!(bound.client_id, account.client_id);
    assert!(bound.not_before.is_some());
}

/// Issue 13 and 15 together: a service account with role `verifier` may
/// follow the revocation stream with its own service token (no user, no
/// password), and an edge verifier following it refuses a service token
/// once its account's tokens are revoked, as `Validate` does.
#[tokio::test]
async fn a_verifier_service_account_follows_the_stream_and_its_verifier_refuses_revoked_service_tokens() {
    use sigil_verifier::{Refusal, ValidationFailure};
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let edge = create(&mut admin, &["verifier"], &["sigil"], &[]).await;
    let edge_token = issue(&mut server.client().await, secret_grant(&edge.client_id, &edge.secret, "", ""))
        .await
        .expect("the verifier account's token")
        .access_token;
    let verifier = crate::verifier_parity::follow(server.grpc_addr(), edge_token).await;

    let orders = create(&mut admin, &[], &["orders"], &[]).await;
    let token = issue(&mut server.client().await, secret_grant(&orders.client_id, &orders.secret, "orders", ""))
        .await
        .expect("a service token")
        .access_token;
    assert!(verifier.verify(&token, Some("orders")).is_ok(), "a fresh service token verifies at the edge");
    let all = pb::RevokeServiceAccountTokensRequest { client_id: orders.client_id.clone(), reason: String::new() };
    admin.0.revoke_service_account_tokens(with_bearer(all, &admin.1)).await.expect("revoked");
    let remote = validate(&mut server.client().await, &token).await;
    assert!(!remote.valid, "Validate refuses the revoked service token");
    let refused =
        sigil_tests::eventually(Duration::from_secs(5), || async { verifier.verify(&token, Some("orders")).err() });
    assert_eq!(refused.await, Some(Refusal::Invalid(ValidationFailure::TokenRevoked)), "the edge refuses it too");
    assert_eq!(remote.failure(), pb::ValidationFailure::TokenRevoked, "with the same verdict");
}
