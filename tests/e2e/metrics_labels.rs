//! Nothing a caller sends becomes a metric label: `/metrics` labels only
//! the methods the server serves (any other path is `unknown`), every label
//! value is escaped, and no stream of made-up paths grows the series set.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use prost::bytes::Buf as _;
use sigil_tests::{TestServer, http_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// An HPACK integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1).
fn hpack_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields, never indexed, never Huffman-coded:
/// the bytes go on the wire exactly as given, whatever they hold.
fn header_block(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x10); // literal never indexed, new name
        hpack_integer(&mut block, 0, 7, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_integer(&mut block, 0, 7, value.len());
        block.extend_from_slice(value);
    }
    block
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Sends one gRPC request whose `:path` is `path`, byte for byte, over a
/// hand-made HTTP/2 connection (a real client library would refuse such a
/// path), and waits until the server answered or reset it.
async fn request_raw_path(addr: SocketAddr, path: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    let headers = header_block(&[
        (":method", b"POST"),
        (":scheme", b"http"),
        (":path", path),
        (":authority", b"127.0.0.1"),
        ("content-type", b"application/grpc"),
        ("te", b"trailers"),
    ]);
    out.extend(frame(0x1, 0x5, 1, &headers)); // HEADERS, END_STREAM | END_HEADERS
    stream.write_all(&out).await.expect("request sent");
    let answered = async {
        let mut header = [0u8; 9];
        loop {
            if stream.read_exact(&mut header).await.is_err() {
                return; // the server closed the connection: an answer too
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            if kind == 0x4 && flags & 0x1 == 0 {
                let _ = stream.write_all(&frame(0x4, 0x1, 0, &[])).await; // SETTINGS ACK
            }
            // HEADERS or RST_STREAM on our stream, or GOAWAY.
            if (id == 1 && (kind == 0x1 || kind == 0x3)) || kind == 0x7 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answered).await.expect("the server answers within 10 s");
}

/// Checks `text` against the OpenMetrics text grammar for samples, strictly:
/// every sample line is `name{label="value",…} number`, and a label value
/// holds no raw `"`, `\` or newline except as the escapes `\"`, `\\`, `\n`.
/// Returns every series (name and labels) found.
fn strictly_parsed(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    assert!(text.ends_with("# EOF\n"), "the page ends with # EOF");
    let mut series = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in line {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                let eq = rest.find("=\"").unwrap_or_else(|| panic!("label without value in {line:?}"));
                let label = &rest[..eq];
                assert!(label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label name in {line:?}");
                let mut value = String::new();
                let mut chars = rest[eq + 2..].char_indices();
                let close = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        Some((at, '"')) => break eq + 2 + at,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                };
                labels.push((label.to_string(), value));
                rest = &rest[close + 1..];
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                } else {
                    panic!("bad label list in {line:?}");
                }
            }
        }
        let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        let number = value.split(' ').next().unwrap_or_default();
        assert!(number.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&number), "bad value in {line:?}");
        series.push((name.to_string(), labels));
    }
    series
}

/// Sends and expects empty messages: the method is all that matters here.
#[derive(Clone, Copy)]
struct EmptyCodec;

impl Codec for EmptyCodec {
    type Encode = ();
    type Decode = ();
    type Encoder = EmptyCodec;
    type Decoder = EmptyCodec;

    fn encoder(&mut self) -> EmptyCodec {
        *self
    }

    fn decoder(&mut self) -> EmptyCodec {
        *self
    }
}

impl Encoder for EmptyCodec {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, _: (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Decoder for EmptyCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

async fn scrape(server: &TestServer) -> String {
    let (status, body) = http_get(server.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The Prometheus client library's own parser, when `SIGIL_PYTHON` names
/// an interpreter that has it (`.ci/run` installs it).
fn python_parses(text: &str) {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        eprintln!("skipped the Python parser: SIGIL_PYTHON is not set (the strict Rust check still ran)");
        return;
    };
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write");
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        list(text_string_to_metric_families(open(sys.argv[1]).read()))\n";
    let output =
        std::process::Command::new(python).args(["-c", script]).arg(file.path()).output().expect("python runs");
    assert!(output.status.success(), "prometheus_client refuses the page: {}", String::from_utf8_lossy(&output.stderr));
}

/// The `method` labels of the gRPC series, where a caller's path would
/// land. (The OAuth series have a `method` label too, the client
/// authentication method, from a fixed set: the tests of this binary share
/// one process and its counters, so those series come and go with them.)
fn methods(series: &[(String, Vec<(String, String)>)]) -> BTreeSet<String> {
    series
        .iter()
        .filter(|(name, _)| name.starts_with("sigil_rpc_"))
        .flat_map(|(_, labels)| labels.iter().filter(|(k, _)| k == "method").map(|(_, v)| v.clone()))
        .collect()
}

#[tokio::test]
async fn hostile_paths_neither_break_the_scrape_nor_become_labels() {
    let server = TestServer::start().await;
    for path in [&b"/sigil.v1.IdentityService/Validate\\"[..], b"/a\"b\\c", b"/x\ny\"}\n# EOF\nz 1", b"/\\"] {
        request_raw_path(server.grpc_addr(), path).await;
    }
    let page = scrape(&server).await;
    let series = strictly_parsed(&page);
    python_parses(&page);
    let before = methods(&series);
    for method in &before {
        let known = method == "unknown"
            || ["/sigil.v1.", "/grpc.health.v1.", "/grpc.reflection.v1", "/envoy.service.auth.v3.Authorization/Check"]
                .iter()
                .any(|p| method.starts_with(p));
        assert!(known, "a caller's path became a label: {method:?}");
    }

    // A thousand made-up methods, over one connection.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for i in 0..1000 {
        grpc.ready().await.expect("ready");
        let path: tonic::codegen::http::uri::PathAndQuery =
            format!("/attacker.Service{i}/Method{}", i * 7919 % 1000).parse().expect("path");
        let outcome = grpc.unary(tonic::Request::new(()), path, EmptyCodec).await;
        assert_eq!(outcome.expect_err("no such method").code(), tonic::Code::Unimplemented);
    }
    let page = scrape(&server).await;
    let series = strictly_parsed(&page);
    let after = methods(&series);
    assert!(after.contains("unknown"), "the made-up calls are counted, under `unknown`: {after:?}");
    assert!(!page.contains("attacker"), "a made-up path became a label");
    assert!(after.iter().all(|m| m == "unknown" || !m.contains("attacker")));
    let unknown = series.iter().filter(|(_, l)| l.iter().any(|(k, v)| k == "method" && v == "unknown")).count();
    assert!(unknown <= 64, "made-up paths share a few `unknown` series, not one each ({unknown})");
}
