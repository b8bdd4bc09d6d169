//! Who is calling: the client authentication of RFC 6749 §2.3 read from a
//! request, checked for form only (whether the credentials are right is the
//! domain's to say). Exactly one method per request (§2.3): HTTP Basic
//! (`client_secret_basic`, each half form-urlencoded before base64,
//! §2.3.1), the body's `client_id` and `client_secret`
//! (`client_secret_post`), or an RFC 7523 assertion (`private_key_jwt`);
//! on the introspection endpoint, an admin's bearer token instead.

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::{error::OAuthError, form::Form};
use crate::domain::{Secret, client_auth::ClientCredential};

/// `client_assertion_type` of an RFC 7523 JWT client assertion.
pub(crate) const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client authentication methods served, by their RFC 7591 names (as
/// the metadata lists them and metrics count them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the body.
    ClientSecretPost,
    /// An RFC 7523 JWT signed with the client's registered key.
    PrivateKeyJwt,
    /// An admin's access token (introspection only).
    Bearer,
}

impl AuthMethod {
    /// The methods a client may authenticate with, as the metadata lists them.
    pub(crate) const CLIENT_METHODS: [Self; 3] = [Self::ClientSecretBasic, Self::ClientSecretPost, Self::PrivateKeyJwt];

    /// Its RFC 7591 name (`bearer` for an admin's token).
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::Bearer => "bearer",
        }
    }
}

/// What a client presented to authenticate.
#[derive(Debug)]
pub(crate) enum ClientCredentials {
    /// A client id and secret, in the header or the body.
    Secret {
        /// The client id.
        client_id: String,
        /// The secret.
        secret: Secret<String>,
    },
    /// An RFC 7523 assertion, with the body's `client_id` if it named one
    /// (which must then be the assertion's `sub`).
    Assertion {
        /// The body's `client_id`, if any.
        client_id: Option<String>,
        /// The signed JWT.
        assertion: Secret<String>,
    },
}

impl ClientCredentials {
    /// The client id named and the proof, as the domain takes them; an
    /// assertion may name `token_endpoint` as its audience (RFC 7523 §3).
    pub(crate) fn into_domain(self, token_endpoint: &str) -> (Option<String>, ClientCredential) {
        match self {
            Self::Secret { client_id, secret } => (Some(client_id), ClientCredential::Secret(secret)),
            Self::Assertion { client_id, assertion } => {
                (client_id, ClientCredential::Assertion { assertion, token_endpoint: Some(token_endpoint.to_string()) })
            }
        }
    }
}

/// A client's authentication: the method and what it presented.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    /// How it authenticates.
    pub method: AuthMethod,
    /// What it presented.
    pub credentials: ClientCredentials,
}

/// The caller of the introspection endpoint: a client, or an admin's
/// bearer token.
#[derive(Debug)]
pub(crate) enum Caller {
    /// A client.
    Client(ClientAuth),
    /// `Authorization: Bearer`.
    Bearer(Secret<String>),
}

impl Caller {
    /// How the caller authenticates.
    pub(crate) fn method(&self) -> AuthMethod {
        match self {
            Self::Client(client) => client.method,
            Self::Bearer(_) => AuthMethod::Bearer,
        }
    }
}

/// The body parameters that carry client credentials.
const BODY_CREDENTIALS: [&str; 3] = ["client_secret", "client_assertion", "client_assertion_type"];

/// Reads the client authentication of a request from its `Authorization`
/// header and its form.
pub(crate) fn client(headers: &HeaderMap, form: &Form) -> Result<ClientAuth, OAuthError> {
    match read(headers, form, false)? {
        Caller::Client(client) => Ok(client),
        Caller::Bearer(_) => Err(unusable_header()),
    }
}

/// Reads the caller of a request that a client or a bearer token may make.
pub(crate) fn client_or_bearer(headers: &HeaderMap, form: &Form) -> Result<Caller, OAuthError> {
    read(headers, form, true)
}

/// The caller of a request; `bearer` says whether a bearer token will do.
fn read(headers: &HeaderMap, form: &Form, bearer: bool) -> Result<Caller, OAuthError> {
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    let authorization = authorizations.next();
    if authorizations.next().is_some() {
        return Err(OAuthError::invalid_request("more than one Authorization header"));
    }
    match authorization {
        Some(value) => from_header(value.as_bytes(), form, bearer),
        None => from_body(form),
    }
}

fn from_header(value: &[u8], form: &Form, bearer: bool) -> Result<Caller, OAuthError> {
    if BODY_CREDENTIALS.iter().any(|name| form.has(name)) {
        return Err(OAuthError::invalid_request(
            "client credentials in both the Authorization header and the body: use one authentication method (RFC 6749 §2.3)",
        ));
    }
    let text = std::str::from_utf8(value).map_err(|_| unusable_header())?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("Basic") {
        let (client_id, secret) = decode_basic(rest)?;
        if form.get("client_id").is_some_and(|body_id| body_id != client_id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body is not the client of the Authorization header",
            ));
        }
        let credentials = ClientCredentials::Secret { client_id, secret };
        return Ok(Caller::Client(ClientAuth { method: AuthMethod::ClientSecretBasic, credentials }));
    }
    if bearer && scheme.eq_ignore_ascii_case("Bearer") && !rest.is_empty() {
        return Ok(Caller::Bearer(Secret::new(rest.to_string())));
    }
    Err(unusable_header())
}

fn unusable_header() -> OAuthError {
    OAuthError::invalid_client("the Authorization header must be Basic with the client id and secret (RFC 6749 §2.3.1)")
}

/// Decodes `client_secret_basic` credentials: base64 of `id:secret`, each
/// form-urlencoded first (RFC 6749 §2.3.1), so a `:` or non-ASCII byte in
/// either survives.
fn decode_basic(encoded: &str) -> Result<(String, Secret<String>), OAuthError> {
    let malformed = || {
        OAuthError::invalid_client(
            "Basic credentials must be base64 of client_id:client_secret, each form-urlencoded (RFC 6749 §2.3.1)",
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| malformed())?;
    let decoded = Secret::new(decoded);
    let colon = decoded.expose().iter().position(|&b| b == b':').ok_or_else(malformed)?;
    let (id, secret) = (&decoded.expose()[..colon], &decoded.expose()[colon + 1..]);
    let client_id = form_decode(id).ok_or_else(malformed)?;
    let secret = Secret::new(form_decode(secret).ok_or_else(malformed)?);
    if client_id.is_empty() || secret.expose().is_empty() {
        return Err(malformed());
    }
    Ok((client_id, secret))
}

/// One form-urlencoded value decoded (`+` is a space), or `None` if it is
/// not UTF-8 once decoded.
fn form_decode(bytes: &[u8]) -> Option<String> {
    let plus_as_space: Vec<u8> = bytes.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(decoded).ok()
}

fn from_body(form: &Form) -> Result<Caller, OAuthError> {
    let client_id = form.get("client_id").map(str::to_string);
    let secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    match (secret, assertion, assertion_type) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "both client_secret and client_assertion: use one authentication method (RFC 6749 §2.3)",
        )),
        (Some(secret), None, None) => {
            let client_id =
                client_id.ok_or_else(|| OAuthError::invalid_request("client_secret needs its client_id"))?;
            let secret = Secret::new(secret.to_string());
            let credentials = ClientCredentials::Secret { client_id, secret };
            Ok(Caller::Client(ClientAuth { method: AuthMethod::ClientSecretPost, credentials }))
        }
        (None, Some(assertion), Some(JWT_BEARER_ASSERTION)) => {
            let assertion = Secret::new(assertion.to_string());
            let credentials = ClientCredentials::Assertion { client_id, assertion };
            Ok(Caller::Client(ClientAuth { method: AuthMethod::PrivateKeyJwt, credentials }))
        }
        (None, Some(_), Some(_)) => {
            Err(OAuthError::invalid_client(format!("client_assertion_type must be {JWT_BEARER_ASSERTION} (RFC 7523)")))
        }
        (None, Some(_), None) | (None, None, Some(_)) => {
            Err(OAuthError::invalid_request("client_assertion and client_assertion_type go together (RFC 7521 §4.2)"))
        }
        (None, None, None) => Err(OAuthError::invalid_client(
            "client authentication is required: HTTP Basic, client_secret or a client_assertion",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> Result<ClientAuth, OAuthError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Basic {value}").parse().expect("header"));
        client(&headers, &Form::default())
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        // "a%3Ab+c:s%C3%A9cr%2Bet" → id "a:b c", secret "sécr+et".
        let encoded = base64::engine::general_purpose::STANDARD.encode("a%3Ab+c:s%C3%A9cr%2Bet");
        let Ok(ClientAuth {
            method: AuthMethod::ClientSecretBasic,
            credentials: ClientCredentials::Secret { client_id, secret },
        }) = basic(&encoded)
        else {
            panic!("not Basic credentials");
        };
        assert_eq!(client_id, "a:b c");
        assert_eq!(secret.expose(), "sécr+et");
    }

    #[test]
    fn undecodable_basic_credentials_are_invalid_client() {
        for raw in ["no-colon", ":secret", "id:", "%FF:secret"] {
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
            assert!(matches!(basic(&encoded), Err(OAuthError::InvalidClient(_))), "{raw} accepted");
        }
        assert!(matches!(basic("***"), Err(OAuthError::InvalidClient(_))));
    }

    #[test]
    fn an_assertion_of_another_type_is_invalid_client() {
        let form = Form::parse(b"client_assertion=x.y.z&client_assertion_type=urn%3Aother").expect("form");
        assert!(matches!(client(&HeaderMap::new(), &form), Err(OAuthError::InvalidClient(_))));
    }

    #[test]
    fn a_bearer_token_is_read_only_where_the_endpoint_takes_one() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert!(matches!(client_or_bearer(&headers, &Form::default()), Ok(Caller::Bearer(_))));
        assert!(matches!(client(&headers, &Form::default()), Err(OAuthError::InvalidClient(_))));
    }
}
