//! Hostile bytes on the wire: requests that are not valid protobuf for the
//! method are the caller's fault (`INVALID_ARGUMENT`), not the server's.

use proptest::prelude::*;
use prost::bytes::{Buf as _, BufMut as _};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, maybe_bearer};
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
