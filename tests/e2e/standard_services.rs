use sigil_proto::pb;
use sigil_tests::TestServer;
use tokio_stream::StreamExt as _;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_identity_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "sigil.v1.IdentityService"] {
        let response =
            health.check(HealthCheckRequest { service: service.into() }).await.expect("health answers").into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "service {service:?}");
    }
    let unknown =
        health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream =
        client.server_reflection_info(tokio_stream::once(request)).await.expect("reflection answers").into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in
        ["sigil.v1.IdentityService", "sigil.v1.AdminService", "sigil.v1.RevocationService", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

#[tokio::test]
async fn reflection_v1alpha_serves_the_identity_schema() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("sigil.v1.IdentityService".into())),
    };
    let mut stream =
        client.server_reflection_info(tokio_stream::once(request)).await.expect("reflection answers").into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let file: prost_types::FileDescriptorProto =
        prost::Message::decode(files.file_descriptor_proto[0].as_slice()).expect("descriptor decodes");
    assert_eq!(file.package(), "sigil.v1");
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["Authenticate", "Validate", "Refresh", "Revoke", "GetJwks", "ListMySessions"]);
}

#[tokio::test]
async fn http_serves_healthz_and_the_same_jwks_as_grpc() {
    let server = TestServer::start().await;
    let (status, body) = sigil_tests::http_get(server.http_addr(), "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = sigil_tests::http_get(server.http_addr(), "/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let mut client = server.client().await;
    let over_grpc = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    let http: serde_json::Value = serde_json::from_str(&body).expect("json");
    let grpc: serde_json::Value = serde_json::from_str(&over_grpc).expect("json");
    assert_eq!(http, grpc);
    let key = &grpc["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(key.get("d").is_none(), "no private part is published");
    let (status, body) = sigil_tests::http_get(server.http_addr(), "/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    let discovery: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(discovery["issuer"], "sigil");
    assert_eq!(discovery["jwks_uri"], format!("http://{}/.well-known/jwks.json", server.http_addr()));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["EdDSA"]));
    let (status, _) = sigil_tests::http_get(server.http_addr(), "/nope").await;
    assert_eq!(status, 404);
}

/// Prometheus text format, read sample by sample: `name{labels} value`.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_their_counters_move() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = sigil_tests::login(&mut client, "admin", sigil_tests::ADMIN_PASSWORD).await;
    let scrape = || async {
        let (status, body) = sigil_tests::http_get(server.http_addr(), "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
        samples(&body)
    };
    let before = scrape().await;
    for _ in 0..3 {
        assert!(sigil_tests::validate(&mut client, &session.access_token).await.valid);
    }
    sigil_tests::validate(&mut client, "garbage").await;
    let after = scrape().await;
    let delta = |series: &str| after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0);
    assert!(delta("sigil_validations_total{outcome=\"valid\"}") >= 3.0, "{after:?}");
    assert!(delta("sigil_validations_total{outcome=\"malformed\"}") >= 1.0);
    assert!(delta("sigil_rpc_requests_total{method=\"/sigil.v1.IdentityService/Validate\",code=\"Ok\"}") >= 4.0);
    assert!(after.contains_key("sigil_rpc_duration_seconds_count{method=\"/sigil.v1.IdentityService/Validate\"}"));
    assert!(after.get("sigil_logins_total{outcome=\"ok\"}").is_some_and(|n| *n >= 1.0));
    assert!(after.get("sigil_active_sessions").is_some_and(|n| *n >= 1.0));
    for series in [
        "sigil_revocation_index_entries",
        "sigil_event_watchers",
        "sigil_store_flush_duration_seconds_count",
        "sigil_store_flush_batch_size_count",
    ] {
        assert!(after.contains_key(series), "{series} missing");
    }
}
