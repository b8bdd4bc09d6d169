//! The part of Envoy's ext_authz `CheckRequest` that the gateway decision
//! reads: the client's request headers (as a map, or raw in `header_map`)
//! and the route's `context_extensions`.
//!
//! Envoy sends every request attribute (addresses, times, method, path,
//! host, protocol, every header). Decoded into envoy-types' messages, each
//! header became two `String`s in a SipHash map, and that decoding (and
//! dropping it) was a quarter of a `Check`'s instructions. This view is
//! decoded by prost straight from the wire: fields it does not name are
//! skipped unread, and names and values stay slices of the received buffer.
//! Strings are still held to UTF-8, as prost holds a `string` field.
//!
//! The field numbers are Envoy's (`envoy/service/auth/v3/external_auth.proto`,
//! `attribute_context.proto`, `envoy/config/core/v3/base.proto`). The reply
//! is envoy-types' own `CheckResponse`, and a test below encodes a full
//! request with envoy-types and reads it back through this view.

use bytes::Bytes;

/// `CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CheckRequestView {
    /// `attributes`.
    #[prost(message, optional, tag = "1")]
    pub(crate) attributes: Option<Attributes>,
}

/// `AttributeContext`: only `request` and `context_extensions`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Attributes {
    /// `request`.
    #[prost(message, optional, tag = "4")]
    pub(crate) request: Option<Request>,
    /// `context_extensions`, a `map<string, string>`: on the wire, a
    /// repeated key/value entry, the last of a key counting.
    #[prost(message, repeated, tag = "10")]
    pub(crate) context_extensions: Vec<Entry>,
}

/// `AttributeContext.Request`: only `http`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Request {
    /// `http`.
    #[prost(message, optional, tag = "2")]
    pub(crate) http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`: only the headers.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HttpRequest {
    /// `headers`, a `map<string, string>` (entries, the last of a key counting).
    #[prost(message, repeated, tag = "3")]
    pub(crate) headers: Vec<Entry>,
    /// `header_map`, when Envoy sends the headers raw (`encode_raw_headers`).
    #[prost(message, optional, tag = "13")]
    pub(crate) header_map: Option<HeaderMap>,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Entry {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) key: Bytes,
    /// The value.
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) value: Bytes,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HeaderMap {
    /// `headers`.
    #[prost(message, repeated, tag = "1")]
    pub(crate) headers: Vec<RawHeader>,
}

/// `envoy.config.core.v3.HeaderValue`: `value` or `raw_value` is set.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawHeader {
    /// `key`.
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) key: Bytes,
    /// `value`.
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) value: Bytes,
    /// `raw_value` (any bytes).
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) raw_value: Bytes,
}

/// Why a request could not be read: a `string` field of Envoy's schema
/// holds bytes that are not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a header name or value, or a context extension, is not UTF-8")]
pub(crate) struct NotUtf8;

/// A `string` field's text.
pub(crate) fn text(bytes: &[u8]) -> Result<&str, NotUtf8> {
    std::str::from_utf8(bytes).map_err(|_| NotUtf8)
}

impl Attributes {
    /// The value of `context_extensions[key]` (the last entry of it).
    pub(crate) fn extension(&self, key: &str) -> Result<Option<&str>, NotUtf8> {
        let mut found = None;
        for entry in &self.context_extensions {
            if text(&entry.key)? == key {
                found = Some(text(&entry.value)?);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::{
        config::core::v3::{Address, HeaderMap as EnvoyHeaderMap, HeaderValue, SocketAddress, socket_address},
        service::auth::v3::{
            AttributeContext, CheckRequest,
            attribute_context::{HttpRequest as EnvoyHttp, Peer, Request as EnvoyRequest},
        },
    };
    use prost::Message as _;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// What Envoy sends, every attribute set, encoded by envoy-types: the
    /// view reads the headers, the raw headers and the extensions, and
    /// skips the rest.
    #[test]
    fn the_view_reads_what_envoy_types_encode() {
        let peer = Peer {
            address: Some(Address {
                address: Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                    SocketAddress {
                        address: "10.0.0.1".into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(443)),
                        ..Default::default()
                    },
                )),
            }),
            principal: "spiffe://cluster/ns/app".into(),
            ..Default::default()
        };
        let http = EnvoyHttp {
            id: "request-1".into(),
            method: "POST".into(),
            headers: map(&[(":path", "/admin/x"), ("authorization", "Bearer t"), ("x-sigil-admin", "yes")]),
            path: "/admin/x".into(),
            host: "app.example".into(),
            body: "a body".into(),
            raw_body: vec![0xff, 0x00],
            header_map: Some(EnvoyHeaderMap {
                headers: vec![HeaderValue {
                    key: "cookie".into(),
                    value: String::new(),
                    raw_value: b"session=raw".to_vec(),
                }],
            }),
            ..Default::default()
        };
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer.clone()),
                destination: Some(peer),
                request: Some(EnvoyRequest { time: None, http: Some(http) }),
                context_extensions: map(&[("sigil_roles", "admin"), ("sigil_audience", "billing")]),
                ..Default::default()
            }),
        };
        let view = CheckRequestView::decode(request.encode_to_vec().as_slice()).expect("decodes");
        let attributes = view.attributes.expect("attributes");
        assert_eq!(attributes.extension("sigil_roles"), Ok(Some("admin")));
        assert_eq!(attributes.extension("sigil_audience"), Ok(Some("billing")));
        assert_eq!(attributes.extension("other"), Ok(None));
        let http = attributes.request.and_then(|r| r.http).expect("http");
        let headers: HashMap<&[u8], &[u8]> = http.headers.iter().map(|e| (&e.key[..], &e.value[..])).collect();
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[&b"authorization"[..]], b"Bearer t");
        assert_eq!(headers[&b"x-sigil-admin"[..]], b"yes");
        let raw = &http.header_map.expect("header_map").headers[0];
        assert_eq!((&raw.key[..], &raw.value[..], &raw.raw_value[..]), (&b"cookie"[..], &b""[..], &b"session=raw"[..]));
    }

    #[test]
    fn a_repeated_extension_counts_its_last_value_and_bad_text_is_refused() {
        let entry = |k: &[u8], v: &[u8]| Entry { key: Bytes::copy_from_slice(k), value: Bytes::copy_from_slice(v) };
        let attributes =
            Attributes { request: None, context_extensions: vec![entry(b"k", b"first"), entry(b"k", b"last")] };
        assert_eq!(attributes.extension("k"), Ok(Some("last")));
        let attributes = Attributes { request: None, context_extensions: vec![entry(b"k", b"\xff")] };
        assert_eq!(attributes.extension("k"), Err(NotUtf8));
    }
}
