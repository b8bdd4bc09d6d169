//! The OpenID discovery document publishes URLs from configuration only:
//! a caller's `Host` or `X-Forwarded-Proto` never becomes a URL Sigil
//! publishes (a path-keyed cache would hand it to every verifier).

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::process;

/// GET the discovery document with extra request headers; the JSON body.
async fn discovery(addr: SocketAddr, headers: &str) -> serde_json::Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let request = format!("GET /.well-known/openid-configuration HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test]
async fn request_headers_never_become_published_urls() {
    let server = sigil_tests::TestServer::start().await;
    let expected = format!("http://{}/.well-known/jwks.json", server.http_addr());
    for headers in [
        "Host: attacker.example\r\nX-Forwarded-Proto: https\r\n".to_string(),
        "Host: attacker.example:8443\r\n".to_string(),
        format!("Host: {}\r\nX-Forwarded-Proto: javascript\r\n", server.http_addr()),
        // HTTP/1.0 without a Host at all.
        String::new(),
    ] {
        let document = discovery(server.http_addr(), &headers).await;
        assert_eq!(document["jwks_uri"], expected, "with {headers:?}: {document}");
    }
}

/// `--public-url` is what the document says, whatever the request.
#[tokio::test]
async fn the_public_url_setting_names_every_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server =
        process::start(&[], &dir.path().join("data"), &["--public-url", "https://sigil.example.com/auth/"]).await;
    let document = discovery(server.http(), "Host: attacker.example\r\nX-Forwarded-Proto: http\r\n").await;
    assert_eq!(document["jwks_uri"], "https://sigil.example.com/auth/.well-known/jwks.json", "{document}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.is_some());
}

/// A public URL that is not an absolute http(s) URL without query or
/// fragment is refused at start, naming the setting.
#[tokio::test]
async fn a_bad_public_url_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    for bad in [
        "ftp://sigil.example.com/",
        "sigil.example.com",
        "https://sigil.example.com/?x=1",
        "https://sigil.example.com/#k",
        "https:///path",
    ] {
        let mut server = process::spawn(&[], &dir.path().join("data"), &["--public-url", bad], None);
        let status = server.wait_exit(Duration::from_secs(30)).await.expect("exits");
        assert!(!status.success(), "{bad} accepted");
        assert!(server.text().contains("public_url"), "{bad}: {}", server.text());
        assert!(!dir.path().join("data").exists(), "nothing created for {bad}");
    }
}
