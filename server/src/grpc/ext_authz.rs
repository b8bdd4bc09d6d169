//! Envoy's `envoy.service.auth.v3.Authorization/Check` (ext_authz v3) over
//! the gateway decision: the request's headers and the route's
//! `context_extensions` (`sigil_audience`, `sigil_roles`) in, an OK with
//! the identity headers that have a value for the caller (overwriting the
//! client's; every other `x-sigil-*` the client sent removed) or a denial
//! with its HTTP status, challenge and body out. A denial is an answer,
//! never an RPC error: Envoy shows it to the client.

use std::{borrow::Cow, convert::Infallible, sync::Arc};

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::{envoy::service::auth::v3::authorization_server, google::rpc};
use sigil_proto::codec::StrictCodec;
use tonic::{
    Code, Status,
    body::Body,
    codegen::{Body as RequestBody, BoxFuture, Context, Poll, StdError},
    server::{Grpc, NamedService, UnaryService},
};

use super::check_request::{Attributes, CheckRequestView, NotUtf8, text};
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
/// The one method of Envoy's `Authorization` service.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

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

    /// The answer to one `Check`.
    fn check(&self, request: CheckRequestView) -> Result<CheckResponse, Status> {
        let attributes = request.attributes.unwrap_or_default();
        let unreadable = |NotUtf8| Status::invalid_argument(NotUtf8.to_string());
        let headers = ClientHeaders::of(&attributes).map_err(unreadable)?;
        let credentials =
            Credentials { authorization: headers.authorization.as_deref(), cookie: headers.cookie.as_deref() };
        let audience = attributes.extension(AUDIENCE_EXTENSION).map_err(unreadable)?;
        let roles = attributes.extension(ROLES_EXTENSION).map_err(unreadable)?;
        let policy = RoutePolicy::parse(audience, roles);
        let verdict = gateway::decide(&self.identity, &self.settings, credentials, policy);
        count(Via::ExtAuthz, &verdict);
        Ok(match verdict {
            Verdict::Allowed(token) => allowed(&token, &headers),
            Verdict::Denied(denial) => denied(denial, &self.settings.realm),
        })
    }
}

/// Envoy's `envoy.service.auth.v3.Authorization` service over
/// [`ExtAuthzApi`]: its one method, `Check`, read through
/// [`CheckRequestView`] (see there why not through envoy-types' request
/// type) and answered with envoy-types' `CheckResponse`; any other method
/// is `UNIMPLEMENTED`, as the generated server would answer.
#[derive(Clone)]
pub(crate) struct AuthorizationService {
    api: ExtAuthzApi,
    max_decoding: usize,
    max_encoding: usize,
}

impl AuthorizationService {
    /// Serves `api` with these message size caps.
    pub(crate) fn new(api: ExtAuthzApi, max_decoding: usize, max_encoding: usize) -> Self {
        Self { api, max_decoding, max_encoding }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = authorization_server::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for AuthorizationService
where
    B: RequestBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(std::future::ready(Ok(Status::unimplemented("").into_http())));
        }
        let call = CheckCall(self.api.clone());
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let codec = StrictCodec::<CheckResponse, CheckRequestView>::default();
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(Some(max_decoding), Some(max_encoding));
            Ok(grpc.unary(call, request).await)
        })
    }
}

/// One `Check` call.
struct CheckCall(ExtAuthzApi);

impl UnaryService<CheckRequestView> for CheckCall {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, Status>;

    fn call(&mut self, request: tonic::Request<CheckRequestView>) -> Self::Future {
        Box::pin(std::future::ready(self.0.check(request.into_inner()).map(tonic::Response::new)))
    }
}

/// What the decision reads of the client's request headers, found in one
/// pass over them without copying them into a map of their own: the
/// bearer's two carriers, and the client's own `x-sigil-*` headers, which
/// the answer overwrites or removes.
#[derive(Default)]
struct ClientHeaders<'a> {
    /// The `Authorization` value.
    authorization: Option<Cow<'a, str>>,
    /// The `Cookie` value.
    cookie: Option<Cow<'a, str>>,
    /// Which of [`gateway::IDENTITY_HEADERS`] the client sent (by index).
    sent_identity: [bool; gateway::IDENTITY_HEADERS.len()],
    /// The names, in lower case, each once, of the client's `x-sigil-*`
    /// headers that are not identity headers.
    foreign_identity: Vec<String>,
}

impl<'a> ClientHeaders<'a> {
    /// Names in any case, from `headers` or, when Envoy sends them raw
    /// (`encode_raw_headers`), from `header_map`. A name `headers` repeats
    /// counts its last value (a map's rule). `header_map` has one entry per
    /// value of a repeated header: those are joined as Envoy joins them
    /// into `headers` (RFC 9110 §5.3), so two `Authorization` headers fail
    /// as malformed and two token cookies as no token of either, as at
    /// `/authz`, instead of the first deciding.
    fn of(attributes: &'a Attributes) -> Result<Self, NotUtf8> {
        let mut found = Self::default();
        let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
            return Ok(found);
        };
        for entry in http.headers.iter().rev() {
            found.note(text(&entry.key)?, Repeated::KeepFirst, || text(&entry.value).map(Cow::Borrowed))?;
        }
        for header in http.header_map.iter().flat_map(|map| &map.headers) {
            found.note(text(&header.key)?, Repeated::Join, || {
                if header.value.is_empty() {
                    Ok(String::from_utf8_lossy(&header.raw_value))
                } else {
                    text(&header.value).map(Cow::Borrowed)
                }
            })?;
        }
        Ok(found)
    }

    fn note(
        &mut self,
        name: &str,
        repeated: Repeated,
        value: impl FnOnce() -> Result<Cow<'a, str>, NotUtf8>,
    ) -> Result<(), NotUtf8> {
        let (slot, separator) = if name.eq_ignore_ascii_case("authorization") {
            (&mut self.authorization, ",")
        } else if name.eq_ignore_ascii_case("cookie") {
            (&mut self.cookie, "; ")
        } else {
            if let Some(index) = gateway::IDENTITY_HEADERS.iter().position(|known| known.eq_ignore_ascii_case(name)) {
                self.sent_identity[index] = true;
            } else if gateway::is_foreign_identity_header(name) {
                let name = name.to_ascii_lowercase();
                if !self.foreign_identity.contains(&name) {
                    self.foreign_identity.push(name);
                }
            }
            return Ok(());
        };
        match (slot.as_mut(), repeated) {
            (None, _) => *slot = Some(value()?),
            (Some(_), Repeated::KeepFirst) => {}
            (Some(seen), Repeated::Join) => {
                let seen = seen.to_mut();
                seen.push_str(separator);
                seen.push_str(&value()?);
            }
        }
        Ok(())
    }
}

/// What [`ClientHeaders::note`] does with a second value of a name it has.
#[derive(Clone, Copy)]
enum Repeated {
    /// Keep the value it has (the map form, read last to first).
    KeepFirst,
    /// Append it, as a repeated header's values are joined.
    Join,
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

/// The OK for `token`. Envoy applies each header of it on its worker, one
/// by one (about 4,700 instructions each, BENCHMARKS.md #14), so it sets
/// only the identity headers that have a value for this caller: a user has
/// no client id or scope, a service no user, username or session, a
/// roleless user no roles. A client's own header of such an empty name is
/// removed instead of overwritten with nothing, so either way no
/// `x-sigil-*` header the client sent reaches the upstream.
fn allowed(token: &crate::domain::token::VerifiedToken, client: &ClientHeaders<'_>) -> CheckResponse {
    let mut headers = Vec::with_capacity(gateway::IDENTITY_HEADERS.len());
    let mut headers_to_remove = Vec::new();
    for ((key, value), sent) in gateway::identity_headers(token).into_iter().zip(client.sent_identity) {
        if !value.is_empty() {
            headers.push(overwrite(key, value));
        } else if sent {
            headers_to_remove.push(key.to_string());
        }
    }
    headers_to_remove.extend(client.foreign_identity.iter().cloned());
    headers_to_remove.sort_unstable();
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
