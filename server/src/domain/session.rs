//! Sessions, the tokens issued under them, and refresh tokens.
//!
//! A session is one login. It owns a family of refresh tokens, of which only
//! the newest (`current_refresh`) is usable, and every access token issued
//! under it. Refresh tokens are 256 random bits; only their SHA-256 hash is
//! stored, so a copy of the store cannot be replayed.

use serde::{Deserialize, Serialize};

use super::{
    DomainError, Secret, SessionId, Timestamp, TokenId, UserId,
    password::{base64_url, fill_random},
};

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Usable: refreshable, and its access tokens validate.
    Active,
    /// Ended by a revocation (explicit, user-wide, or theft detection).
    Revoked,
    /// Ended by reaching its absolute expiry.
    Expired,
}

/// A session as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (the `sid` claim).
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Owner's username at login, for listings.
    pub username: String,
    /// Audiences put in the `aud` claim of the session's access tokens.
    pub audience: Vec<String>,
    /// Login time.
    pub created_at: Timestamp,
    /// Last login or refresh.
    pub last_seen_at: Timestamp,
    /// Absolute expiry; no token of the session outlives it.
    pub expires_at: Timestamp,
    /// Peer address of the `Authenticate` call.
    pub client_address: String,
    /// `user-agent` metadata of the `Authenticate` call.
    pub user_agent: String,
    /// Device name given at login.
    pub device_name: String,
    /// Current state.
    pub state: SessionState,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked, if it was.
    pub revoke_reason: Option<String>,
    /// The only refresh token of the family that may still be used.
    pub current_refresh: TokenId,
}

impl SessionRecord {
    /// Whether the session is usable at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.state == SessionState::Active && now < self.expires_at
    }

    /// The state a reader should see at `now`: an active session past its
    /// expiry is expired even before the sweeper has marked it.
    pub fn state_at(&self, now: Timestamp) -> SessionState {
        match self.state {
            SessionState::Active if now >= self.expires_at => SessionState::Expired,
            state => state,
        }
    }

    /// Ends the session at `at` (revoked or expired); every engine records
    /// an ending the same way.
    pub fn end(&mut self, state: SessionState, at: Timestamp) {
        self.state = state;
        if state == SessionState::Revoked {
            self.revoked_at = Some(at);
        }
    }
}

/// Access or refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A signed JWT.
    Access,
    /// An opaque refresh token.
    Refresh,
}

/// Where a token is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Usable until it expires.
    Active,
    /// Revoked (itself, or with its session).
    Revoked,
    /// Past its expiry.
    Expired,
    /// A refresh token that was exchanged for a newer one.
    Rotated,
}

/// An issued token as recorded: never the token string itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Token id (the `jti` of an access token).
    pub id: TokenId,
    /// Access or refresh.
    pub kind: TokenKind,
    /// The session it was issued under.
    pub session_id: SessionId,
    /// The session's user.
    pub user_id: UserId,
    /// The user's name, for listings.
    pub username: String,
    /// Issue time.
    pub issued_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Current state.
    pub state: TokenState,
    /// When it was revoked or rotated, if it was.
    pub revoked_at: Option<Timestamp>,
    /// For refresh tokens, the hash they are looked up by, so that purging
    /// the record also purges the look-up entry. A hash, never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_hash: Option<RefreshTokenHash>,
}

impl TokenRecord {
    /// The state a reader should see at `now`: an active token past its
    /// expiry is expired even before the sweeper has marked it.
    pub fn state_at(&self, now: Timestamp) -> TokenState {
        match self.state {
            TokenState::Active if now >= self.expires_at => TokenState::Expired,
            state => state,
        }
    }

    /// Ends the token at `at` (revoked, expired or rotated).
    pub fn end(&mut self, state: TokenState, at: Timestamp) {
        self.state = state;
        if state != TokenState::Expired {
            self.revoked_at = Some(at);
        }
    }
}

/// The stored pointer from a refresh token's hash to its token and session.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// The refresh token's id.
    pub token_id: TokenId,
    /// The session that owns it.
    pub session_id: SessionId,
}

/// SHA-256 of a refresh token: the only form in which one is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefreshTokenHash(pub [u8; 32]);

impl std::fmt::Debug for RefreshTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshTokenHash(..)")
    }
}

impl RefreshTokenHash {
    /// Hashes a presented refresh token.
    pub fn of(token: &Secret<String>) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.expose().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

/// A freshly generated refresh token: the secret for the caller, the hash for the store.
pub struct NewRefreshToken {
    /// The token string, handed to the caller once.
    pub token: Secret<String>,
    /// Its hash.
    pub hash: RefreshTokenHash,
}

impl NewRefreshToken {
    /// 256 random bits, base64url without padding (43 characters).
    pub fn generate() -> Result<Self, DomainError> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        let token = Secret::new(base64_url(&bytes));
        let hash = RefreshTokenHash::of(&token);
        Ok(Self { token, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_long_random_and_hashed() {
        let a = NewRefreshToken::generate().expect("random");
        let b = NewRefreshToken::generate().expect("random");
        assert_eq!(a.token.expose().len(), 43);
        assert_ne!(a.token.expose(), b.token.expose());
        assert_eq!(RefreshTokenHash::of(&a.token), a.hash);
        assert_ne!(a.hash, b.hash);
    }
}

/// Session and token records for the tests of the rules that read them
/// (unit tests here, and the engines' conformance suite).
#[cfg(any(test, feature = "testing"))]
pub(crate) mod fixtures {
    #[cfg(test)]
    use std::time::Duration;

    #[cfg(test)]
    use super::SessionState;
    use super::{SessionRecord, TokenKind, TokenRecord, TokenState};
    use crate::domain::TokenId;
    #[cfg(test)]
    use crate::domain::{SessionId, Timestamp, UserId};

    /// An active session of a new user "alice", created at `now`, that
    /// lives an hour.
    #[cfg(test)]
    pub(crate) fn session(now: Timestamp) -> SessionRecord {
        SessionRecord {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            username: "alice".into(),
            audience: vec!["sigil".into()],
            created_at: now,
            last_seen_at: now,
            expires_at: now.plus(Duration::from_secs(3600)),
            client_address: "127.0.0.1:1".into(),
            user_agent: "test".into(),
            device_name: "laptop".into(),
            state: SessionState::Active,
            revoked_at: None,
            revoke_reason: None,
            current_refresh: TokenId::generate(),
        }
    }

    /// An active token `id` of `session`, issued at its creation and
    /// living as long as it.
    pub(crate) fn token(session: &SessionRecord, id: TokenId, kind: TokenKind) -> TokenRecord {
        TokenRecord {
            id,
            kind,
            session_id: session.id,
            user_id: session.user_id,
            username: session.username.clone(),
            issued_at: session.created_at,
            expires_at: session.expires_at,
            state: TokenState::Active,
            revoked_at: None,
            refresh_hash: None,
        }
    }
}
