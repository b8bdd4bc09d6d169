//! Arbitrary bytes as the body of a gRPC call, through the real services
//! (the strict codec, the admin guard, the handlers, the status mapping).
//! Never a panic. A well-framed message never gets `INTERNAL` or `UNKNOWN`:
//! one that fails to decode is `INVALID_ARGUMENT`, anything else gets its
//! proper status. A broken frame (no message at all, a truncated one, a bad
//! compressed flag) is a transport protocol error, which tonic answers with
//! `INTERNAL` as the gRPC protocol spec prescribes; only `UNKNOWN` (a handler
//! error escaping) is a failure there.
//!
//! `Authenticate`, `CreateUser` and `SetPassword` hash with argon2 (~15 ms a
//! call) and `WatchEvents` streams forever, so they are left out; their
//! request decoding is the same codec as every other method's.
#![no_main]

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use libfuzzer_sys::fuzz_target;
use sigil_proto::pb::{admin_service_server::AdminServiceServer, identity_service_server::IdentityServiceServer};
use sigil_server::{AdminApi, AdminGuard, IdentityApi, MAX_MESSAGE_BYTES};
use tower::ServiceExt as _;

const IDENTITY: &[&str] = &["Validate", "Refresh", "Revoke", "ListMySessions", "GetJwks"];
const ADMIN: &[&str] =
    &["GetUser", "ListUsers", "UpdateUser", "DeleteUser", "ListSessions", "ListTokens", "ListSigningKeys", "GetStats"];

fuzz_target!(|data: &[u8]| {
    let fixture = &*common::FIXTURE;
    let Some((&selector, payload)) = data.split_first() else { return };
    let methods = IDENTITY.len() + ADMIN.len();
    let method = usize::from(selector) % methods;
    // The high bit: send the bytes unframed (a broken gRPC frame) instead
    // of as one well-framed message.
    let framed = selector & 0x80 == 0;
    let body = if !framed {
        Bytes::copy_from_slice(payload)
    } else {
        let mut framed = Vec::with_capacity(payload.len() + 5);
        framed.push(0);
        framed.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(payload);
        Bytes::from(framed)
    };
    let (service, name) = if method < IDENTITY.len() {
        ("sigil.v1.IdentityService", IDENTITY[method])
    } else {
        ("sigil.v1.AdminService", ADMIN[method - IDENTITY.len()])
    };
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost/{service}/{name}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", fixture.admin_token))
        .body(Full::new(body))
        .expect("request");
    let status = fixture.runtime.block_on(async {
        if service == "sigil.v1.IdentityService" {
            let identity = IdentityServiceServer::new(IdentityApi::new(fixture.identity.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            grpc_status(identity, request).await
        } else {
            let admin = AdminServiceServer::new(AdminApi::new(fixture.identity.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let guarded =
                tonic::service::interceptor::InterceptedService::new(admin, AdminGuard::new(fixture.identity.clone()));
            grpc_status(guarded, request).await
        }
    });
    let status = status.expect("every answer carries a grpc-status");
    assert!(status != 2, "{service}/{name} answered UNKNOWN");
    assert!(!framed || status != 13, "{service}/{name} answered INTERNAL to a well-framed message");
});

/// Calls `service` once and returns the `grpc-status` of its answer (from
/// the headers of a trailers-only answer, else from the trailers).
async fn grpc_status<S, B>(service: S, request: http::Request<Full<Bytes>>) -> Option<i32>
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service.oneshot(request).await.expect("the service always answers");
    let header_status = response.headers().get("grpc-status").cloned();
    let collected = response.into_body().collect().await.expect("body");
    let trailer_status = collected.trailers().and_then(|t| t.get("grpc-status").cloned());
    header_status.or(trailer_status).and_then(|v| v.to_str().ok().and_then(|s| s.parse::<i32>().ok()))
}
