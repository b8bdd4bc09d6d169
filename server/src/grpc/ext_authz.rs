//! Envoy's `envoy.service.auth.v3.Authorization/Check` (ext_authz v3) over
//! the gateway decision: the request's headers and the route's
//! `context_extensions` (`sigil_audience`, `sigil_roles`) in, an OK with
//! the identity headers (overwriting the client's, every other `x-sigil-*`
//! removed) or a denial with its HTTP status, challenge and body out. A
//! denial is an answer, never an RPC error: Envoy shows it to the client.

use std::{collections::HashMap, sync::Arc};

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Code, Request, Response, Status};

use crate::{
    domain::{
        Identity,
        gateway::{self, Credentials, Denial, GatewaySettings, RoutePolicy, Verdict},
    },
    gateway::{Via, count, refusal},
};

/// The `context_extensions` key naming the route's audience.
const AUDIENCE_EXTENSION: &str = "sigil_audience";
/// The `context_extensions` key naming the route's roles (any one of them).
const ROLES_EXTENSION: &str = "sigil_roles";

/// Largest `CheckRequest` accepted: Envoy forwards every request header
/// (its own limit is 60 KiB by default) and the route's extensions, so
/// the 64 KiB cap of Sigil's own messages would refuse legitimate checks.
pub(crate) const MAX_CHECK_REQUEST_BYTES: usize = 256 * 1024;

/// The ext_authz face of the gateway decision.
#[derive(Clone)]
pub(crate) struct ExtAuthzApi {
    identity: Arc<Identity>,
    settings: Arc<GatewaySettings>,
}

impl ExtAuthzApi {
    /// Decides over `identity` with `settings`.
    pub(crate) fn new(identity: Arc<Identity>, settings: Arc<GatewaySettings>) -> Self {
        Self { identity, settings }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzApi {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let headers = client_headers(&attributes);
        let credentials = Credentials {
            authorization: headers.get("authorization").map(String::as_str),
            cookie: headers.get("cookie").map(String::as_str),
        };
        let extension = |key| attributes.context_extensions.get(key).map(String::as_str);
        let policy = RoutePolicy::parse(extension(AUDIENCE_EXTENSION), extension(ROLES_EXTENSION));
        let verdict = gateway::decide(&self.identity, &self.settings, credentials, policy);
        count(Via::ExtAuthz, &verdict);
        let response = match verdict {
            Verdict::Allowed(token) => allowed(&token, &headers),
            Verdict::Denied(denial) => denied(denial, &self.settings.realm),
        };
        Ok(Response::new(response))
    }
}

/// The client's request headers, names in lower case, from `headers` or,
/// when Envoy sends them raw (`encode_raw_headers`), from `header_map`.
fn client_headers(attributes: &envoy_types::pb::envoy::service::auth::v3::AttributeContext) -> HashMap<String, String> {
    let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
        return HashMap::new();
    };
    let mut headers: HashMap<String, String> =
        http.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    for header in http.header_map.iter().flat_map(|map| &map.headers) {
        let value = if header.value.is_empty() {
            String::from_utf8_lossy(&header.raw_value).into_owned()
        } else {
            header.value.clone()
        };
        headers.entry(header.key.to_ascii_lowercase()).or_insert(value);
    }
    headers
}

fn rpc_status(code: Code) -> Option<rpc::Status> {
    Some(rpc::Status { code: code as i32, message: String::new(), details: Vec::new() })
}

/// A header Envoy sets, replacing any value the request already has.
fn overwrite(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_string(), value, ..Default::default() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..Default::default()
    }
}

fn allowed(token: &crate::domain::token::VerifiedToken, client: &HashMap<String, String>) -> CheckResponse {
    let headers = gateway::identity_headers(token).into_iter().map(|(key, value)| overwrite(key, value)).collect();
    let mut headers_to_remove: Vec<String> =
        client.keys().filter(|name| gateway::is_foreign_identity_header(name)).cloned().collect();
    headers_to_remove.sort();
    CheckResponse {
        status: rpc_status(Code::Ok),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn denied(denial: Denial, realm: &str) -> CheckResponse {
    let refusal = refusal(denial, realm);
    let code = match denial {
        Denial::NoToken | Denial::InvalidToken(_) => Code::Unauthenticated,
        Denial::MissingRole => Code::PermissionDenied,
        Denial::BadPolicy(_) => Code::InvalidArgument,
    };
    CheckResponse {
        status: rpc_status(code),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: i32::from(refusal.status) }),
            headers: vec![
                overwrite("www-authenticate", refusal.challenge),
                overwrite("content-type", "application/json".into()),
                overwrite("cache-control", "no-store".into()),
            ],
            body: refusal.body,
        })),
        ..Default::default()
    }
}
