//! The metadata that OAuth and OpenID client libraries configure
//! themselves from: RFC 8414's `/.well-known/oauth-authorization-server`
//! and OpenID Connect Discovery's `/.well-known/openid-configuration`.
//! Built once, at start, from configuration: nothing a caller sends
//! (`Host`, `X-Forwarded-Proto`) may become a URL Sigil publishes — behind
//! a cache keyed by path, one caller's header would be every client's
//! endpoint.

use super::{ENDPOINTS, client_auth::AuthMethod};
use crate::config::PublicUrl;

/// What the client assertions of `private_key_jwt` may be signed with
/// (RFC 7523; the algorithms a service account's key may have).
const ASSERTION_ALGORITHMS: [&str; 2] = ["EdDSA", "ES256"];

/// The RFC 8414 authorization server metadata of `issuer`, whose endpoints
/// are under `public_url`.
pub(crate) fn authorization_server(issuer: &str, public_url: &PublicUrl) -> serde_json::Value {
    let methods: Vec<&str> = AuthMethod::CLIENT_METHODS.iter().map(|m| m.label()).collect();
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": public_url.join(".well-known/jwks.json"),
        "token_endpoint": public_url.join(ENDPOINTS.token),
        "introspection_endpoint": public_url.join(ENDPOINTS.introspect),
        "revocation_endpoint": public_url.join(ENDPOINTS.revoke),
        "grant_types_supported": ["client_credentials"],
        // No authorization endpoint: tokens come from the token endpoint
        // (client credentials) and from the gRPC API.
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
    })
}

/// The OpenID Connect discovery document: the same metadata, and what
/// standard JWT middleware needs to verify Sigil's access tokens.
pub(crate) fn openid_configuration(issuer: &str, public_url: &PublicUrl) -> serde_json::Value {
    let mut document = authorization_server(issuer, public_url);
    document["id_token_signing_alg_values_supported"] = serde_json::json!(["EdDSA"]);
    document["subject_types_supported"] = serde_json::json!(["public"]);
    document["claims_supported"] = serde_json::json!([
        "iss",
        "sub",
        "aud",
        "exp",
        "nbf",
        "iat",
        "jti",
        "sid",
        "username",
        "roles",
        "client_id",
        "scope"
    ]);
    document
}
