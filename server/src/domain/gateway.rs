//! The gateway decision: whether a request that a proxy asks about (Envoy
//! `ext_authz`, nginx `auth_request`, Caddy `forward_auth`, Traefik
//! ForwardAuth) may pass, given the token it carries and the route's
//! policy, and which identity it passes upstream as.
//!
//! One function, [`decide`], serves every adapter, and it stands on the
//! in-memory path of `Validate`: a revocation, a disabled user or a changed
//! role (which revokes the tokens minted before it) stops the very next
//! request, and no check touches the store.

use std::sync::Arc;

use super::{
    Identity,
    limits::{MAX_ACCESS_TOKEN_BYTES, MAX_AUDIENCE_BYTES},
    token::{ValidationFailure, VerifiedToken},
    user::check_role,
};

/// The identity headers an allowed request carries upstream, in this
/// order: user id, username, roles (comma-separated), session id, token id,
/// and for a service account its client id and scopes (space-separated).
/// Forward-auth always answers each, empty when the token has no such
/// claim (a service has no user or session, a user no client id), so that
/// the proxy overwrites a client's own header of that name, never passes it
/// on; Envoy's answer, which can also remove, sets only those with a value
/// and removes the client's others (`grpc/ext_authz.rs`).
pub(crate) const IDENTITY_HEADERS: [&str; 7] = [
    "x-sigil-user-id",
    "x-sigil-username",
    "x-sigil-roles",
    "x-sigil-session-id",
    "x-sigil-token-id",
    "x-sigil-client-id",
    "x-sigil-scope",
];

/// The prefix Sigil owns upstream: a client's own `x-sigil-*` headers are
/// overwritten or removed, never passed on as if Sigil had said them.
pub(crate) const IDENTITY_HEADER_PREFIX: &str = "x-sigil-";

/// At most this many roles in one route policy.
const MAX_POLICY_ROLES: usize = 32;

/// How the gateways find a request's token and name themselves.
#[derive(Clone, Debug)]
pub(crate) struct GatewaySettings {
    /// The cookie that may carry the access token when no
    /// `Authorization: Bearer` header does; `None` ignores cookies.
    pub cookie: Option<String>,
    /// The `realm` of the `WWW-Authenticate` challenge (the issuer).
    pub realm: String,
}

/// A route's policy: the audience the token must be minted for, and the
/// roles of which the user must hold at least one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RoutePolicy {
    /// `None`: the default audience (Sigil's own), so that a token minted
    /// for one service never opens a route that named no audience.
    audience: Option<String>,
    /// Empty: any authenticated user. Otherwise ANY ONE of these roles.
    any_of_roles: Vec<String>,
}

/// Why a route policy (proxy configuration) cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PolicyError {
    /// The audience is longer than any Sigil mints.
    #[error("audience is longer than {MAX_AUDIENCE_BYTES} bytes")]
    AudienceTooLong,
    /// More roles than a policy may list.
    #[error("at most {MAX_POLICY_ROLES} roles")]
    TooManyRoles,
    /// A role no user can hold.
    #[error("a role must be 1 to 64 printable ASCII characters")]
    BadRole,
    /// The policy could not be read at all (a query string that is not
    /// form-encoded, a key given twice).
    #[error("the policy is not `audience=…&roles=…`, each at most once")]
    Unreadable,
}

impl RoutePolicy {
    /// The policy of `audience` (empty means the default) and `roles`
    /// (comma-separated, spaces around each ignored, empty items skipped).
    pub(crate) fn parse(audience: Option<&str>, roles: Option<&str>) -> Result<Self, PolicyError> {
        let audience = audience.map(str::trim).filter(|a| !a.is_empty());
        if audience.is_some_and(|a| a.len() > MAX_AUDIENCE_BYTES) {
            return Err(PolicyError::AudienceTooLong);
        }
        let mut any_of_roles = Vec::new();
        for role in roles.unwrap_or_default().split(',').map(str::trim).filter(|r| !r.is_empty()) {
            if any_of_roles.len() == MAX_POLICY_ROLES {
                return Err(PolicyError::TooManyRoles);
            }
            check_role(role).map_err(|_| PolicyError::BadRole)?;
            any_of_roles.push(role.to_string());
        }
        Ok(Self { audience: audience.map(str::to_string), any_of_roles })
    }
}

/// Where a request's token is: its `Authorization` header and its `Cookie`
/// headers, as the proxy forwarded them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Credentials<'a> {
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
    /// The `Cookie` header's value (several joined with `; `).
    pub cookie: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// The bearer token: from `Authorization: Bearer …` (scheme in any
    /// case), else from the configured cookie. Another scheme (`Basic`) is
    /// no bearer token. The cookie with two different values is an empty
    /// token (refused as malformed): a sibling domain can add its own
    /// cookie of that name, which browsers send first when its path is
    /// longer (cookie tossing), and which of the two is the user's cannot
    /// be told.
    fn token(&self, cookie_name: Option<&str>) -> Option<&'a str> {
        let from_header = self.authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        from_header.or_else(|| {
            let name = cookie_name?;
            let mut values = self.cookie?.split(';').filter_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then(|| value.trim().trim_matches('"'))
            });
            let first = values.next()?;
            Some(if values.any(|other| other != first) { "" } else { first })
        })
    }
}

/// What the gateway answers.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The request passes as this token's user.
    Allowed(Arc<VerifiedToken>),
    /// It does not.
    Denied(Denial),
}

/// Why a request does not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denial {
    /// It carries no bearer token (401 with a realm challenge).
    NoToken,
    /// Its token does not hold now (401, `invalid_token`).
    InvalidToken(ValidationFailure),
    /// The user holds none of the route's roles (403, `insufficient_scope`).
    MissingRole,
    /// The route's policy is unusable: the proxy's configuration is wrong
    /// (400, `invalid_request`: fail closed, and say what to fix).
    BadPolicy(PolicyError),
}

impl Denial {
    /// The HTTP status the proxy answers the client with.
    pub(crate) const fn http_status(self) -> u16 {
        match self {
            Self::NoToken | Self::InvalidToken(_) => 401,
            Self::MissingRole => 403,
            Self::BadPolicy(_) => 400,
        }
    }

    /// The RFC 6750 error code, when the denial has one.
    pub(crate) const fn error_code(self) -> Option<&'static str> {
        match self {
            Self::NoToken => None,
            Self::InvalidToken(_) => Some("invalid_token"),
            Self::MissingRole => Some("insufficient_scope"),
            Self::BadPolicy(_) => Some("invalid_request"),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) under `realm`.
    pub(crate) fn challenge(self, realm: &str) -> String {
        let realm = realm.replace(['\\', '"'], "");
        match self.error_code() {
            None => format!("Bearer realm=\"{realm}\""),
            Some(code) => format!("Bearer realm=\"{realm}\", error=\"{code}\""),
        }
    }
}

/// The identity headers of an allowed request, in [`IDENTITY_HEADERS`]
/// order. The roles are the token's, which are the user's (or service
/// account's) current ones: a role change revokes every token minted
/// before it.
pub(crate) fn identity_headers(token: &VerifiedToken) -> [(&'static str, String); 7] {
    let [user_id, username, roles, session_id, token_id, client_id, scope] = IDENTITY_HEADERS;
    let user = token.is_user();
    [
        (user_id, if user { token.user_id.to_string() } else { String::new() }),
        (username, token.claims.username.clone()),
        (roles, token.claims.roles.join(",")),
        (session_id, if user { token.session_id.to_string() } else { String::new() }),
        (token_id, token.token_id.to_string()),
        (client_id, token.client_id.map(|c| c.to_string()).unwrap_or_default()),
        (scope, token.claims.scope.clone().unwrap_or_default()),
    ]
}

/// Whether a client-sent header `name` must not reach the upstream: any
/// `x-sigil-*` header that is not one of the identity headers Sigil sets
/// (those are overwritten instead).
pub(crate) fn is_foreign_identity_header(name: &str) -> bool {
    name.len() > IDENTITY_HEADER_PREFIX.len()
        && name.is_char_boundary(IDENTITY_HEADER_PREFIX.len())
        && name[..IDENTITY_HEADER_PREFIX.len()].eq_ignore_ascii_case(IDENTITY_HEADER_PREFIX)
        && !IDENTITY_HEADERS.iter().any(|known| known.eq_ignore_ascii_case(name))
}

/// The decision for a request presenting `credentials` on a route with
/// `policy` (or an unusable one): its token is validated exactly as
/// `Validate` would, for the route's audience, then held to its roles.
pub(crate) fn decide(
    identity: &Identity,
    settings: &GatewaySettings,
    credentials: Credentials<'_>,
    policy: Result<RoutePolicy, PolicyError>,
) -> Verdict {
    let policy = match policy {
        Ok(policy) => policy,
        Err(error) => return Verdict::Denied(Denial::BadPolicy(error)),
    };
    let Some(token) = credentials.token(settings.cookie.as_deref()) else {
        return Verdict::Denied(Denial::NoToken);
    };
    // Longer than any token Sigil mints: refused before any work on it.
    if token.is_empty() || token.len() > MAX_ACCESS_TOKEN_BYTES {
        return Verdict::Denied(Denial::InvalidToken(ValidationFailure::Malformed));
    }
    let audience = policy.audience.as_deref().unwrap_or(identity.own_audience());
    let verified = match identity.validate(token, Some(audience)) {
        Ok(verified) => verified,
        Err(failure) => return Verdict::Denied(Denial::InvalidToken(failure)),
    };
    if !policy.any_of_roles.is_empty() && !policy.any_of_roles.iter().any(|role| verified.has_role(role)) {
        return Verdict::Denied(Denial::MissingRole);
    }
    Verdict::Allowed(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_wins_over_the_cookie_and_other_schemes_are_no_token() {
        let both = Credentials { authorization: Some("bearer  abc "), cookie: Some("sigil_at=def") };
        assert_eq!(both.token(Some("sigil_at")), Some("abc"));
        let basic = Credentials { authorization: Some("Basic YWxp"), cookie: Some("x=1; sigil_at=\"def\"") };
        assert_eq!(basic.token(Some("sigil_at")), Some("def"));
        assert_eq!(basic.token(None), None, "cookies are ignored unless configured");
        let prefix = Credentials { authorization: None, cookie: Some("sigil_at_other=1; xsigil_at=2") };
        assert_eq!(prefix.token(Some("sigil_at")), None, "the cookie name matches whole");
        let tossed = Credentials { authorization: None, cookie: Some("sigil_at=evil; theme=dark; sigil_at=mine") };
        assert_eq!(tossed.token(Some("sigil_at")), Some(""), "two different values are no token of either");
        let twice = Credentials { authorization: None, cookie: Some("sigil_at=mine; sigil_at=\"mine\"") };
        assert_eq!(twice.token(Some("sigil_at")), Some("mine"));
    }

    #[test]
    fn policies_are_any_of_roles_and_bounded() {
        let policy = RoutePolicy::parse(Some(" "), Some(" admin, ,writer,")).expect("valid");
        assert_eq!(policy, RoutePolicy { audience: None, any_of_roles: vec!["admin".into(), "writer".into()] });
        assert_eq!(RoutePolicy::parse(None, Some(&"r,".repeat(33))), Err(PolicyError::TooManyRoles));
        assert_eq!(RoutePolicy::parse(None, Some(&"r".repeat(65))), Err(PolicyError::BadRole));
        assert_eq!(RoutePolicy::parse(Some(&"a".repeat(257)), None), Err(PolicyError::AudienceTooLong));
    }

    #[test]
    fn only_foreign_sigil_headers_are_removed() {
        assert!(is_foreign_identity_header("x-sigil-other"));
        assert!(is_foreign_identity_header("X-Sigil-Admin"));
        assert!(!is_foreign_identity_header("x-sigil-user-id"), "overwritten, not removed");
        assert!(!is_foreign_identity_header("X-Sigil-Roles"));
        assert!(!is_foreign_identity_header("x-sigil-"));
        assert!(!is_foreign_identity_header("x-request-id"));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(Denial::NoToken.challenge("sigil"), "Bearer realm=\"sigil\"");
        assert_eq!(
            Denial::InvalidToken(ValidationFailure::Expired).challenge("si\"gil"),
            "Bearer realm=\"sigil\", error=\"invalid_token\""
        );
        assert_eq!(Denial::MissingRole.http_status(), 403);
    }
}
