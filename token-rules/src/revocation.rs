//! Which verdict wins when revocations cover a token. Each judge keeps its
//! own revocation index (the server's by typed ids, the verifier's compact
//! one) and reports what covers the token; the precedence is decided here,
//! once, so that both name the same failure.

use crate::ValidationFailure;

/// Which revocations cover one token, as a judge's index found them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationMatches {
    /// Its user is disabled.
    pub user_disabled: bool,
    /// Its session is revoked by id.
    pub session_revoked: bool,
    /// It is revoked by its own id (`jti`).
    pub token_revoked: bool,
    /// Its session was created before a bound on its user's sessions ("log
    /// out everywhere", disabling, deleting, a password reset).
    pub session_before_bound: bool,
    /// It was minted before a bound on its user's (or service account's)
    /// tokens (a role change, a revoked account).
    pub minted_before_bound: bool,
}

impl RevocationMatches {
    /// The verdict: a disabled user first (the most lasting reason), then
    /// the session, the token itself, the per-user session bound and the
    /// per-user token bound; `None` when nothing covers the token.
    pub fn verdict(self) -> Option<ValidationFailure> {
        if self.user_disabled {
            Some(ValidationFailure::UserDisabled)
        } else if self.session_revoked {
            Some(ValidationFailure::SessionRevoked)
        } else if self.token_revoked {
            Some(ValidationFailure::TokenRevoked)
        } else if self.session_before_bound {
            Some(ValidationFailure::SessionRevoked)
        } else if self.minted_before_bound {
            Some(ValidationFailure::TokenRevoked)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_lasting_reason_wins() {
        let all = RevocationMatches {
            user_disabled: true,
            session_revoked: true,
            token_revoked: true,
            session_before_bound: true,
            minted_before_bound: true,
        };
        assert_eq!(all.verdict(), Some(ValidationFailure::UserDisabled));
        let no_user = RevocationMatches { user_disabled: false, ..all };
        assert_eq!(no_user.verdict(), Some(ValidationFailure::SessionRevoked));
        let only_bounds =
            RevocationMatches { session_before_bound: true, minted_before_bound: true, ..Default::default() };
        assert_eq!(only_bounds.verdict(), Some(ValidationFailure::SessionRevoked));
        let token = RevocationMatches { token_revoked: true, minted_before_bound: true, ..Default::default() };
        assert_eq!(token.verdict(), Some(ValidationFailure::TokenRevoked));
        assert_eq!(RevocationMatches::default().verdict(), None);
    }
}
