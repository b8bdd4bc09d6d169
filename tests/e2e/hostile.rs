//! Hostile bytes on the wire: requests that are not valid protobuf for the
//! method are the caller's fault (`INVALID_ARGUMENT`), not the server's.

use prost::bytes::{Buf as _, BufMut as _};
use sigil_tests::TestServer;
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
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(bytes), path, RawCodec).await.map(|_| ())
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
