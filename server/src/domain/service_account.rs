//! Service accounts: the OAuth 2.0 clients that services authenticate as
//! (RFC 6749 §2), the record stored for each, and the rules for their
//! names, roles, audiences, scopes and credentials.
//!
//! A service account holds client secrets (several at once, so that one
//! rotates without downtime) and/or one registered public key for
//! `private_key_jwt` (see `client_key` and `client_assertion`). Its
//! `client_id` is the text form of its [`ServiceAccountId`].

use serde::{Deserialize, Serialize};

use super::{
    ClientSecretId, DomainError, Secret, ServiceAccountId, Timestamp,
    client_key::ClientKeyRecord,
    limits::MAX_AUDIENCE_BYTES,
    password::{base64_url, fill_random},
    user::check_role,
};

/// Longest service-account name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// Most audiences, scopes or roles one account may list.
pub(crate) const MAX_LIST_ITEMS: usize = 32;
/// Longest scope token, in bytes.
pub(crate) const MAX_SCOPE_BYTES: usize = 128;
/// Most client secrets one account holds at once: enough to rotate, few
/// enough that checking a presented secret against each stays cheap.
pub(crate) const MAX_SECRETS: usize = 5;
/// Longest presented client secret; ours are 43 bytes of base64url.
pub(crate) const MAX_CLIENT_SECRET_BYTES: usize = 128;
/// Longest presented `client_id`; ours are 36-byte UUIDs.
pub(crate) const MAX_CLIENT_ID_BYTES: usize = 64;

/// A service account as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceAccountRecord {
    /// Stable id; its text is the `client_id`.
    pub id: ServiceAccountId,
    /// A name for operators.
    pub name: String,
    /// Roles its tokens carry.
    pub roles: Vec<String>,
    /// The audiences it may request tokens for (the first is the default).
    pub audiences: Vec<String>,
    /// The scopes it may request.
    pub scopes: Vec<String>,
    /// A disabled account gets no tokens, and those it had fail at once.
    pub disabled: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
    /// Raised by every change: engines replace a record only over the
    /// version it was read at, so two changes never silently undo each other.
    pub version: u64,
    /// Its client secrets, as hashes.
    pub secrets: Vec<ClientSecretRecord>,
    /// Its registered public key for `private_key_jwt`, if any.
    pub key: Option<ClientKeyRecord>,
}

impl ServiceAccountRecord {
    /// The OAuth `client_id`.
    pub fn client_id(&self) -> String {
        self.id.to_string()
    }
}

/// One client secret of an account: only its hash is ever stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretRecord {
    /// Its id, for listing and revoking it.
    pub id: ClientSecretId,
    /// SHA-256 of the secret.
    pub hash: ClientSecretHash,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it last authenticated a client (advisory: written at most once
    /// a minute, see `client_auth`).
    pub last_used_at: Option<Timestamp>,
}

impl ClientSecretRecord {
    /// Whether it may authenticate at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// SHA-256 of a client secret.
///
/// A fast, unsalted hash is enough here, unlike for passwords: a client
/// secret is 256 bits from the system CSPRNG, so a stolen hash cannot be
/// reversed by guessing (2^256 tries) and there is no dictionary to
/// precompute. Passwords are chosen by people, with little entropy, which
/// is why they need argon2's deliberate cost; that cost on every
/// client-credentials grant would buy nothing but a slower token endpoint.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretHash(pub [u8; 32]);

impl std::fmt::Debug for ClientSecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecretHash(..)")
    }
}

impl ClientSecretHash {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Whether `self` equals `other`, in time independent of where they differ.
    pub fn matches(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

/// A freshly generated client secret: the value for the caller (shown once),
/// the record for the store.
#[derive(Debug)]
pub struct NewClientSecret {
    /// The secret, handed to the caller once.
    pub secret: Secret<String>,
    /// Its record.
    pub record: ClientSecretRecord,
}

impl NewClientSecret {
    /// 256 random bits, base64url without padding (43 characters).
    pub fn generate(now: Timestamp, expires_at: Option<Timestamp>) -> Result<Self, DomainError> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        let secret = Secret::new(base64_url(&bytes));
        let hash = ClientSecretHash::of(secret.expose());
        let record = ClientSecretRecord {
            id: ClientSecretId::generate(),
            hash,
            created_at: now,
            expires_at,
            last_used_at: None,
        };
        Ok(Self { secret, record })
    }
}

/// What `CreateServiceAccount` asks for.
#[derive(Debug, Default, Clone)]
pub struct NewServiceAccount {
    /// The name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Allowed audiences (at least one).
    pub audiences: Vec<String>,
    /// Allowed scopes.
    pub scopes: Vec<String>,
}

/// The changes `UpdateServiceAccount` may make; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct ServiceAccountChanges {
    /// Replace the roles.
    pub roles: Option<Vec<String>>,
    /// Replace the allowed audiences.
    pub audiences: Option<Vec<String>>,
    /// Replace the allowed scopes.
    pub scopes: Option<Vec<String>>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

/// A name operators read: non-empty, bounded, no control characters.
pub(crate) fn check_name(name: &str) -> Result<String, DomainError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(DomainError::invalid(format!("name is longer than {MAX_NAME_BYTES} bytes")));
    }
    // Before trimming, which would hide a trailing newline.
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid("name contains control characters"));
    }
    let name = name.trim();
    if name.is_empty() {
        return Err(DomainError::invalid("name is empty"));
    }
    Ok(name.to_string())
}

/// Roles as for users, sorted and deduplicated.
pub(crate) fn check_roles(roles: Vec<String>) -> Result<Vec<String>, DomainError> {
    check_list("roles", roles, |role| check_role(role))
}

/// Audiences: at least one, each printable ASCII without spaces (they are
/// compared byte for byte with `aud` and the requested audience).
pub(crate) fn check_audiences(audiences: Vec<String>) -> Result<Vec<String>, DomainError> {
    if audiences.is_empty() {
        return Err(DomainError::invalid("audiences: at least one audience is required"));
    }
    // The first is the default a grant without an audience gets, so the
    // order is kept (duplicates dropped).
    if audiences.len() > MAX_LIST_ITEMS {
        return Err(DomainError::invalid(format!("audiences: at most {MAX_LIST_ITEMS}")));
    }
    let mut kept: Vec<String> = Vec::with_capacity(audiences.len());
    for audience in audiences {
        check_token_text("audience", &audience, MAX_AUDIENCE_BYTES)?;
        if !kept.contains(&audience) {
            kept.push(audience);
        }
    }
    Ok(kept)
}

/// Scopes: RFC 6749 §3.3 scope tokens.
pub(crate) fn check_scopes(scopes: Vec<String>) -> Result<Vec<String>, DomainError> {
    check_list("scopes", scopes, |scope| check_token_text("scope", scope, MAX_SCOPE_BYTES))
}

fn check_list(
    field: &str,
    mut items: Vec<String>,
    check: impl Fn(&str) -> Result<(), DomainError>,
) -> Result<Vec<String>, DomainError> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(DomainError::invalid(format!("{field}: at most {MAX_LIST_ITEMS}")));
    }
    for item in &items {
        check(item)?;
    }
    items.sort();
    items.dedup();
    Ok(items)
}

/// 1 to `max` bytes of printable ASCII without spaces, quotes or
/// backslashes (RFC 6749's `scope-token` set).
fn check_token_text(what: &str, value: &str, max: usize) -> Result<(), DomainError> {
    let printable = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
    if value.is_empty() || value.len() > max || !value.chars().all(printable) {
        return Err(DomainError::invalid(format!(
            "{what} must be 1 to {max} printable ASCII characters without spaces, quotes or backslashes"
        )));
    }
    Ok(())
}

/// The scopes a grant asks for (`scope`, space-separated, RFC 6749 §3.3),
/// which must all be allowed; none asked for means every allowed scope.
pub(crate) fn granted_scopes(allowed: &[String], requested: Option<&str>) -> Result<Vec<String>, DomainError> {
    let Some(requested) = requested.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(allowed.to_vec());
    };
    if requested.len() > MAX_LIST_ITEMS * (MAX_SCOPE_BYTES + 1) {
        return Err(DomainError::invalid("scope is too long"));
    }
    let mut granted = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == scope) {
            return Err(DomainError::InvalidScope("a requested scope is not allowed for this client".into()));
        }
        if !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_string());
        }
    }
    granted.sort();
    Ok(granted)
}

/// The audience a grant asks for, which must be allowed; none asked for
/// means the account's first.
pub(crate) fn granted_audience(allowed: &[String], requested: Option<&str>) -> Result<String, DomainError> {
    match requested.filter(|a| !a.is_empty()) {
        None => allowed.first().cloned().ok_or_else(|| DomainError::InvalidScope("the client has no audience".into())),
        Some(wanted) if allowed.iter().any(|a| a == wanted) => Ok(wanted.to_string()),
        Some(_) => Err(DomainError::InvalidScope("the requested audience is not allowed for this client".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bits_shown_once_and_stored_as_a_hash() {
        let a = NewClientSecret::generate(Timestamp::now(), None).expect("random");
        let b = NewClientSecret::generate(Timestamp::now(), None).expect("random");
        assert_eq!(a.secret.expose().len(), 43);
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert!(ClientSecretHash::of(a.secret.expose()).matches(&a.record.hash));
        assert!(!ClientSecretHash::of(b.secret.expose()).matches(&a.record.hash));
        let shown = format!("{a:?}");
        assert!(!shown.contains(a.secret.expose()), "{shown}");
    }

    #[test]
    fn scopes_must_be_a_subset_and_audiences_allowed() {
        let allowed = vec!["read".to_string(), "write".to_string()];
        assert_eq!(granted_scopes(&allowed, None).ok(), Some(allowed.clone()));
        assert_eq!(granted_scopes(&allowed, Some("write read write")).ok(), Some(allowed.clone()));
        assert!(matches!(granted_scopes(&allowed, Some("read admin")), Err(DomainError::InvalidScope(_))));
        let audiences = vec!["orders".to_string(), "billing".to_string()];
        assert_eq!(granted_audience(&audiences, None).ok().as_deref(), Some("orders"));
        assert_eq!(granted_audience(&audiences, Some("billing")).ok().as_deref(), Some("billing"));
        assert!(matches!(granted_audience(&audiences, Some("sigil")), Err(DomainError::InvalidScope(_))));
    }

    #[test]
    fn lists_are_bounded_and_checked() {
        assert!(check_audiences(vec![]).is_err());
        assert!(check_audiences(vec!["a b".into()]).is_err());
        assert!(check_scopes(vec!["x".into(); MAX_LIST_ITEMS + 1]).is_err());
        assert_eq!(check_scopes(vec!["b".into(), "a".into(), "b".into()]).ok(), Some(vec!["a".into(), "b".into()]));
        assert!(check_name("").is_err());
        assert!(check_name("billing\n").is_err());
    }
}
