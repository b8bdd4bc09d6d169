//! Hostile bytes on the wire: requests that are not valid protobuf for the
//! method are the caller's fault (`INVALID_ARGUMENT`), not the server's.

use proptest::prelude::*;
use prost::bytes::{Buf as _, BufMut as _};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, login_request, maybe_bearer, with_bearer};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Sends raw bytes as the request message; ignores the response body.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

async fn send_raw(server: &TestServer, method: &'static str, bytes: Vec<u8>) -> Result<(), Status> {
    send_raw_as(server.channel().await, method, bytes, None).await
}

/// Like [`send_raw`], on `channel`, with an optional bearer token.
async fn send_raw_as(
    channel: tonic::transport::Channel,
    method: &'static str,
    bytes: Vec<u8>,
    bearer: Option<&str>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(maybe_bearer(bytes, bearer), path, RawCodec).await.map(|_| ())
}

#[tokio::test]
async fn undecodable_requests_are_invalid_arguments_and_the_server_stays_up() {
    let server = TestServer::start().await;
    let cases: [(&'static str, Vec<u8>); 4] = [
        // ValidateRequest.token (field 1, bytes) holding invalid UTF-8.
        ("/sigil.v1.IdentityService/Validate", vec![0x0A, 0x02, 0xFF, 0xFE]),
        // AuthenticateRequest.username with invalid UTF-8.
        ("/sigil.v1.IdentityService/Authenticate", vec![0x0A, 0x01, 0xC3]),
        // A length prefix far past the end of the message.
        ("/sigil.v1.IdentityService/Refresh", vec![0x0A, 0xFF, 0xFF, 0x03, 0x41]),
        // A truncated varint.
        ("/sigil.v1.IdentityService/Revoke", vec![0x08, 0xFF]),
    ];
    for (method, bytes) in cases {
        let status = send_raw(&server, method, bytes).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
        assert!(status.message().contains("could not be decoded"), "{}", status.message());
    }
    let mut health = HealthClient::new(server.channel().await);
    let serving = health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner();
    assert_eq!(serving.status(), ServingStatus::Serving);
}

/// Every unary method, with an admin bearer so that admin requests reach
/// decoding and their handlers.
const UNARY_METHODS: &[&str] = &[
    "/sigil.v1.IdentityService/Authenticate",
    "/sigil.v1.IdentityService/Validate",
    "/sigil.v1.IdentityService/Refresh",
    "/sigil.v1.IdentityService/Revoke",
    "/sigil.v1.IdentityService/GetJwks",
    "/sigil.v1.IdentityService/ListMySessions",
    "/sigil.v1.AdminService/CreateUser",
    "/sigil.v1.AdminService/GetUser",
    "/sigil.v1.AdminService/ListUsers",
    "/sigil.v1.AdminService/UpdateUser",
    "/sigil.v1.AdminService/SetPassword",
    "/sigil.v1.AdminService/DeleteUser",
    "/sigil.v1.AdminService/ListSessions",
    "/sigil.v1.AdminService/ListTokens",
    "/sigil.v1.AdminService/ListSigningKeys",
    "/sigil.v1.AdminService/GetStats",
];

/// The property-test twin of the `grpc_requests` fuzz target: arbitrary
/// bytes to every unary method of a real server get a proper status, never
/// `INTERNAL` or `UNKNOWN`, and the server keeps serving.
#[test]
fn arbitrary_request_bytes_never_get_internal_or_unknown() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (server, channel, token) = runtime.block_on(async {
        let server = TestServer::start().await;
        let channel = server.channel().await;
        let token = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await.access_token;
        (server, channel, token)
    });
    let config = ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(method in 0..UNARY_METHODS.len(), bytes in proptest::collection::vec(any::<u8>(), 0..200))| {
        let method = UNARY_METHODS[method];
        let outcome = runtime.block_on(send_raw_as(channel.clone(), method, bytes, Some(&token)));
        if let Err(status) = outcome {
            prop_assert!(!matches!(status.code(), Code::Internal | Code::Unknown), "{method}: {status:?}");
        }
    });
    runtime.block_on(async {
        let mut health = HealthClient::new(server.channel().await);
        let serving = health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner();
        assert_eq!(serving.status(), ServingStatus::Serving);
    });
}

/// The property-test twin of the `validate_token` fuzz target: no string
/// but the genuine token validates, whether it is arbitrary, shaped like a
/// JWT, or the genuine token with one character changed.
#[test]
fn only_the_genuine_token_validates() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (server, genuine) = runtime.block_on(async {
        let server = TestServer::start().await;
        let token = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await.access_token;
        (server, token)
    });
    let identity = server.identity().clone();
    assert!(identity.validate(&genuine, None).is_ok());
    // The signature's last base64url character carries padding bits: a
    // lenient decoder would accept other characters there (malleability).
    let (head, _) = genuine.split_at(genuine.len() - 1);
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars() {
        let variant = format!("{head}{c}");
        assert!(variant == genuine || identity.validate(&variant, None).is_err(), "accepted {variant}");
    }
    let config = ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config.clone(), |(token in any::<String>(), jwt_like in "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,90}")| {
        prop_assert!(identity.validate(&token, None).is_err());
        prop_assert!(identity.validate(&jwt_like, Some("sigil")).is_err());
    });
    proptest!(config, |(at in 0..genuine.len(), replacement in any::<char>())| {
        let mut changed: Vec<char> = genuine.chars().collect();
        changed[at] = replacement;
        let changed: String = changed.into_iter().collect();
        if changed != genuine {
            prop_assert!(identity.validate(&changed, None).is_err(), "accepted {changed}");
        }
    });
}

/// A login flood saturates argon2: beyond the bounded queue, logins are
/// refused at once with RESOURCE_EXHAUSTED and a retry-after hint, while
/// `Validate` and the admin API keep answering. (How fast they answer
/// under the flood is a benchmark figure: `sigil-bench --only flood`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_admin_keep_answering_while_logins_flood() {
    // The real binary, so that the flooders in this process do not share a
    // runtime with the server.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = sigil_tests::ChildServer::spawn_with(dir.path(), &["--lockout-threshold", "0"]).await;
    let mut client = server.client().await;
    let token = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let admin_token = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let mut admin =
        sigil_proto::pb::admin_service_client::AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..128)
        .map(|i| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut refused_at_once, mut other) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = sigil_proto::pb::AuthenticateRequest {
                        username: "admin".into(),
                        password: format!("wrong-{i}"),
                        ..Default::default()
                    };
                    match client.authenticate(request).await {
                        Err(s) if s.code() == Code::ResourceExhausted && s.metadata().get("retry-after").is_some() => {
                            refused_at_once += 1
                        }
                        Err(s) if s.code() == Code::Unauthenticated => other += 1,
                        outcome => panic!("unexpected login outcome under flood: {outcome:?}"),
                    }
                }
                (refused_at_once, other)
            })
        })
        .collect();

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut validations = 0;
    while tokio::time::Instant::now() < deadline {
        let answer = sigil_tests::validate(&mut client, &token).await;
        assert!(answer.valid, "Validate keeps answering during the flood: {answer:?}");
        validations += 1;
        if validations % 50 == 0 {
            admin
                .get_stats(with_bearer(sigil_proto::pb::GetStatsRequest {}, &admin_token))
                .await
                .expect("the admin API keeps answering during the flood");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut refused, mut hashed) = (0, 0);
    for flooder in flooders {
        let (r, h) = flooder.await.expect("flooder");
        refused += r;
        hashed += h;
    }
    println!("during the flood: {validations} validations; logins hashed {hashed}, refused at once {refused}");
    assert!(refused > 0, "the bounded argon2 queue refused logins at once");
    assert!(hashed > 0, "and kept hashing the ones it admitted");
    assert!(validations >= 20, "Validate was starved: {validations} calls in 2 s");
}

/// The hostile suite in one run against the real binary logging at debug
/// level: afterwards the server still reports SERVING, and no password,
/// refresh token, access token or private key used appears in its log.
#[tokio::test]
async fn after_a_hostile_barrage_the_server_serves_and_its_log_holds_no_secret() {
    use sigil_proto::pb::{self, revoke_request::Target};
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = sigil_tests::ChildServer::spawn_logging(&data, &["--lockout-threshold", "3"], "debug").await;
    let mut client = server.client().await;
    let channel = sigil_tests::connect(server.grpc_addr).await;
    let mut admin = pb::admin_service_client::AdminServiceClient::new(channel.clone());
    let admin_session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let bearer = admin_session.access_token.clone();

    let user_password = "Zq8!user-password-SECRET";
    let new_password = "Zq8!changed-password-SECRET";
    let guesses = ["guess-1-SECRET", "guess-2-SECRET", "guess-3-SECRET", "guess-4-SECRET"];
    let created = admin
        .create_user(with_bearer(
            pb::CreateUserRequest { username: "ivy".into(), password: user_password.into(), roles: vec![] },
            &bearer,
        ))
        .await
        .expect("created")
        .into_inner()
        .user
        .expect("user");
    let session = login(&mut client, "ivy", user_password).await;
    let rotated = client
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("rotated")
        .into_inner();
    // Reuse of a rotated refresh token: the family is revoked.
    client.refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() }).await.expect_err("reuse");
    // Wrong passwords until the account locks, and past it.
    for guess in guesses {
        let _ = client.authenticate(login_request("ivy", guess)).await;
    }
    // Oversized and malformed fields.
    let oversized_password = format!("{}-SECRET", "p".repeat(2000));
    let _ = client
        .authenticate(pb::AuthenticateRequest {
            username: "ivy".into(),
            password: oversized_password.clone(),
            ..Default::default()
        })
        .await;
    let _ = client.authenticate(login_request("iv\0y", guesses[0])).await;
    let forged_token = format!("{}.e30.{}", "eyJhbGciOiJub25lIn0", "x".repeat(40));
    for token in [forged_token.as_str(), "garbage", &"a.b.c".repeat(3000)] {
        let _ = client.validate(pb::ValidateRequest { token: token.into(), audience: None }).await;
    }
    let _ = client.refresh(pb::RefreshRequest { refresh_token: "r".repeat(5000) }).await;
    for raw in [vec![0x0A, 0x02, 0xFF, 0xFE], vec![0x0A, 0xFF, 0xFF, 0x03, 0x41]] {
        let _ = send_raw_as(channel.clone(), "/sigil.v1.IdentityService/Refresh", raw, None).await;
    }
    // Admin calls with stolen, forged and missing bearers; a password reset.
    let _ = admin.get_stats(with_bearer(pb::GetStatsRequest {}, &rotated.access_token)).await;
    let _ = admin.get_stats(with_bearer(pb::GetStatsRequest {}, &forged_token)).await;
    let _ = admin.get_stats(pb::GetStatsRequest {}).await;
    admin
        .set_password(with_bearer(
            pb::SetPasswordRequest {
                user_id: created.user_id.clone(),
                password: new_password.into(),
                revoke_sessions: true,
            },
            &bearer,
        ))
        .await
        .expect("password reset");
    client
        .revoke(pb::RevokeRequest {
            target: Some(Target::RefreshToken(rotated.refresh_token.clone())),
            reason: "done".into(),
        })
        .await
        .expect("revoked");

    let mut health = HealthClient::new(channel);
    let serving = health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner();
    assert_eq!(serving.status(), ServingStatus::Serving, "still serving after the barrage");
    // The store (private keys, password hashes): files 0600, directories 0700.
    let mut pending = vec![data.clone()];
    let mut files = 0;
    while let Some(path) = pending.pop() {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{} is open to others", path.display());
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
        } else {
            files += 1;
        }
    }
    assert!(files > 0, "the store wrote files");

    let output = server.output.clone();
    assert!(server.terminate().await, "clean shutdown after the barrage");
    let log = output.lock().expect("log").clone();
    assert!(log.contains("rpc finished"), "the log was captured at debug level");
    let mut secrets = vec![
        ADMIN_PASSWORD.to_string(),
        user_password.to_string(),
        new_password.to_string(),
        oversized_password,
        admin_session.refresh_token,
        admin_session.access_token,
        session.refresh_token,
        session.access_token,
        rotated.refresh_token,
        rotated.access_token,
    ];
    secrets.extend(guesses.iter().map(|g| g.to_string()));
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log: {}…", &secret[..8]);
    }
    // Every secret above carries this marker or is a token; nothing marked leaked either.
    assert!(!log.contains("SECRET"), "a marked secret reached the log");
    assert!(!log.contains("PRIVATE KEY") && !log.contains("private_pkcs8"), "key material reached the log");
}
