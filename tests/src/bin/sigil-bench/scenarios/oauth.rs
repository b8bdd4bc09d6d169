//! oauth: the OAuth 2.0 endpoints of the HTTP port, over HTTP/2 cleartext
//! with the gRPC scenarios' load shape (connections × streams):
//!
//! - `oauth-token-basic`: client-credentials grants with `client_secret_basic`;
//! - `oauth-token-private-key-jwt`: the same with `private_key_jwt`, each
//!   request a fresh EdDSA assertion (its `jti` is single use), signed by
//!   the load generator on the cores it shares with the server;
//! - `oauth-validate` then `oauth-introspect`: gRPC `Validate` and RFC 7662
//!   introspection (authenticated with `client_secret_basic`) of the same
//!   service token, for the ratio of the two in one run.

use std::sync::Arc;

use bytes::Bytes;
use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};

use super::{Bench, Scenario};
use crate::{
    client::{admin_request, validate_round_robin},
    figures::Figures,
    load::drive,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("oauth"), run: |bench| Box::pin(run(bench)) };

/// `client_assertion_type` of RFC 7523.
const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let Some(http_addr) = bench.target.http_addr else {
        println!("oauth: skipped (needs the HTTP port of a server this run started, not --server)");
        return Ok(Vec::new());
    };
    let client = ServiceClient::create(bench).await?;
    let http = Arc::new(Http2::connect(http_addr, bench.connections).await?);
    let token_path = "/oauth2/token";
    let token_endpoint = format!("http://{http_addr}{token_path}");
    let basic = format!("Basic {}", basic_credentials(&client.client_id, &client.secret));
    let mut results = Vec::new();

    let call = {
        let (http, basic) = (http.clone(), basic.clone());
        move |_: tonic::transport::Channel, n: u64| {
            let (http, basic) = (http.clone(), basic.clone());
            async move { Some(http.post(n, token_path, Some(&basic), "grant_type=client_credentials".into()).await) }
        }
    };
    results.push(drive("oauth-token-basic", bench.target, bench.chans, bench.streams, bench.duration, call).await);

    let call = {
        let (http, client) = (http.clone(), client.clone());
        move |_: tonic::transport::Channel, n: u64| {
            let (http, client, endpoint) = (http.clone(), client.clone(), token_endpoint.clone());
            async move {
                let assertion = client.assertion(&endpoint)?;
                let body = format!(
                    "grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={assertion}"
                );
                Some(http.post(n, token_path, None, body).await)
            }
        }
    };
    let name = "oauth-token-private-key-jwt";
    results.push(drive(name, bench.target, bench.chans, bench.streams, bench.duration, call).await);

    let token = http.grant(&basic).await?;
    let validate = validate_round_robin(vec![token.clone()]);
    results.push(drive("oauth-validate", bench.target, bench.chans, bench.streams, bench.duration, validate).await);
    let call = {
        let body = format!("token={token}");
        move |_: tonic::transport::Channel, n: u64| {
            let (http, basic, body) = (http.clone(), basic.clone(), body.clone());
            async move { Some(http.post(n, "/oauth2/introspect", Some(&basic), body).await) }
        }
    };
    results.push(drive("oauth-introspect", bench.target, bench.chans, bench.streams, bench.duration, call).await);
    Ok(results)
}

/// The bench's service account: role `introspect`, a secret and an EdDSA key.
#[derive(Clone)]
struct ServiceClient {
    client_id: String,
    secret: String,
    key: Arc<jsonwebtoken::EncodingKey>,
}

impl ServiceClient {
    async fn create(bench: &Bench<'_>) -> anyhow::Result<Self> {
        let admin = &bench.session.access_token;
        let mut api = AdminServiceClient::new(bench.chans[0].clone());
        let request = pb::CreateServiceAccountRequest {
            name: "sigil-bench".into(),
            roles: vec!["introspect".into()],
            audiences: vec!["bench".into()],
            scopes: Vec::new(),
        };
        let created = api.create_service_account(admin_request(request, admin)).await?.into_inner();
        let client_id = created.service_account.map(|a| a.client_id).unwrap_or_default();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let request =
            pb::SetServiceAccountKeyRequest { client_id: client_id.clone(), public_key: pair.public_key_pem() };
        api.set_service_account_key(admin_request(request, admin)).await?;
        let key = jsonwebtoken::EncodingKey::from_ed_der(&pair.serialize_der());
        Ok(Self { client_id, secret: created.client_secret, key: Arc::new(key) })
    }

    /// A fresh assertion for `audience`, valid for a minute.
    fn assertion(&self, audience: &str) -> Option<String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        let claims = serde_json::json!({
            "iss": self.client_id, "sub": self.client_id, "aud": audience,
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::now_v7().to_string(),
        });
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), &claims, &self.key).ok()
    }
}

/// RFC 6749 §2.3.1 Basic credentials. The bench's id and secret are
/// base64url and a UUID: form-urlencoding leaves them as they are.
fn basic_credentials(client_id: &str, secret: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
}

/// HTTP/2 cleartext connections to the HTTP port, requests spread over them.
struct Http2 {
    senders: Vec<h2::client::SendRequest<Bytes>>,
    authority: String,
}

impl Http2 {
    async fn connect(addr: std::net::SocketAddr, connections: usize) -> anyhow::Result<Self> {
        let mut senders = Vec::new();
        for _ in 0..connections.max(1) {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (sender, connection) = h2::client::handshake(tcp).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            senders.push(sender);
        }
        Ok(Self { senders, authority: addr.to_string() })
    }

    /// POSTs a form `body` to `path` on connection `n mod connections`;
    /// whether the answer was 200.
    async fn post(&self, n: u64, path: &str, authorization: Option<&str>, body: String) -> bool {
        self.exchange(n, path, authorization, body).await.is_some_and(|(status, _)| status == 200)
    }

    /// The status and body of a form POST.
    async fn exchange(&self, n: u64, path: &str, authorization: Option<&str>, body: String) -> Option<(u16, Bytes)> {
        let sender = self.senders[n as usize % self.senders.len()].clone();
        let mut request = http::Request::post(format!("http://{}{path}", self.authority))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", body.len());
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let request = request.body(()).ok()?;
        let mut sender = sender.ready().await.ok()?;
        let (response, mut stream) = sender.send_request(request, false).ok()?;
        stream.send_data(Bytes::from(body), true).ok()?;
        let response = response.await.ok()?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        Some((status, Bytes::from(bytes)))
    }

    /// One access token by the client credentials grant.
    async fn grant(&self, basic: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .exchange(0, "/oauth2/token", Some(basic), "grant_type=client_credentials".into())
            .await
            .ok_or_else(|| anyhow::anyhow!("the token endpoint did not answer"))?;
        anyhow::ensure!(status == 200, "the token endpoint answered {status}: {}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        answer["access_token"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no access_token"))
    }
}
