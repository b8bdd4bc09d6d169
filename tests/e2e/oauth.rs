//! The OAuth 2.0 endpoints of the HTTP listener, spoken to byte by byte:
//! `/oauth2/token` (client credentials, RFC 6749 §4.4, with
//! `client_secret_basic`, `client_secret_post` and `private_key_jwt`),
//! `/oauth2/introspect` (RFC 7662), `/oauth2/revoke` (RFC 7009) and the
//! metadata (RFC 8414). Hostile input first: every way a stranger can get
//! the request wrong answers the RFC 6749 §5.2 error that says what to fix,
//! with `Cache-Control: no-store`, and nothing it sends is read unbounded.

use std::{net::SocketAddr, time::Duration};

use sigil_server::domain::{
    ServiceAccountId,
    service_account::{NewServiceAccount, ServiceAccountChanges},
};
use sigil_tests::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The content type every OAuth request must have.
const FORM: &str = "application/x-www-form-urlencoded";

/// An HTTP/1.1 answer, parsed just enough for the assertions (also the
/// attack review's).
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    /// Header names lower-cased, in order.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The RFC 6749 §5.2 `error` code of the answer; empty for an answer
    /// that has none (a success, or a body that is not JSON), so that
    /// comparing it with the code expected fails with both in view.
    pub(super) fn error(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        json["error"].as_str().unwrap_or_default().to_string()
    }

    /// Asserts an RFC 6749 §5.2 error answer: its status, its code, a
    /// description, and the headers that keep it out of caches.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.error(), code, "{self:?}");
        assert!(self.json()["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{self:?}");
        self.assert_uncacheable();
    }

    fn assert_uncacheable(&self) {
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:?}");
        assert_eq!(self.header("pragma"), Some("no-cache"), "{self:?}");
        assert!(self.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{self:?}");
    }
}

/// Parses a whole HTTP/1.1 response.
fn parse(response: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end: {text}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status: status.unwrap_or_else(|| panic!("no status: {text}")), headers, body: body.to_string() }
}

/// Sends `request` (a complete HTTP/1.1 request, `Connection: close`) and
/// reads the answer to its end.
pub(super) async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    stream.write_all(request).await.expect("sent");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    parse(&response)
}

/// `POST path` with `headers` (each `Name: value`) and `body`.
async fn post(addr: SocketAddr, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    exchange(addr, request.as_bytes()).await
}

/// `POST path` of a form `body` with `Authorization: Basic` of `id:secret`
/// as RFC 6749 §2.3.1 wants it (each form-urlencoded, then base64).
async fn post_basic(addr: SocketAddr, path: &str, (id, secret): (&str, &str), body: &str) -> Answer {
    let authorization = format!("Authorization: Basic {}", basic(id, secret));
    post(addr, path, &[&format!("Content-Type: {FORM}"), &authorization], body).await
}

/// The `Basic` credentials of RFC 6749 §2.3.1.
fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", form_encode(id), form_encode(secret)))
}

/// application/x-www-form-urlencoded encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const ENDPOINTS: [&str; 3] = ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"];

#[tokio::test]
async fn a_body_that_is_not_a_form_is_an_invalid_request() {
    let server = TestServer::start().await;
    for path in ENDPOINTS {
        for content_type in [
            Some("application/json"),
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            Some("application/x-www-form-urlencoded; charset=iso-8859-1"),
            None,
        ] {
            let header = content_type.map(|t| format!("Content-Type: {t}"));
            let headers: Vec<&str> = header.iter().map(String::as_str).collect();
            let answer = post(server.http_addr(), path, &headers, "grant_type=client_credentials").await;
            answer.assert_error(400, "invalid_request");
            let description = answer.json()["error_description"].as_str().unwrap_or_default().to_string();
            assert!(description.contains(FORM), "{path} with {content_type:?}: {description}");
        }
        // The media type is case-insensitive, a UTF-8 charset is fine: these
        // get past the form check (to the missing client authentication).
        for content_type in ["Application/X-WWW-Form-URLEncoded", "application/x-www-form-urlencoded; charset=UTF-8"] {
            let answer =
                post(server.http_addr(), path, &[&format!("Content-Type: {content_type}")], "token=x&grant_type=y")
                    .await;
            assert_ne!(answer.error(), "invalid_request", "{path} with {content_type}: {answer:?}");
        }
    }
}

#[tokio::test]
async fn only_post_is_served_on_the_oauth_endpoints() {
    let server = TestServer::start().await;
    for path in ENDPOINTS {
        for method in ["GET", "PUT", "DELETE"] {
            let request = format!(
                "{method} {path}?grant_type=client_credentials HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            let answer = exchange(server.http_addr(), request.as_bytes()).await;
            answer.assert_error(405, "invalid_request");
            assert_eq!(answer.header("allow"), Some("POST"), "{method} {path}: {answer:?}");
        }
    }
}

#[tokio::test]
async fn a_parameter_sent_twice_is_refused() {
    let server = TestServer::start().await;
    for (path, body) in [
        ("/oauth2/token", "grant_type=client_credentials&grant_type=client_credentials"),
        ("/oauth2/token", "grant_type=client_credentials&scope=a&scope=b"),
        ("/oauth2/token", "grant_type=client_credentials&client_id=a&client_secret=b&client_id=a"),
        ("/oauth2/introspect", "token=a&token=b"),
        ("/oauth2/revoke", "token=a&token_type_hint=access_token&token_type_hint=refresh_token"),
        // A name encoded differently is still the same parameter.
        ("/oauth2/token", "grant_type=client_credentials&%67rant_type=client_credentials"),
    ] {
        let answer = post(server.http_addr(), path, &[&format!("Content-Type: {FORM}")], body).await;
        answer.assert_error(400, "invalid_request");
        assert!(answer.body.contains("more than once"), "{body}: {answer:?}");
    }
}

#[tokio::test]
async fn credentials_in_both_the_header_and_the_body_are_refused() {
    let server = TestServer::start().await;
    for path in ENDPOINTS {
        for body in [
            "grant_type=client_credentials&token=t&client_secret=s",
            "grant_type=client_credentials&token=t&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=e30.e30.x",
            // A client_id in the body that is not the header's.
            "grant_type=client_credentials&token=t&client_id=someone-else",
        ] {
            let answer = post_basic(server.http_addr(), path, ("client", "secret"), body).await;
            answer.assert_error(400, "invalid_request");
        }
    }
}

#[tokio::test]
async fn two_client_authentication_methods_in_the_body_are_refused() {
    let server = TestServer::start().await;
    let body = "grant_type=client_credentials&token=t&client_id=c&client_secret=s&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=e30.e30.x";
    for path in ENDPOINTS {
        let answer = post(server.http_addr(), path, &[&format!("Content-Type: {FORM}")], body).await;
        answer.assert_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn no_client_authentication_is_invalid_client_with_a_basic_challenge() {
    let server = TestServer::start().await;
    for path in ENDPOINTS {
        for body in ["grant_type=client_credentials&token=t", "grant_type=client_credentials&token=t&client_id=c"] {
            let answer = post(server.http_addr(), path, &[&format!("Content-Type: {FORM}")], body).await;
            answer.assert_error(401, "invalid_client");
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Basic realm=\""), "{path}: {answer:?}");
        }
    }
}

#[tokio::test]
async fn undecodable_basic_credentials_are_invalid_client_with_a_challenge() {
    let server = TestServer::start().await;
    for authorization in ["Basic !!!notbase64", "Basic bm9jb2xvbg==", "Basic JUZGOnNlY3JldA==", "Digest x"] {
        let answer = post(
            server.http_addr(),
            "/oauth2/token",
            &[&format!("Content-Type: {FORM}"), &format!("Authorization: {authorization}")],
            "grant_type=client_credentials",
        )
        .await;
        answer.assert_error(401, "invalid_client");
        assert!(answer.header("www-authenticate").is_some_and(|c| c.starts_with("Basic realm=")), "{answer:?}");
    }
}

#[tokio::test]
async fn the_token_endpoint_serves_only_the_client_credentials_grant() {
    let server = TestServer::start().await;
    let form = format!("Content-Type: {FORM}");
    let answer = post(server.http_addr(), "/oauth2/token", &[&form], "client_id=c&client_secret=s").await;
    answer.assert_error(400, "invalid_request");
    assert!(answer.body.contains("grant_type"), "{answer:?}");
    for grant in ["password", "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"] {
        let body = format!("grant_type={}&client_id=c&client_secret=s", form_encode(grant));
        let answer = post(server.http_addr(), "/oauth2/token", &[&form], &body).await;
        answer.assert_error(400, "unsupported_grant_type");
    }
}

#[tokio::test]
async fn a_malformed_scope_is_invalid_scope() {
    let server = TestServer::start().await;
    for scope in ["a\"b", "a\\b", "a  b", " a", "é"] {
        let body = format!("grant_type=client_credentials&scope={}", form_encode(scope));
        let answer = post_basic(server.http_addr(), "/oauth2/token", ("c", "s"), &body).await;
        answer.assert_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read() {
    let server = TestServer::start().await;
    // Announced: refused on the headers alone, the body never sent.
    let mut stream = tokio::net::TcpStream::connect(server.http_addr()).await.expect("connects");
    let head = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {FORM}\r\nContent-Length: 104857600\r\n\r\ngrant_type="
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("refused without waiting for the 100 MB")
        .expect("read");
    parse(&response).assert_error(413, "invalid_request");

    // Chunked, without a length: refused once the bound is passed.
    for path in ENDPOINTS {
        let mut stream = tokio::net::TcpStream::connect(server.http_addr()).await.expect("connects");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("sent");
        // 20 KiB, just past the bound, and no last chunk: the server has
        // read everything sent by the time it refuses (bytes it left
        // unread would make its close a reset that can eat the answer).
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "a".repeat(4096));
        stream.write_all(chunk.repeat(5).as_bytes()).await.expect("sent");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("refused without waiting for the rest")
            .expect("read");
        parse(&response).assert_error(413, "invalid_request");
    }
}

#[tokio::test]
async fn the_metadata_documents_name_the_oauth_endpoints_from_configuration() {
    let server = TestServer::start().await;
    let base = format!("http://{}", server.http_addr());
    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let (status, body) = sigil_tests::http_get(server.http_addr(), path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(document["issuer"], "sigil", "{document}");
        assert_eq!(document["token_endpoint"], format!("{base}/oauth2/token"), "{document}");
        assert_eq!(document["introspection_endpoint"], format!("{base}/oauth2/introspect"), "{document}");
        assert_eq!(document["revocation_endpoint"], format!("{base}/oauth2/revoke"), "{document}");
        assert_eq!(document["jwks_uri"], format!("{base}/.well-known/jwks.json"), "{document}");
        assert_eq!(document["grant_types_supported"], serde_json::json!(["client_credentials"]), "{document}");
        let methods = serde_json::json!(["client_secret_basic", "client_secret_post", "private_key_jwt"]);
        for key in [
            "token_endpoint_auth_methods_supported",
            "introspection_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
        ] {
            assert_eq!(document[key], methods, "{key}: {document}");
        }
        for key in [
            "token_endpoint_auth_signing_alg_values_supported",
            "introspection_endpoint_auth_signing_alg_values_supported",
            "revocation_endpoint_auth_signing_alg_values_supported",
        ] {
            assert_eq!(document[key], serde_json::json!(["EdDSA", "ES256"]), "{key}: {document}");
        }
    }
}

/// A service account of `server` with its first secret.
struct Client {
    client_id: String,
    secret: String,
    id: ServiceAccountId,
}

/// Creates a service account with `roles`, audience `orders` (and
/// `billing`), scopes `orders:read` and `orders:write`.
async fn create_client(server: &TestServer, name: &str, roles: &[&str]) -> Client {
    let new = NewServiceAccount {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        audiences: vec!["orders".into(), "billing".into()],
        scopes: vec!["orders:read".into(), "orders:write".into()],
    };
    let (account, secret) = server.identity().create_service_account(None, new).await.expect("created");
    Client { client_id: account.client_id(), secret: secret.expose().clone(), id: account.id }
}

/// A key pair for `private_key_jwt`: the private PEM to sign with, the
/// public PEM registered with the account.
struct ClientKey {
    /// PKCS#8 DER, as jsonwebtoken signs with it.
    private_der: Vec<u8>,
    /// PKCS#8 PEM, as the Python example reads it.
    private_pem: String,
    public_pem: String,
    algorithm: jsonwebtoken::Algorithm,
}

impl ClientKey {
    fn generate(algorithm: jsonwebtoken::Algorithm) -> Self {
        let rcgen_algorithm = match algorithm {
            jsonwebtoken::Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_algorithm).expect("key pair");
        let private_der = pair.serialize_der();
        let private_pem = match algorithm {
            jsonwebtoken::Algorithm::EdDSA => ed25519_pkcs8_v1_pem(&private_der),
            _ => pair.serialize_pem(),
        };
        Self { private_der, private_pem, public_pem: pair.public_key_pem(), algorithm }
    }

    /// Registers the public half with `client`.
    async fn register(&self, server: &TestServer, client: &Client) {
        server.identity().set_service_account_key(None, client.id, &self.public_pem).await.expect("key registered");
    }

    /// A client assertion of `client` for `audience`, valid for a minute.
    fn assertion(&self, client: &str, audience: &str) -> String {
        let now = now_seconds();
        let claims = serde_json::json!({
            "iss": client, "sub": client, "aud": audience,
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::now_v7().to_string(),
        });
        let key = match self.algorithm {
            jsonwebtoken::Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(&self.private_der),
            _ => jsonwebtoken::EncodingKey::from_ec_der(&self.private_der),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.algorithm), &claims, &key).expect("signed")
    }
}

/// The PKCS#8 v1 PEM of an Ed25519 key given as PKCS#8 DER. aws-lc writes
/// v2 (RFC 5958, with the public key), which Python's `cryptography`
/// refuses ("extra data"); v1 is the 32-byte seed behind a fixed prefix.
fn ed25519_pkcs8_v1_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    const SEED_TAG: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let at = der.windows(4).position(|w| w == SEED_TAG).expect("an Ed25519 PKCS#8 key") + 4;
    let mut v1 = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    v1.extend_from_slice(&der[at..at + 32]);
    let body = base64::engine::general_purpose::STANDARD.encode(v1);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The form body of a `private_key_jwt` request with `assertion`.
fn assertion_form(assertion: &str) -> String {
    format!(
        "client_assertion_type={}&client_assertion={assertion}",
        form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    )
}

/// `POST /oauth2/token` of the client credentials grant, authenticated with
/// Basic as `(id, secret)`, plus `extra` parameters.
async fn grant_basic(server: &TestServer, (id, secret): (&str, &str), extra: &str) -> Answer {
    let body = format!("grant_type=client_credentials{extra}");
    post_basic(server.http_addr(), "/oauth2/token", (id, secret), &body).await
}

/// `POST` of a form `body` without an Authorization header.
async fn post_form(server: &TestServer, path: &str, body: &str) -> Answer {
    post(server.http_addr(), path, &[&format!("Content-Type: {FORM}")], body).await
}

/// The token endpoint's URL, as the metadata publishes it.
fn token_endpoint(server: &TestServer) -> String {
    format!("http://{}/oauth2/token", server.http_addr())
}

/// Asserts a 401 `invalid_client` with the Basic challenge, and returns
/// its description (which must not tell the failures apart).
fn assert_refused_client(answer: &Answer) -> String {
    answer.assert_error(401, "invalid_client");
    assert!(answer.header("www-authenticate").is_some_and(|c| c.starts_with("Basic realm=")), "{answer:?}");
    answer.json()["error_description"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn client_secret_basic_and_post_grant_a_service_token_that_validates() {
    let server = TestServer::start().await;
    let client = create_client(&server, "orders-api", &["reader"]).await;
    for answer in [
        grant_basic(&server, (&client.client_id, &client.secret), "&scope=orders%3Aread&audience=billing").await,
        post_form(
            &server,
            "/oauth2/token",
            &format!(
                "grant_type=client_credentials&client_id={}&client_secret={}&scope=orders%3Aread&audience=billing",
                client.client_id,
                form_encode(&client.secret)
            ),
        )
        .await,
    ] {
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.assert_uncacheable();
        let body = answer.json();
        assert_eq!(body["token_type"], "Bearer", "{body}");
        assert_eq!(body["expires_in"], 900, "{body}");
        assert_eq!(body["scope"], "orders:read", "{body}");
        assert!(body.get("refresh_token").is_none(), "no refresh token for client credentials (RFC 6749 §4.4.3)");
        let token = body["access_token"].as_str().expect("a token");
        let verified = server.identity().validate(token, Some("billing")).expect("the token validates");
        assert_eq!(verified.claims.sub, client.client_id);
        assert_eq!(verified.claims.client_id.as_deref(), Some(client.client_id.as_str()));
        assert_eq!(verified.claims.roles, vec!["reader".to_string()]);
    }
}

#[tokio::test]
async fn a_wrong_secret_an_unknown_client_and_a_disabled_client_answer_alike() {
    let server = TestServer::start().await;
    let client = create_client(&server, "orders-api", &[]).await;
    let disabled = create_client(&server, "retired", &[]).await;
    let changes = ServiceAccountChanges { disabled: Some(true), ..Default::default() };
    server.identity().update_service_account(None, disabled.id, changes).await.expect("disabled");
    let unknown_id = ServiceAccountId::generate().to_string();
    let descriptions = [
        assert_refused_client(&grant_basic(&server, (&client.client_id, "wrong-secret"), "").await),
        assert_refused_client(&grant_basic(&server, (&unknown_id, &client.secret), "").await),
        assert_refused_client(&grant_basic(&server, ("not-even-an-id", "secret"), "").await),
        assert_refused_client(&grant_basic(&server, (&disabled.client_id, &disabled.secret), "").await),
    ];
    assert!(descriptions.iter().all(|d| d == &descriptions[0]), "{descriptions:?}");
    // In the body, the same refusal, and still a challenge: every 401
    // carries one (RFC 9110 §15.5.2), naming the scheme served (RFC 6749 §5.2).
    let answer = post_form(
        &server,
        "/oauth2/token",
        &format!("grant_type=client_credentials&client_id={}&client_secret=wrong", client.client_id),
    )
    .await;
    answer.assert_error(401, "invalid_client");
    assert!(answer.header("www-authenticate").is_some_and(|c| c.starts_with("Basic realm=")), "{answer:?}");
}

#[tokio::test]
async fn an_expired_secret_is_refused_while_a_live_one_works() {
    let server = TestServer::start().await;
    let client = create_client(&server, "orders-api", &[]).await;
    let (_, _, short) = server
        .identity()
        .add_service_account_secret(None, client.id, Some(Duration::from_secs(1)))
        .await
        .expect("secret added");
    assert_eq!(grant_basic(&server, (&client.client_id, short.expose()), "").await.status, 200);
    // Waiting is the point here: the secret's lifetime must pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_refused_client(&grant_basic(&server, (&client.client_id, short.expose()), "").await);
    assert_eq!(grant_basic(&server, (&client.client_id, &client.secret), "").await.status, 200);
}

#[tokio::test]
async fn a_scope_or_audience_beyond_the_clients_is_invalid_scope() {
    let server = TestServer::start().await;
    let client = create_client(&server, "orders-api", &[]).await;
    let credentials = (client.client_id.as_str(), client.secret.as_str());
    grant_basic(&server, credentials, "&scope=orders%3Aread+admin").await.assert_error(400, "invalid_scope");
    grant_basic(&server, credentials, "&audience=payroll").await.assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn private_key_jwt_grants_with_eddsa_and_es256_and_refuses_a_replay() {
    let server = TestServer::start().await;
    for algorithm in [jsonwebtoken::Algorithm::EdDSA, jsonwebtoken::Algorithm::ES256] {
        let client = create_client(&server, "signer", &[]).await;
        let key = ClientKey::generate(algorithm);
        key.register(&server, &client).await;
        // The token endpoint and the issuer are both acceptable audiences.
        for audience in [token_endpoint(&server), "sigil".to_string()] {
            let assertion = key.assertion(&client.client_id, &audience);
            let body = format!("grant_type=client_credentials&{}", assertion_form(&assertion));
            let answer = post_form(&server, "/oauth2/token", &body).await;
            assert_eq!(answer.status, 200, "{algorithm:?} for {audience}: {answer:?}");
            let token = answer.json()["access_token"].as_str().expect("token").to_string();
            assert!(server.identity().validate(&token, Some("orders")).is_ok());
            // The same assertion again: its jti is spent.
            let replayed = post_form(&server, "/oauth2/token", &body).await;
            assert_refused_body_client(&replayed);
        }
        // With the client_id in the body too, which must be the assertion's.
        let assertion = key.assertion(&client.client_id, &token_endpoint(&server));
        let body = format!(
            "grant_type=client_credentials&client_id={}&{}",
            create_client(&server, "someone-else", &[]).await.client_id,
            assertion_form(&assertion)
        );
        assert_refused_body_client(&post_form(&server, "/oauth2/token", &body).await);
    }
}

/// A 401 `invalid_client` of a client that authenticated in the body.
fn assert_refused_body_client(answer: &Answer) {
    answer.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn forged_assertions_are_invalid_client() {
    use base64::Engine as _;
    let server = TestServer::start().await;
    let client = create_client(&server, "signer", &[]).await;
    let key = ClientKey::generate(jsonwebtoken::Algorithm::EdDSA);
    key.register(&server, &client).await;
    let endpoint = token_endpoint(&server);
    let b64 = |value: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let now = now_seconds();
    let claims = |jti: &str| {
        serde_json::json!({
            "iss": client.client_id, "sub": client.client_id, "aud": endpoint,
            "iat": now, "exp": now + 60, "jti": jti,
        })
    };
    let unsigned = format!("{}.{}.", b64(serde_json::json!({"alg": "none", "typ": "JWT"})), b64(claims("none-1")));
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("hs-1"),
        &jsonwebtoken::EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .expect("signed");
    let another_key = ClientKey::generate(jsonwebtoken::Algorithm::EdDSA);
    for (what, assertion) in [
        ("alg none", unsigned),
        ("HS256 keyed with the public key", hs256),
        ("another audience", key.assertion(&client.client_id, "https://elsewhere.example/oauth2/token")),
        ("another key", another_key.assertion(&client.client_id, &endpoint)),
        ("not a JWT", "not.a.jwt".to_string()),
    ] {
        let body = format!("grant_type=client_credentials&{}", assertion_form(&assertion));
        let answer = post_form(&server, "/oauth2/token", &body).await;
        assert_eq!((answer.status, answer.error()), (401, "invalid_client".to_string()), "{what}: {answer:?}");
    }
}

/// `POST /oauth2/introspect` of `token` by `credentials` (Basic).
async fn introspect(server: &TestServer, credentials: (&str, &str), token: &str) -> Answer {
    post_basic(server.http_addr(), "/oauth2/introspect", credentials, &format!("token={}", form_encode(token))).await
}

/// A service token of `client`.
async fn service_token(server: &TestServer, client: &Client) -> String {
    let answer = grant_basic(server, (&client.client_id, &client.secret), "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["access_token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn introspection_answers_user_and_service_tokens_and_never_says_why_not() {
    let server = TestServer::start().await;
    let gateway = create_client(&server, "gateway", &["introspect"]).await;
    let credentials = (gateway.client_id.as_str(), gateway.secret.as_str());
    let worker = create_client(&server, "worker", &["writer"]).await;
    let service = service_token(&server, &worker).await;

    let answer = introspect(&server, credentials, &service).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.assert_uncacheable();
    let body = answer.json();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["client_id"], worker.client_id, "{body}");
    assert_eq!(body["sub"], worker.client_id, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["scope"], "orders:read orders:write", "{body}");
    assert_eq!(body["iss"], "sigil", "{body}");
    assert_eq!(body["aud"], serde_json::json!(["orders"]), "{body}");
    for member in ["exp", "iat", "nbf", "jti"] {
        assert!(body[member].is_string() || body[member].is_number(), "{member}: {body}");
    }
    assert!(body.get("username").is_none(), "{body}");

    let user = sigil_tests::login(&mut server.client().await, "admin", sigil_tests::ADMIN_PASSWORD).await;
    let body = introspect(&server, credentials, &user.access_token).await.json();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["username"], "admin", "{body}");
    assert_eq!(body["sub"], user.user_id, "{body}");
    assert!(body.get("client_id").is_none(), "{body}");

    // Revoked, forged, a refresh token, garbage: exactly `active: false`.
    server.identity().revoke_service_account_tokens(None, worker.id, "").await.expect("revoked");
    let mut tampered = user.access_token.clone();
    tampered.pop();
    for token in [service.as_str(), &tampered, &user.refresh_token, "garbage"] {
        let answer = introspect(&server, credentials, token).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json(), serde_json::json!({"active": false}), "{token}");
    }
}

#[tokio::test]
async fn introspection_needs_the_introspect_role_or_an_admin_token() {
    let server = TestServer::start().await;
    let plain = create_client(&server, "plain", &["reader"]).await;
    let token = service_token(&server, &plain).await;
    let answer = introspect(&server, (&plain.client_id, &plain.secret), &token).await;
    answer.assert_error(403, "unauthorized_client");
    assert!(answer.body.contains("introspect"), "{answer:?}");
    assert_refused_client(&introspect(&server, (&plain.client_id, "wrong"), &token).await);
    post_form(&server, "/oauth2/introspect", &format!("token={token}")).await.assert_error(401, "invalid_client");

    let bearer = |value: String| {
        let server = &server;
        let token = token.clone();
        async move {
            let authorization = format!("Authorization: Bearer {value}");
            post(
                server.http_addr(),
                "/oauth2/introspect",
                &[&format!("Content-Type: {FORM}"), &authorization],
                &format!("token={token}"),
            )
            .await
        }
    };
    let admin = sigil_tests::login(&mut server.client().await, "admin", sigil_tests::ADMIN_PASSWORD).await;
    let answer = bearer(admin.access_token.clone()).await;
    assert_eq!((answer.status, &answer.json()["active"]), (200, &serde_json::json!(true)), "{answer:?}");
    server.create_user("alice", "alice-password-1", &[]).await;
    let alice = sigil_tests::login(&mut server.client().await, "alice", "alice-password-1").await;
    bearer(alice.access_token).await.assert_error(403, "insufficient_scope");
    let answer = bearer("not-a-token".into()).await;
    answer.assert_error(401, "invalid_token");
    assert!(answer.header("www-authenticate").is_some_and(|c| c.starts_with("Bearer realm=")), "{answer:?}");
}

#[tokio::test]
async fn revocation_answers_200_whatever_the_token_and_revokes_what_the_caller_may() {
    let server = TestServer::start().await;
    let gateway = create_client(&server, "gateway", &["introspect"]).await;
    let inspector = (gateway.client_id.as_str(), gateway.secret.as_str());
    let worker = create_client(&server, "worker", &[]).await;
    let other = create_client(&server, "other", &[]).await;
    let revoke = |credentials: (String, String), token: String, hint: &'static str| {
        let addr = server.http_addr();
        async move {
            let body = format!("token={}{hint}", form_encode(&token));
            post_basic(addr, "/oauth2/revoke", (&credentials.0, &credentials.1), &body).await
        }
    };
    let as_worker = || (worker.client_id.clone(), worker.secret.clone());
    let active = |token: String| {
        let server = &server;
        async move { introspect(server, inspector, &token).await.json()["active"] == true }
    };

    // Its own token: revoked.
    let own = service_token(&server, &worker).await;
    let answer = revoke(as_worker(), own.clone(), "&token_type_hint=access_token").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!active(own).await, "a client's own token is revoked");

    // Another client's token: 200, and untouched (RFC 7009 §2.1).
    let others = service_token(&server, &other).await;
    assert_eq!(revoke(as_worker(), others.clone(), "").await.status, 200);
    assert!(active(others).await, "another client's token is not the caller's to revoke");

    // A user's tokens: holding one is enough, as for gRPC Revoke.
    let user = sigil_tests::login(&mut server.client().await, "admin", sigil_tests::ADMIN_PASSWORD).await;
    assert_eq!(revoke(as_worker(), user.refresh_token.clone(), "&token_type_hint=refresh_token").await.status, 200);
    assert!(!active(user.access_token.clone()).await, "the refresh token's session is revoked");
    let user = sigil_tests::login(&mut server.client().await, "admin", sigil_tests::ADMIN_PASSWORD).await;
    assert_eq!(revoke(as_worker(), user.access_token.clone(), "&token_type_hint=refresh_token").await.status, 200);
    assert!(!active(user.access_token).await, "a wrong hint is only a hint");

    // Garbage and an unknown hint: 200 all the same.
    assert_eq!(revoke(as_worker(), "garbage".into(), "&token_type_hint=id_token").await.status, 200);
    // But the caller must be a client.
    assert_refused_client(&revoke((worker.client_id.clone(), "wrong".into()), "garbage".into(), "").await);
    post_form(&server, "/oauth2/revoke", "").await.assert_error(400, "invalid_request");
}

/// The value of `series` on `/metrics` (0 when absent).
async fn counted(server: &TestServer, series: &str) -> u64 {
    let (_, metrics) = sigil_tests::http_get(server.http_addr(), "/metrics").await;
    metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn grants_are_counted_by_method_and_outcome() {
    let server = TestServer::start().await;
    let client = create_client(&server, "orders-api", &[]).await;
    // The registry is the process's, shared with the tests running beside
    // this one: each count must have grown by at least this test's share.
    let series = [
        r#"sigil_oauth_requests_total{endpoint="token",method="client_secret_basic",outcome="ok"}"#,
        r#"sigil_oauth_requests_total{endpoint="token",method="client_secret_basic",outcome="invalid_client"}"#,
        r#"sigil_oauth_requests_total{endpoint="token",method="none",outcome="unsupported_grant_type"}"#,
    ];
    let mut before = Vec::new();
    for name in series {
        before.push(counted(&server, name).await);
    }
    service_token(&server, &client).await;
    grant_basic(&server, (&client.client_id, "wrong"), "").await;
    post_form(&server, "/oauth2/token", "grant_type=password").await;
    for (name, before) in series.into_iter().zip(before) {
        assert!(counted(&server, name).await > before, "{name} did not count");
    }
    let (_, metrics) = sigil_tests::http_get(server.http_addr(), "/metrics").await;
    assert!(!metrics.contains(&client.secret) && !metrics.contains(&client.client_id), "{metrics}");
}

/// A tool a client-library test needs is missing: `skipped: …` here, a
/// failure in CI (`CI=true`), where `.ci/run` installs it.
fn missing(why: &str) {
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true but {why}");
    println!("skipped: {why}");
}

/// Runs `command` to its end; its stdout, after asserting it succeeded.
async fn run_example(mut command: std::process::Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output().expect("the example starts")).await.expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "the example failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Authlib (`examples/python/oauth_client.py`): client credentials with
/// `client_secret_basic` and with `private_key_jwt` (EdDSA), introspection
/// and revocation, configured from the RFC 8414 metadata.
#[tokio::test]
async fn authlib_gets_tokens_introspects_and_revokes() {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        return missing("SIGIL_PYTHON is not set (.ci/run sets it after installing the Python packages locally)");
    };
    let has_authlib = std::process::Command::new(&python)
        .args(["-c", "import authlib, requests, joserfc"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_authlib {
        return missing("Authlib is not installed for SIGIL_PYTHON (.ci/run installs authlib and requests)");
    }
    let server = TestServer::start().await;
    let client = create_client(&server, "authlib", &["introspect"]).await;
    let key = ClientKey::generate(jsonwebtoken::Algorithm::EdDSA);
    key.register(&server, &client).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("client-key.pem");
    std::fs::write(&key_file, &key.private_pem).expect("key written");

    let mut command = std::process::Command::new(python);
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python/oauth_client.py"))
        .env("SIGIL_HTTP", format!("http://{}", server.http_addr()))
        .env("SIGIL_CLIENT_ID", &client.client_id)
        .env("SIGIL_CLIENT_SECRET", &client.secret)
        .env("SIGIL_CLIENT_KEY", &key_file);
    let stdout = run_example(command).await;
    for line in [
        "client_secret_basic: Bearer token for 900s, scope 'orders:read orders:write'",
        "private_key_jwt: Bearer token for 900s",
        &format!("introspected: active True, client_id {0}, sub {0}", client.client_id),
        "revoked: HTTP 200",
        "after revocation: active False, members ['active']",
        "wrong secret: invalid_client",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

/// openid-client 6 (`examples/node/oauth_client.mjs`): discovery from the
/// issuer URL, client credentials with `client_secret_basic` and
/// `client_secret_post`, introspection and revocation.
#[tokio::test]
async fn openid_client_discovers_gets_tokens_introspects_and_revokes() {
    let Ok(node_path) = std::env::var("SIGIL_NODE_PATH") else {
        return missing("SIGIL_NODE_PATH is not set (.ci/run sets it after installing the Node modules locally)");
    };
    let modules = std::path::Path::new(&node_path);
    if !modules.join("openid-client").is_dir() {
        return missing("openid-client is not installed in SIGIL_NODE_PATH (.ci/run installs openid-client@6)");
    }
    // Discovery checks that the metadata's issuer is the URL it was asked
    // for: the issuer is the listener's URL, so its port is chosen first.
    let port = sigil_tests::proxies::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let server = TestServer::start_with(|config| {
        config.http_listen = SocketAddr::from(([127, 0, 0, 1], port)).into();
        config.issuer = issuer.clone();
    })
    .await;
    let client = create_client(&server, "openid-client", &["introspect"]).await;
    // An ES module finds its imports next to itself, never through
    // NODE_PATH: the example runs from a folder beside the modules.
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("oauth_client.mjs");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/node/oauth_client.mjs"), &script)
        .expect("script copied");
    std::os::unix::fs::symlink(modules, dir.path().join("node_modules")).expect("modules linked");

    let mut command = std::process::Command::new("node");
    command
        .arg(&script)
        .env("SIGIL_ISSUER", &issuer)
        .env("SIGIL_CLIENT_ID", &client.client_id)
        .env("SIGIL_CLIENT_SECRET", &client.secret);
    let stdout = run_example(command).await;
    for line in [
        format!("discovered: token endpoint {issuer}/oauth2/token"),
        "client_secret_basic: bearer token for 900s, scope 'orders:read orders:write'".into(),
        "client_secret_post: bearer token for 900s".into(),
        format!("introspected: active true, client_id {}", client.client_id),
        "revoked".into(),
        "after revocation: active false".into(),
        "the other token: active true".into(),
        "wrong secret: refused, HTTP 401".into(),
    ] {
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
}
