//! The in-memory revocation index consulted by every `Validate`.
//!
//! A revoked access token only matters until its `exp`, so an entry is kept
//! only while a token issued before the revocation could still be live:
//! `revoked_at + access-token TTL + leeway`. Memory grows with recent
//! revocations, not with the number of sessions, and `Validate` never
//! touches the store. The index is rebuilt from the store's revocation log
//! at start.

use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::{SessionId, Timestamp, TokenId, UserId, token::ValidationFailure, token::VerifiedToken};

/// What a revocation log entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RevocationTarget {
    /// One access token, by `jti`.
    Token(TokenId),
    /// A session and every token issued under it.
    Session(SessionId),
    /// A user was disabled: all its tokens fail.
    UserDisabled(UserId),
    /// A user was enabled again (its old sessions stay revoked).
    UserEnabled(UserId),
    /// Every access token of the user minted before the entry's `at` fails:
    /// its roles changed, so tokens carrying the old ones must not speak
    /// for it any more. Its sessions live on and mint tokens with the new
    /// roles at their next refresh.
    UserNotBefore(UserId),
}

/// One durable revocation, in the order the store committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Position in the store's revocation log (increasing).
    pub sequence: u64,
    /// What was revoked.
    pub target: RevocationTarget,
    /// When.
    pub at: Timestamp,
}

/// Recent revocations, each kept until the tokens it could affect expire.
pub struct RevocationIndex {
    tokens: DashMap<TokenId, Timestamp>,
    sessions: DashMap<SessionId, Timestamp>,
    disabled_users: DashMap<UserId, Timestamp>,
    /// Per user: tokens minted before the first time fail; kept until the second.
    not_before: DashMap<UserId, (Timestamp, Timestamp)>,
    retention: Duration,
}

impl RevocationIndex {
    /// An empty index keeping entries for `retention` (the access-token TTL
    /// plus the clock leeway).
    pub fn new(retention: Duration) -> Self {
        Self {
            tokens: DashMap::new(),
            sessions: DashMap::new(),
            disabled_users: DashMap::new(),
            not_before: DashMap::new(),
            retention,
        }
    }

    /// How far back the store's log must be replayed to rebuild the index.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Applies one committed revocation.
    pub fn apply(&self, entry: &RevocationEntry) {
        let keep_until = entry.at.plus(self.retention);
        match entry.target {
            RevocationTarget::Token(id) => {
                self.tokens.insert(id, keep_until);
            }
            RevocationTarget::Session(id) => {
                self.sessions.insert(id, keep_until);
            }
            RevocationTarget::UserDisabled(id) => {
                self.disabled_users.insert(id, keep_until);
            }
            RevocationTarget::UserEnabled(id) => {
                self.disabled_users.remove(&id);
            }
            RevocationTarget::UserNotBefore(id) => {
                let mut bound = self.not_before.entry(id).or_insert((entry.at, keep_until));
                // Entries may be replayed out of order: the latest bound wins.
                bound.0 = bound.0.max(entry.at);
                bound.1 = bound.1.max(keep_until);
            }
        }
    }

    /// Why `token` must be refused, if a revocation applies to it.
    pub fn check(&self, token: &VerifiedToken) -> Option<ValidationFailure> {
        if self.disabled_users.contains_key(&token.user_id) {
            return Some(ValidationFailure::UserDisabled);
        }
        if self.sessions.contains_key(&token.session_id) {
            return Some(ValidationFailure::SessionRevoked);
        }
        if self.tokens.contains_key(&token.token_id) {
            return Some(ValidationFailure::TokenRevoked);
        }
        if let Some(bound) = self.not_before.get(&token.user_id)
            && token.minted_at().is_none_or(|minted| minted < bound.0)
        {
            return Some(ValidationFailure::TokenRevoked);
        }
        None
    }

    /// Drops entries no live token can be affected by any more.
    pub fn purge(&self, now: Timestamp) -> usize {
        let before = self.len();
        self.tokens.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
        self.disabled_users.retain(|_, until| *until > now);
        self.not_before.retain(|_, (_, until)| *until > now);
        before - self.len()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.disabled_users.len() + self.not_before.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::AccessClaims;

    fn token(user_id: UserId, session_id: SessionId, token_id: TokenId) -> VerifiedToken {
        let claims = AccessClaims {
            iss: "t".into(),
            sub: user_id.to_string(),
            aud: vec![],
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: token_id.to_string(),
            sid: session_id.to_string(),
            username: "u".into(),
            roles: vec![],
        };
        VerifiedToken { claims, user_id, session_id, token_id, kid: "k".into(), ring_generation: 0 }
    }

    #[test]
    fn each_target_refuses_the_matching_tokens_only() {
        let index = RevocationIndex::new(Duration::from_secs(900));
        let (user, session, tok) = (UserId::generate(), SessionId::generate(), TokenId::generate());
        let victim = token(user, session, tok);
        let bystander = token(UserId::generate(), SessionId::generate(), TokenId::generate());
        assert_eq!(index.check(&victim), None);

        let at = Timestamp::now();
        index.apply(&RevocationEntry { sequence: 1, target: RevocationTarget::Token(tok), at });
        assert_eq!(index.check(&victim), Some(ValidationFailure::TokenRevoked));
        index.apply(&RevocationEntry { sequence: 2, target: RevocationTarget::Session(session), at });
        assert_eq!(index.check(&victim), Some(ValidationFailure::SessionRevoked));
        index.apply(&RevocationEntry { sequence: 3, target: RevocationTarget::UserDisabled(user), at });
        assert_eq!(index.check(&victim), Some(ValidationFailure::UserDisabled));
        index.apply(&RevocationEntry { sequence: 4, target: RevocationTarget::UserEnabled(user), at });
        assert_eq!(index.check(&victim), Some(ValidationFailure::SessionRevoked));
        assert_eq!(index.check(&bystander), None);
    }

    #[test]
    fn a_not_before_refuses_the_users_older_tokens_only() {
        let index = RevocationIndex::new(Duration::from_secs(900));
        let user = UserId::generate();
        let older = token(user, SessionId::generate(), TokenId::generate());
        std::thread::sleep(Duration::from_millis(3));
        let at = Timestamp::now();
        std::thread::sleep(Duration::from_millis(3));
        let newer = token(user, SessionId::generate(), TokenId::generate());
        let someone_else = token(UserId::generate(), SessionId::generate(), TokenId::generate());
        index.apply(&RevocationEntry { sequence: 1, target: RevocationTarget::UserNotBefore(user), at });
        assert_eq!(index.check(&older), Some(ValidationFailure::TokenRevoked));
        assert_eq!(index.check(&newer), None);
        assert_eq!(index.check(&someone_else), None);
        // An older bound replayed later does not lower it.
        index.apply(&RevocationEntry {
            sequence: 0,
            target: RevocationTarget::UserNotBefore(user),
            at: at.minus(Duration::from_secs(60)),
        });
        assert_eq!(index.check(&older), Some(ValidationFailure::TokenRevoked));
    }

    #[test]
    fn entries_are_purged_once_no_affected_token_can_be_live() {
        let index = RevocationIndex::new(Duration::from_secs(60));
        let at = Timestamp::now();
        index.apply(&RevocationEntry { sequence: 1, target: RevocationTarget::Token(TokenId::generate()), at });
        assert_eq!(index.purge(at.plus(Duration::from_secs(59))), 0);
        assert_eq!(index.purge(at.plus(Duration::from_secs(61))), 1);
        assert!(index.is_empty());
    }
}
