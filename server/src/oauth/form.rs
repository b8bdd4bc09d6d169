//! The request body of every OAuth endpoint: `application/x-www-form-urlencoded`
//! (RFC 6749 §3.2, RFC 7662 §2.1, RFC 7009 §2.1), at most
//! [`MAX_BODY_BYTES`] (an announced larger body is refused on its headers,
//! before a byte of it is read), each parameter at most once (RFC 6749
//! §3.1), and a parameter without a value treated as omitted (§3.1 too).

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{FromRequest as _, Request},
    http::{HeaderMap, header},
};

use super::error::OAuthError;

/// The largest body read. The largest legitimate request is an
/// introspection of an access token (at most 8 KiB) with client
/// credentials, or a client assertion of a few hundred bytes.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// The one media type the endpoints read.
pub(crate) const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// The parameters of a request, each named once.
#[derive(Default)]
pub(crate) struct Form {
    params: HashMap<String, String>,
}

// Parameters hold secrets (client_secret, client_assertion, token): only
// their names are shown.
impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.params.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Form").field("names", &names).finish()
    }
}

impl Form {
    /// Reads the form of `request`: checks its content type and announced
    /// length first, then reads at most [`MAX_BODY_BYTES`].
    pub(crate) async fn read(request: Request) -> Result<(HeaderMap, Self), OAuthError> {
        check_content_type(request.headers())?;
        let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if announced.and_then(|v| v.parse::<u64>().ok()).is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(OAuthError::BodyTooLarge);
        }
        let headers = request.headers().clone();
        // The limit itself is the router's `DefaultBodyLimit`, which a
        // chunked body meets as it streams in.
        let body = Bytes::from_request(request, &()).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                OAuthError::BodyTooLarge
            } else {
                OAuthError::invalid_request("the request body could not be read to its end")
            }
        })?;
        Ok((headers, Self::parse(&body)?))
    }

    /// Parses a form body, refusing a parameter named twice.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in form_urlencoded::parse(body) {
            // Percent-decoding replaced bytes that are not UTF-8 with U+FFFD:
            // such a name or value can only be refused, never guessed at.
            if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is not UTF-8 once decoded",
                    shown_name(&name)
                )));
            }
            if !seen.insert(name.to_string()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is sent more than once (RFC 6749 §3.1)",
                    shown_name(&name)
                )));
            }
            if !value.is_empty() {
                params.insert(name.into_owned(), value.into_owned());
            }
        }
        Ok(Self { params })
    }

    /// The value of parameter `name`, if it was sent with one.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Whether parameter `name` was sent with a value.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// The value of parameter `name`, which the request must carry.
    pub(crate) fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is missing")))
    }
}

/// A parameter name as an error message may show it: a caller's bytes,
/// so only short names of visible ASCII are repeated.
fn shown_name(name: &str) -> String {
    if name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic()) {
        format!("`{name}`")
    } else {
        "(a name that is not shown)".into()
    }
}

/// The content type must be the form media type (RFC 6749 §3.2), its name
/// compared without case; a charset, if given, must be UTF-8.
fn check_content_type(headers: &HeaderMap) -> Result<(), OAuthError> {
    let wrong = || OAuthError::invalid_request(format!("the request body must be {FORM_MEDIA_TYPE} (UTF-8)"));
    let value = headers.get(header::CONTENT_TYPE).ok_or_else(wrong)?.to_str().map_err(|_| wrong())?;
    let mut parts = value.split(';');
    if !parts.next().is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM_MEDIA_TYPE)) {
        return Err(wrong());
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if name.trim().eq_ignore_ascii_case("charset") && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return Err(wrong());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_form_decoded_and_empty_ones_are_omitted() {
        let form = Form::parse(b"a=x+y%2Bz&b=&c").expect("parses");
        assert_eq!(form.get("a"), Some("x y+z"));
        assert!(!form.has("b") && !form.has("c"));
    }

    #[test]
    fn a_name_twice_is_refused_however_it_is_encoded() {
        for body in [&b"a=1&a=2"[..], b"a=1&%61=1", b"a=&a=1"] {
            let error = Form::parse(body).expect_err("refused");
            assert!(format!("{error:?}").contains("more than once"), "{error:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        assert!(Form::parse(b"a=%FF").is_err());
        assert!(Form::parse(b"%C3%28=1").is_err());
    }

    #[test]
    fn the_debug_output_names_parameters_but_never_values() {
        let form = Form::parse(b"client_secret=hunter2&token=abc").expect("parses");
        let shown = format!("{form:?}");
        assert!(shown.contains("client_secret") && !shown.contains("hunter2") && !shown.contains("abc"), "{shown}");
    }

    #[test]
    fn content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header value"));
            check_content_type(&headers).is_ok()
        };
        assert!(with("application/x-www-form-urlencoded"));
        assert!(with("Application/X-WWW-Form-Urlencoded ; charset=\"UTF-8\""));
        assert!(!with("application/x-www-form-urlencoded; charset=latin1"));
        assert!(!with("application/json"));
        assert!(!with("application/x-www-form-urlencodedx"));
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
