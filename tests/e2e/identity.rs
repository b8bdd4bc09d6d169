use sigil_proto::pb::{self, ValidationFailure};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, login_request, validate};
use tonic::Code;

#[tokio::test]
async fn admin_logs_in_and_the_token_validates_with_its_claims() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    assert!(!session.access_token.is_empty() && !session.refresh_token.is_empty());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let access_exp = session.access_token_expires_at.expect("expiry").seconds;
    assert!((now + 14 * 60..=now + 15 * 60 + 1).contains(&access_exp), "15 min access TTL");
    let refresh_exp = session.refresh_token_expires_at.expect("expiry").seconds;
    assert!(refresh_exp >= now + 29 * 24 * 3600, "30 day session");

    let verdict = validate(&mut client, &session.access_token).await;
    assert!(verdict.valid, "{verdict:?}");
    assert_eq!(verdict.failure(), ValidationFailure::Unspecified);
    let claims = verdict.claims.expect("claims of a valid token");
    assert_eq!(claims.username, "admin");
    assert_eq!(claims.user_id, session.user_id);
    assert_eq!(claims.session_id, session.session_id);
    assert_eq!(claims.roles, vec!["admin".to_string()]);
    assert_eq!(claims.issuer, "sigil");
    assert_eq!(claims.audience, vec!["sigil".to_string()]);
    assert!(!claims.token_id.is_empty());
}

#[tokio::test]
async fn usernames_are_case_insensitive() {
    let server = TestServer::start().await;
    server.create_user("Carol", "carol-password", &[]).await;
    let mut client = server.client().await;
    let session = login(&mut client, "  CAROL ", "carol-password").await;
    let claims = validate(&mut client, &session.access_token).await.claims.expect("valid");
    assert_eq!(claims.username, "carol");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_one_identical_error() {
    let server = TestServer::start().await;
    server.create_user("dave", "dave-password", &[]).await;
    let mut client = server.client().await;
    let wrong = client.authenticate(login_request("dave", "not-it")).await.expect_err("wrong password refused");
    let unknown = client.authenticate(login_request("nobody", "not-it")).await.expect_err("unknown user refused");
    for status in [&wrong, &unknown] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid username or password");
    }
}

#[tokio::test]
async fn empty_and_oversized_login_fields_are_invalid_arguments() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let cases = [
        ("", "pw", None, "username is empty"),
        ("   ", "pw", None, "username is empty"),
        ("admin", "", None, "password is empty"),
        (&"u".repeat(257) as &str, "pw", None, "username is longer than 256 bytes"),
        ("admin", &"p".repeat(1025), None, "password is longer than 1024 bytes"),
        ("ad\0min", "pw", None, "username contains control characters"),
        ("admin", "pw", Some("d".repeat(257)), "device_name is longer than 256 bytes"),
        // A right-to-left override would make the console show another name.
        (
            "admin",
            "pw",
            Some("laptop\u{202E}txt.exe".into()),
            "device_name contains an invisible or bidirectional-control character",
        ),
        (
            "admin",
            "pw",
            Some("lap\u{200B}top".into()),
            "device_name contains an invisible or bidirectional-control character",
        ),
    ];
    for (username, password, device_name, message) in cases {
        let status = client
            .authenticate(pb::AuthenticateRequest {
                username: username.into(),
                password: password.into(),
                device_name,
                audience: None,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{message}");
        assert_eq!(status.message(), message);
    }
}

#[tokio::test]
async fn a_requested_audience_is_issued_and_checked() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = client
        .authenticate(pb::AuthenticateRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            device_name: None,
            audience: Some("billing".into()),
        })
        .await
        .expect("login")
        .into_inner();
    let check = |audience: Option<&str>| pb::ValidateRequest {
        token: session.access_token.clone(),
        audience: audience.map(Into::into),
    };
    let ok = client.validate(check(Some("billing"))).await.expect("answer").into_inner();
    assert!(ok.valid);
    assert_eq!(ok.claims.expect("claims").audience, vec!["billing".to_string()]);
    let wrong = client.validate(check(Some("shipping"))).await.expect("answer").into_inner();
    assert!(!wrong.valid);
    assert_eq!(wrong.failure(), ValidationFailure::WrongAudience);
    assert!(wrong.claims.is_none(), "no claims for an invalid token");
}

#[tokio::test]
async fn validate_refuses_only_an_empty_token_as_an_error() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let empty = client
        .validate(pb::ValidateRequest { token: String::new(), audience: None })
        .await
        .expect_err("empty token refused");
    assert_eq!(empty.code(), Code::InvalidArgument);
    // 20 KiB is over the 8 KiB token cap but within the message size limit.
    for garbage in ["garbage", "a.b.c", &"x".repeat(20_000) as &str] {
        let verdict = validate(&mut client, garbage).await;
        assert!(!verdict.valid);
        assert_eq!(verdict.failure(), ValidationFailure::Malformed, "{}", &garbage[..garbage.len().min(20)]);
    }
}

#[tokio::test]
async fn tokens_verify_offline_against_the_published_jwks() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let jwks_json = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;

    // An independent verifier: jsonwebtoken's own JWK handling, no Sigil code.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks_json).expect("RFC 7517 key set");
    let header = jsonwebtoken::decode_header(&session.access_token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("usable key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["sigil"]);
    validation.set_issuer(&["sigil"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&session.access_token, &key, &validation).expect("verifies");
    assert_eq!(data.claims["sub"], session.user_id.as_str());
    assert_eq!(data.claims["sid"], session.session_id.as_str());
    for claim in ["exp", "iat", "nbf", "jti"] {
        assert!(data.claims.get(claim).is_some(), "claim {claim} present");
    }
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused_with_the_limit_named() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let status = client
        .validate(pb::ValidateRequest { token: "x".repeat(100_000), audience: None })
        .await
        .expect_err("oversized message refused");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("65536"), "{}", status.message());
}

#[tokio::test]
async fn a_revocation_reason_with_control_or_bidi_characters_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", sigil_tests::ADMIN_PASSWORD).await;
    for reason in ["\u{1b}[2J\u{1b}[31mPWNED\nfake line", "\u{202e}evil"] {
        let request = pb::RevokeRequest {
            target: Some(pb::revoke_request::Target::AccessToken(session.access_token.clone())),
            reason: reason.into(),
        };
        let refused = client.revoke(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    assert!(validate(&mut client, &session.access_token).await.valid, "nothing was revoked");
}
