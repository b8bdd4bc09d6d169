//! Client authentication and the client-credentials grant: the one domain
//! path by which a service account proves who it is (a client secret or a
//! `private_key_jwt` assertion) and obtains an access token, used by gRPC
//! `IssueServiceToken` and by the HTTP token endpoint alike.
//!
//! Every way of failing that says something about the client (unknown
//! id, wrong or expired secret, bad or replayed assertion, disabled
//! account) is the same [`DomainError::InvalidClient`]. A presented secret
//! is hashed and compared, in constant time, with every stored hash, and
//! with a stand-in for an unknown id, so that the answer takes about the
//! same time either way.
//!
//! Failures count against the client id like failed logins
//! (`domain::lockout`), unknown ids included. Unlike logins, an attempt is
//! not admitted ahead of its evaluation, and a lock refuses only wrong
//! credentials: a 256-bit secret (or a private key) cannot be guessed, so
//! the counter is there to turn away a misconfigured or hostile caller
//! hammering the endpoint, not to cap guesses. Were the right credential
//! refused too, anyone who knows a client id (it is in every token the
//! client holds) could keep the client out. A lock changes the answer, not
//! the work: a locked attempt is evaluated like any other, and is not
//! counted. A grant that succeeds writes no counter (a login writes two),
//! and one during a lock leaves the lock to run out.

use std::time::Duration;

use super::{
    ClientSecretId, DomainError, Identity, Secret, ServiceAccountId, Timestamp, TokenId,
    client_assertion::{self, AssertionRules},
    event::{EventKind, EventRecord},
    limits::MAX_ACCESS_TOKEN_BYTES,
    service_account::{
        ClientSecretHash, MAX_CLIENT_ID_BYTES, MAX_CLIENT_SECRET_BYTES, ServiceAccountRecord, granted_audience,
        granted_scopes,
    },
    token::{self, AccessClaims},
};

/// How stale a secret's recorded last use may get before a use rewrites
/// it: at most one (advisory) write per secret per minute, however busy.
const LAST_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// How a client proves who it is.
#[derive(Debug)]
pub enum ClientCredential {
    /// A client secret (`client_secret_basic`, `client_secret_post`, gRPC).
    Secret(Secret<String>),
    /// An RFC 7523 assertion (`private_key_jwt`).
    Assertion {
        /// The signed JWT.
        assertion: Secret<String>,
        /// The token endpoint URL the assertion may name as its `aud`
        /// besides the issuer (the HTTP adapter's; `None` over gRPC).
        token_endpoint: Option<String>,
    },
}

/// A client-credentials grant.
#[derive(Debug)]
pub struct ServiceTokenRequest {
    /// The `client_id`; may be absent with an assertion (its `sub` names the client).
    pub client_id: Option<String>,
    /// The proof.
    pub credential: ClientCredential,
    /// The audience wanted; the account's first allowed audience when `None`.
    pub audience: Option<String>,
    /// The scopes wanted, space-separated; every allowed scope when `None`.
    pub scope: Option<String>,
}

/// An access token issued to a service account.
#[derive(Debug)]
pub struct IssuedServiceToken {
    /// The signed access token.
    pub access_token: Secret<String>,
    /// Its expiry.
    pub expires_at: Timestamp,
    /// Its `jti`.
    pub token_id: TokenId,
    /// The account.
    pub client_id: ServiceAccountId,
    /// Its audience.
    pub audience: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// The stand-in a secret presented for an unknown client is compared
/// with, so that the comparison is made either way.
const UNKNOWN_CLIENT_HASH: ClientSecretHash = ClientSecretHash([0; 32]);

impl Identity {
    /// The client-credentials grant: authenticates the client and issues
    /// it an access token for the audience and scopes asked for (which it
    /// must be allowed).
    pub async fn issue_service_token(&self, request: ServiceTokenRequest) -> Result<IssuedServiceToken, DomainError> {
        // Taken before the account is read, as for logins: a change that
        // commits after the read is then bound to cover this token (see
        // `service_account_admin`).
        let token_id = TokenId::generate();
        let account = self.authenticate_client(request.client_id.as_deref(), &request.credential).await?;
        self.mint_service_token(&account, token_id, request.audience.as_deref(), request.scope.as_deref())
    }

    /// Authenticates a client and returns its account as read; see the
    /// module docs for what every failure looks like.
    pub async fn authenticate_client(
        &self,
        client_id: Option<&str>,
        credential: &ClientCredential,
    ) -> Result<ServiceAccountRecord, DomainError> {
        let claimed = claimed_client_id(client_id, credential)?;
        let key = client_throttle_key(&claimed);
        let now = Timestamp::now();
        let counter = self.store.login_failures(&key).await?;
        let locked_for = counter.as_ref().and_then(|c| c.locked_for(now));
        let account = match account_id(&claimed) {
            Some(id) => self.store.service_account(id).await?,
            None => None,
        };
        let proven = match credential {
            ClientCredential::Secret(secret) => check_secret(account.as_ref(), secret, now)?.map(Some),
            ClientCredential::Assertion { assertion, token_endpoint } => {
                self.check_assertion(account.as_ref(), &claimed, assertion, token_endpoint.as_deref(), now).await?
            }
        };
        match (account, proven) {
            (Some(account), Some(used)) if !account.disabled => {
                // A success during a lock leaves it to run out: clearing it
                // would hand a hammering stranger `threshold` more counted
                // writes per success, and an early unlock would tell them
                // that the id is real and its client just authenticated.
                if locked_for.is_none() && counter.is_some_and(|c| !c.failures.is_empty()) {
                    self.store.clear_login_failures(&key).await?;
                }
                if let Some(secret) = used {
                    self.note_secret_use(&account, secret, now).await;
                }
                Ok(account)
            }
            (account, _) if locked_for.is_some() => {
                self.rates.login_failures.record();
                self.publish_client_failure(&claimed, account.map(|a| a.id), "client locked").await;
                Err(DomainError::ResourceExhausted {
                    message: "too many failed authentications for this client; retry later".into(),
                    retry_after: locked_for,
                })
            }
            (account, _) => {
                self.rates.login_failures.record();
                let (_, locked) = self.store.record_login_failure(&key, now, &self.settings.lockout).await?;
                let why = if locked {
                    "invalid client credentials; the client is now locked"
                } else {
                    "invalid client credentials"
                };
                self.publish_client_failure(&claimed, account.map(|a| a.id), why).await;
                Err(DomainError::InvalidClient)
            }
        }
    }

    /// Signs an access token `token_id` for `account`, which was just
    /// authenticated: `sub` and `client_id` are its client id, no `sid`.
    pub fn mint_service_token(
        &self,
        account: &ServiceAccountRecord,
        token_id: TokenId,
        audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<IssuedServiceToken, DomainError> {
        let audience = granted_audience(&account.audiences, audience)?;
        let scopes = granted_scopes(&account.scopes, scope)?;
        let now = Timestamp::now();
        let expires_at = now.plus(self.settings.access_token_ttl);
        let client_id = account.client_id();
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: client_id.clone(),
            aud: vec![audience.clone()],
            exp: expires_at.as_unix_seconds(),
            nbf: now.as_unix_seconds(),
            iat: now.as_unix_seconds(),
            jti: token_id.to_string(),
            sid: String::new(),
            username: String::new(),
            roles: account.roles.clone(),
            client_id: Some(client_id),
            scope: Some(scopes.join(" ")),
        };
        let signed = token::sign(&claims, &self.keys.load())?;
        Ok(IssuedServiceToken {
            access_token: Secret::new(signed),
            expires_at,
            token_id,
            client_id: account.id,
            audience,
            scopes,
        })
    }

    /// Verifies an assertion and spends its `jti`; `Some(None)` when it
    /// proves the client (no secret was used).
    async fn check_assertion(
        &self,
        account: Option<&ServiceAccountRecord>,
        claimed: &str,
        assertion: &Secret<String>,
        token_endpoint: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Option<ClientSecretId>>, DomainError> {
        if assertion.expose().len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(DomainError::invalid(format!(
                "client_assertion is longer than {MAX_ACCESS_TOKEN_BYTES} bytes"
            )));
        }
        let Some((account, key)) = account.and_then(|a| a.key.as_ref().map(|k| (a, k))) else {
            return Ok(None);
        };
        let issuer = self.settings.issuer.as_str();
        let audiences: Vec<&str> = std::iter::once(issuer).chain(token_endpoint).collect();
        let rules = AssertionRules {
            audiences: &audiences,
            max_lifetime: self.settings.client_assertion_max_lifetime,
            leeway: self.settings.leeway,
        };
        let verified = match client_assertion::verify(assertion.expose(), claimed, key, &rules, now) {
            Ok(verified) => verified,
            Err(refusal) => {
                tracing::debug!(client_id = %account.id, ?refusal, "client assertion refused");
                return Ok(None);
            }
        };
        // Only a verified assertion is remembered: a stranger's made-up
        // ones never reach the store.
        if !self.store.use_assertion_id(account.id, &verified.jti, verified.expires_at).await? {
            tracing::warn!(client_id = %account.id, "a client assertion was replayed");
            return Ok(None);
        }
        Ok(Some(None))
    }

    /// Records a secret's use, if its recorded last use is older than
    /// [`LAST_USE_RESOLUTION`]. Advisory: a failure is logged, not returned.
    async fn note_secret_use(&self, account: &ServiceAccountRecord, secret: ClientSecretId, now: Timestamp) {
        let stale = account
            .secrets
            .iter()
            .find(|s| s.id == secret)
            .is_some_and(|s| s.last_used_at.is_none_or(|at| now.minus(LAST_USE_RESOLUTION) >= at));
        if stale && let Err(e) = self.store.note_secret_used(secret, now).await {
            tracing::warn!(error = %e, "the last use of a client secret could not be recorded");
        }
    }

    async fn publish_client_failure(&self, claimed: &str, account: Option<ServiceAccountId>, why: &str) {
        // A made-up client id is a stranger's text: it is not repeated.
        let mut event = EventRecord::new(EventKind::ClientAuthFailed);
        event = match account {
            Some(id) => event.client(id).detail(why),
            None => event.detail(format!("{why} (unknown client id of {} bytes)", claimed.len())),
        };
        self.events.publish(vec![event]).await;
    }
}

/// The client id a request names: its `client_id`, or with an assertion
/// and none given, the assertion's `sub`.
fn claimed_client_id(client_id: Option<&str>, credential: &ClientCredential) -> Result<String, DomainError> {
    let claimed = match (client_id.filter(|c| !c.is_empty()), credential) {
        (Some(id), _) => id.to_string(),
        (None, ClientCredential::Assertion { assertion, .. }) => {
            client_assertion::claimed_client(assertion.expose()).ok_or(DomainError::InvalidClient)?
        }
        (None, ClientCredential::Secret(_)) => return Err(DomainError::invalid("client_id is empty")),
    };
    if claimed.len() > MAX_CLIENT_ID_BYTES {
        return Err(DomainError::invalid(format!("client_id is longer than {MAX_CLIENT_ID_BYTES} bytes")));
    }
    if claimed.chars().any(char::is_control) {
        return Err(DomainError::invalid("client_id contains control characters"));
    }
    Ok(claimed)
}

/// The account a client id names: only the id's own text, the lower-case
/// hyphenated UUID Sigil hands out. A client id is a string compared as it
/// is (RFC 6749 §2.2, and RFC 7523 §3 for an assertion's `iss` and `sub`);
/// `Uuid::try_parse` would also read upper case, braces, a URN or no
/// hyphens as the same id, and each spelling would then count its own
/// failures against the one account, dodging its lock.
fn account_id(client_id: &str) -> Option<ServiceAccountId> {
    client_id.parse::<ServiceAccountId>().ok().filter(|id| id.to_string() == client_id)
}

/// Compares a presented secret with every secret of the account (or the
/// stand-in), without stopping at a match; the live secret that matched,
/// if one did.
fn check_secret(
    account: Option<&ServiceAccountRecord>,
    secret: &Secret<String>,
    now: Timestamp,
) -> Result<Option<ClientSecretId>, DomainError> {
    let presented = secret.expose();
    if presented.is_empty() {
        return Err(DomainError::invalid("client_secret is empty"));
    }
    if presented.len() > MAX_CLIENT_SECRET_BYTES {
        return Err(DomainError::invalid(format!("client_secret is longer than {MAX_CLIENT_SECRET_BYTES} bytes")));
    }
    let hash = ClientSecretHash::of(presented);
    let secrets = account.map(|a| a.secrets.as_slice()).unwrap_or_default();
    if secrets.is_empty() {
        let _ = hash.matches(&UNKNOWN_CLIENT_HASH);
        return Ok(None);
    }
    let mut matched = None;
    for stored in secrets {
        if hash.matches(&stored.hash) && stored.is_live(now) {
            matched = Some(stored.id);
        }
    }
    Ok(matched)
}

/// The failure counter of a client id. NUL cannot occur in a username, so
/// this never collides with an account's or an address's key.
fn client_throttle_key(client_id: &str) -> String {
    format!("\u{0}client\u{0}{client_id}")
}
