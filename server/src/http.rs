//! The HTTP listener: `GET /.well-known/jwks.json` (the key set of
//! `GetJwks`, for JWT libraries that fetch keys over HTTP),
//! `GET /.well-known/openid-configuration` and
//! `GET /.well-known/oauth-authorization-server` (the metadata such
//! libraries configure themselves from, `oauth::metadata`), the OAuth 2.0
//! endpoints under `/oauth2/` (`oauth`), `GET /metrics` (Prometheus) and
//! `GET /healthz` (for load balancers and orchestrators), and `/authz`
//! (any method), the forward-auth check of nginx `auth_request`, Caddy
//! `forward_auth` and Traefik ForwardAuth.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};

use crate::{
    config::PublicUrl,
    domain::{
        Identity,
        gateway::{self, Credentials, GatewaySettings, PolicyError, RoutePolicy, Verdict},
    },
    gateway::{Via, count, refusal},
    oauth::metadata,
};

/// The HTTP routes over `identity`; the metadata's URLs are under
/// `public_url`; `/authz` decides with `gateway`.
pub(crate) fn router(identity: Arc<Identity>, public_url: &PublicUrl, gateway: GatewaySettings) -> Router {
    let issuer = &identity.settings().issuer;
    let openid_configuration = Arc::new(metadata::openid_configuration(issuer, public_url));
    let authorization_server = Arc::new(metadata::authorization_server(issuer, public_url));
    let oauth = crate::oauth::router(identity.clone(), public_url);
    let gateway = Arc::new(gateway);
    Router::new()
        .route(
            "/authz",
            any(
                move |State(identity): State<Arc<Identity>>,
                      headers: HeaderMap,
                      query: Result<Query<AuthzQuery>, QueryRejection>| {
                    let gateway = gateway.clone();
                    async move { forward_auth(&identity, &gateway, &headers, query) }
                },
            ),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(move || document(openid_configuration.clone())))
        .route("/.well-known/oauth-authorization-server", get(move || document(authorization_server.clone())))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(identity)
        .merge(oauth)
}

async fn jwks(State(identity): State<Arc<Identity>>) -> impl IntoResponse {
    // Keys change only on rotation, and a retired key is published for a
    // whole access-token lifetime after it stops signing; five minutes of
    // caching never hides a key that signs live tokens for long.
    (
        [(header::CONTENT_TYPE, "application/jwk-set+json"), (header::CACHE_CONTROL, "public, max-age=300")],
        identity.jwks_json(),
    )
}

/// A metadata document, built once at start.
async fn document(document: Arc<serde_json::Value>) -> Json<serde_json::Value> {
    Json(document.as_ref().clone())
}

async fn metrics(State(identity): State<Arc<Identity>>) -> impl IntoResponse {
    let text = crate::telemetry::METRICS.render(&identity).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

async fn healthz() -> impl IntoResponse {
    // The listener only starts once the store is open and the keys are
    // loaded, so answering at all means ready.
    (StatusCode::OK, "ok\n")
}

/// The policy of a forward-auth route, as the proxy's configuration writes
/// it in the query string: `/authz?audience=orders&roles=reader,writer`.
#[derive(serde::Deserialize)]
struct AuthzQuery {
    audience: Option<String>,
    roles: Option<String>,
}

/// `/authz`: 200 with the identity headers (`X-Sigil-User-Id`, …) for the
/// proxy to copy upstream, or 401/403 (400 for an unusable policy) with
/// the challenge and a JSON body. Never a redirect: to nginx
/// `auth_request` anything but 2xx, 401 and 403 is an error. The request's
/// size is the listener's to bound (header limits, timeouts).
fn forward_auth(
    identity: &Identity,
    settings: &GatewaySettings,
    headers: &HeaderMap,
    query: Result<Query<AuthzQuery>, QueryRejection>,
) -> Response {
    // Bytes that are not text cannot be a token of ours: read lossily,
    // they fail validation as malformed instead of vanishing. Two headers
    // are joined as Envoy joins them for `ext_authz` (RFC 9110 §5.3), a
    // value no token survives: which one the upstream reads is not ours to
    // guess, so neither passes.
    let authorizations: Vec<_> =
        headers.get_all(header::AUTHORIZATION).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
    let authorization = (!authorizations.is_empty()).then(|| authorizations.join(","));
    // HTTP/2 may split cookies over several headers (RFC 9113 §8.2.3).
    let cookies: Vec<_> =
        headers.get_all(header::COOKIE).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
    let cookie = (!cookies.is_empty()).then(|| cookies.join("; "));
    let credentials = Credentials { authorization: authorization.as_deref(), cookie: cookie.as_deref() };
    let policy = match &query {
        Ok(Query(query)) => RoutePolicy::parse(query.audience.as_deref(), query.roles.as_deref()),
        Err(_) => Err(PolicyError::Unreadable),
    };
    let verdict = gateway::decide(identity, settings, credentials, policy);
    count(Via::ForwardAuth, &verdict);
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match verdict {
        Verdict::Allowed(token) => {
            let mut response = (StatusCode::OK, [no_store]).into_response();
            for (name, value) in gateway::identity_headers(&token) {
                // Ids, roles and PRECIS usernames are never control
                // characters; a value that still is one fails closed.
                let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) else {
                    tracing::error!(header = name, "identity header value is not a header value: denying");
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                response.headers_mut().insert(HeaderName::from_static(name), value);
            }
            response
        }
        Verdict::Denied(denial) => {
            let refusal = refusal(denial, &settings.realm);
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::UNAUTHORIZED);
            let challenge = HeaderValue::from_str(&refusal.challenge).unwrap_or(HeaderValue::from_static("Bearer"));
            (
                status,
                [
                    (header::WWW_AUTHENTICATE, challenge),
                    (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    no_store,
                ],
                refusal.body,
            )
                .into_response()
        }
    }
}
