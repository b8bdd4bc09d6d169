//! Parity: for every token of a corpus, `sigil-verifier`'s local verdict
//! equals `Validate`'s. The corpus holds genuine tokens in every state a
//! token can reach (expired, not yet valid, wrong audience and issuer,
//! revoked by each target, a disabled user, a role change, rotated and
//! distrusted keys, a leaked superseded key signing after its end), every forgery of `forged_tokens.rs`, and tokens mutated
//! at random.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::TestRunner,
};
use sigil_proto::pb::{self, revoke_request::Target};
use sigil_tests::{TestServer, eventually, login, with_bearer};
use sigil_verifier::{BearerSource, Refusal, ValidationFailure, Verifier, VerifierConfig};

use crate::forged_tokens::{Forge, corpus};

/// How long a revocation may take to reach the verifier in these tests.
const PROPAGATION: Duration = Duration::from_secs(5);

/// Logs in at `addr` on every connection of the verifier's stream, so its
/// credential outlives a distrusted key or a server that changed its store.
pub(crate) struct LoginBearer {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) username: &'static str,
    pub(crate) password: &'static str,
}

impl BearerSource for LoginBearer {
    fn bearer(&self) -> BoxFuture<'_, Result<String, tonic::Status>> {
        Box::pin(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                .map_err(|e| tonic::Status::internal(e.to_string()))?
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut client = pb::identity_service_client::IdentityServiceClient::new(channel);
            let response = client.authenticate(sigil_tests::login_request(self.username, self.password)).await?;
            Ok(response.into_inner().access_token)
        })
    }
}

/// A user with role `verifier`: the verifier's own credential.
pub(crate) async fn verifier_login(server: &TestServer) -> LoginBearer {
    server.create_user("edge", "edge-password", &["verifier"]).await;
    LoginBearer { addr: server.grpc_addr(), username: "edge", password: "edge-password" }
}

/// A token of the verifier user (for clients that take a fixed one).
pub(crate) async fn verifier_token(server: &TestServer) -> String {
    let login = verifier_login(server).await;
    login.bearer().await.expect("the verifier user logs in")
}

/// A verifier following `addr`, current.
pub(crate) async fn follow(addr: std::net::SocketAddr, bearer: impl BearerSource) -> Arc<Verifier> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let verifier = Arc::new(Verifier::start(VerifierConfig::new(endpoint, bearer)));
    verifier.wait_until_current(Duration::from_secs(10)).await.expect("the verifier becomes current");
    verifier
}

/// `Validate`'s verdict, as the rules' failure (`None`: valid).
async fn remote(server: &TestServer, token: &str, audience: Option<&str>) -> Option<pb::ValidationFailure> {
    let request = pb::ValidateRequest { token: token.to_string(), audience: audience.map(str::to_string) };
    let response = server.client().await.validate(request).await.expect("validate").into_inner();
    (!response.valid).then(|| response.failure())
}

/// The verifier's verdict in `Validate`'s terms; stale is never parity.
fn local(verifier: &Verifier, token: &str, audience: Option<&str>) -> Option<pb::ValidationFailure> {
    match verifier.verify(token, audience) {
        Ok(_) => None,
        Err(Refusal::Invalid(failure)) => Some(failure.into()),
        Err(Refusal::Stale) => panic!("the verifier went stale during the parity test"),
    }
}

/// Both verdicts agree (waiting for a revocation to arrive); returns `Validate`'s.
async fn agree(
    server: &TestServer,
    verifier: &Verifier,
    what: &str,
    token: &str,
    audience: Option<&str>,
) -> Option<pb::ValidationFailure> {
    let expected = remote(server, token, audience).await;
    let agreed =
        eventually(PROPAGATION, || async { (local(verifier, token, audience) == expected).then_some(()) }).await;
    assert!(
        agreed.is_some(),
        "{what}: Validate says {expected:?}, the verifier says {:?}",
        local(verifier, token, audience)
    );
    expected
}

#[tokio::test]
async fn every_forgery_gets_the_same_verdict_locally_as_from_validate() {
    let forge = Forge::new().await;
    let verifier = follow(forge.server.grpc_addr(), verifier_token(&forge.server).await).await;
    let cases = corpus(&forge);
    assert!(cases.len() > 30, "the whole corpus of forged_tokens.rs: {}", cases.len());
    for case in cases {
        let verdict = agree(&forge.server, &verifier, &case.what, &case.token, None).await;
        assert_eq!(verdict, Some(case.expected), "{}", case.what);
    }
    assert_eq!(agree(&forge.server, &verifier, "genuine", &forge.genuine, None).await, None);
}

#[tokio::test]
async fn genuine_tokens_in_every_state_get_the_same_verdict_locally_as_from_validate() {
    let server = TestServer::start().await;
    let verifier = follow(server.grpc_addr(), verifier_login(&server).await).await;
    let (mut admin, admin_token) = server.admin().await;
    let mut client = server.client().await;
    let user = server.create_user("alice", "alice-password", &["reader"]).await;
    let fresh = || async { login(&mut server.client().await, "alice", "alice-password").await };

    let valid = fresh().await;
    assert_eq!(agree(&server, &verifier, "valid", &valid.access_token, None).await, None);
    assert_eq!(agree(&server, &verifier, "own audience", &valid.access_token, Some("sigil")).await, None);
    let wrong = agree(&server, &verifier, "wrong audience", &valid.access_token, Some("billing")).await;
    assert_eq!(wrong, Some(pb::ValidationFailure::WrongAudience));

    // Revoked by each target.
    let by_token = fresh().await;
    let claims = remote_claims(&server, &by_token.access_token).await;
    let request = pb::RevokeRequest { target: Some(Target::TokenId(claims.token_id)), reason: "parity".into() };
    client.revoke(with_bearer(request, &admin_token)).await.expect("revoke token id");
    let verdict = agree(&server, &verifier, "token revoked", &by_token.access_token, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::TokenRevoked));

    let by_session = fresh().await;
    let request =
        pb::RevokeRequest { target: Some(Target::SessionId(by_session.session_id.clone())), reason: "parity".into() };
    client.revoke(with_bearer(request, &admin_token)).await.expect("revoke session");
    let verdict = agree(&server, &verifier, "session revoked", &by_session.access_token, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::SessionRevoked));

    // A role change: tokens carrying the old roles stop speaking for alice.
    let before_roles = fresh().await;
    let update = pb::UpdateUserRequest {
        user_id: user.id.to_string(),
        roles: Some(pb::RoleList { roles: vec!["writer".into()] }),
        ..Default::default()
    };
    admin.update_user(with_bearer(update, &admin_token)).await.expect("change roles");
    let verdict = agree(&server, &verifier, "role change", &before_roles.access_token, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::TokenRevoked));
    let after_roles = fresh().await;
    assert_eq!(agree(&server, &verifier, "after the role change", &after_roles.access_token, None).await, None);

    // Rotation keeps old tokens valid and new ones are accepted.
    let before_rotation = fresh().await;
    let rotate = pb::RotateSigningKeyRequest { distrust_previous: false };
    admin.rotate_signing_key(with_bearer(rotate, &admin_token)).await.expect("rotate");
    let after_rotation = fresh().await;
    assert_eq!(agree(&server, &verifier, "signed by the old key", &before_rotation.access_token, None).await, None);
    assert_eq!(agree(&server, &verifier, "signed by the new key", &after_rotation.access_token, None).await, None);

    // Distrust: everything the previous keys signed is refused.
    let distrust = pb::RotateSigningKeyRequest { distrust_previous: true };
    admin.rotate_signing_key(with_bearer(distrust, &admin_token)).await.expect("rotate, distrusting");
    let verdict = agree(&server, &verifier, "distrusted key", &after_rotation.access_token, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::UnknownKey));
    let trusted = fresh().await;
    assert_eq!(agree(&server, &verifier, "signed by the newest key", &trusted.access_token, None).await, None);
    // The admin's own token went with the distrusted key.
    let (mut admin, admin_token) = server.admin().await;

    // A disabled user; then log out everywhere for another.
    let disable = pb::UpdateUserRequest { user_id: user.id.to_string(), disabled: Some(true), ..Default::default() };
    admin.update_user(with_bearer(disable, &admin_token)).await.expect("disable");
    let verdict = agree(&server, &verifier, "disabled user", &trusted.access_token, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::UserDisabled));

    let bob = server.create_user("bob", "bob-password", &[]).await;
    let bobs = login(&mut server.client().await, "bob", "bob-password").await;
    let everywhere = pb::RevokeRequest { target: Some(Target::UserId(bob.id.to_string())), reason: "parity".into() };
    client.revoke(with_bearer(everywhere, &admin_token)).await.expect("revoke bob everywhere");
    let verdict = agree(&server, &verifier, "all sessions of the user", &bobs.access_token, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::SessionRevoked));
}

#[tokio::test]
async fn a_forgery_with_a_superseded_key_after_it_stopped_signing_is_refused_locally_as_by_validate() {
    // A leaked old key: it verifies the tokens it signed until they expire,
    // but anything it "signed" after it was superseded (plus the handover
    // window) is a forgery. The verifier must know when each key stopped.
    let server = TestServer::start().await;
    let verifier = follow(server.grpc_addr(), verifier_login(&server).await).await;
    let (mut admin, admin_token) = server.admin().await;
    let leaked = server.identity().key_ring();
    let old_kid = leaked.active().kid.clone();
    admin
        .rotate_signing_key(with_bearer(pb::RotateSigningKeyRequest { distrust_previous: false }, &admin_token))
        .await
        .expect("rotate");
    let ring = server.identity().key_ring();
    let ended = ring.verifier(&old_kid).and_then(|key| key.signing_ended_at).expect("the old key is superseded");

    let forge_at = |iat: i64| {
        let mut claims = payload_of(&admin_token);
        claims["iat"] = iat.into();
        claims["nbf"] = iat.into();
        claims["exp"] = (iat + 60).into();
        claims["jti"] = uuid::Uuid::now_v7().to_string().into();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(old_kid.clone());
        jsonwebtoken::encode(&header, &claims, &leaked.active().encoding).expect("signs")
    };
    // Within the window the old key's tokens are genuine enough.
    let in_window = forge_at(ended);
    assert_eq!(agree(&server, &verifier, "old key, before it stopped signing", &in_window, None).await, None);
    // Past the window: wait until it is not in the future any more, so that
    // only the signing window can refuse it.
    let late = ended + sigil_verifier::KEY_HANDOVER_SECONDS + 1;
    let forged = forge_at(late);
    let wait = u64::try_from(late - unix_now()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    let verdict = agree(&server, &verifier, "old key, after it stopped signing", &forged, None).await;
    assert_eq!(verdict, Some(pb::ValidationFailure::BadSignature));
}

#[tokio::test]
async fn expired_not_yet_valid_and_foreign_issuer_tokens_agree() {
    // Covered by the forgery corpus with the server's key; here the same
    // rules against a server configured with another issuer and TTL, which
    // the verifier is told about.
    let server = TestServer::start_with(|c| {
        c.issuer = "https://id.example".into();
        c.access_token_ttl = Duration::from_secs(120);
    })
    .await;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr())).expect("endpoint");
    let config = VerifierConfig::new(endpoint, verifier_token(&server).await)
        .issuer("https://id.example")
        .max_token_lifetime(Duration::from_secs(120));
    let verifier = Verifier::start(config);
    verifier.wait_until_current(Duration::from_secs(10)).await.expect("current");
    let token = login(&mut server.client().await, "edge", "edge-password").await.access_token;
    assert_eq!(agree(&server, &verifier, "valid under another issuer", &token, None).await, None);
    // A verifier told the wrong issuer refuses what the server accepts:
    // its configuration is part of the rules.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr())).expect("endpoint");
    let misconfigured = Verifier::start(VerifierConfig::new(endpoint, token.clone()));
    misconfigured.wait_until_current(Duration::from_secs(10)).await.expect("current");
    assert_eq!(misconfigured.verify(&token, None).err(), Some(Refusal::Invalid(ValidationFailure::WrongIssuer)));
}

#[tokio::test]
async fn randomly_mutated_tokens_get_the_same_verdict_locally_as_from_validate() {
    let forge = Forge::new().await;
    let verifier = follow(forge.server.grpc_addr(), verifier_token(&forge.server).await).await;
    let genuine = forge.genuine.clone();
    let len = genuine.len();
    // (position, replacement byte, how many bytes to cut from the end)
    let strategy = (0..len, proptest::char::range('-', 'z'), 0..4usize);
    let mut runner = TestRunner::deterministic();
    for _ in 0..300 {
        let (at, with, cut) = strategy.new_tree(&mut runner).expect("a case").current();
        let mut mutated: Vec<char> = genuine.chars().collect();
        mutated[at] = with;
        mutated.truncate(len - cut);
        let mutated: String = mutated.into_iter().collect();
        agree(&forge.server, &verifier, &format!("mutated at {at} with {with:?}, cut {cut}"), &mutated, None).await;
    }
}

async fn remote_claims(server: &TestServer, token: &str) -> pb::Claims {
    let request = pb::ValidateRequest { token: token.to_string(), audience: None };
    server.client().await.validate(request).await.expect("validate").into_inner().claims.expect("claims")
}

fn payload_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_secs()).expect("fits")
}
