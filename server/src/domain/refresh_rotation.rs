//! The refresh rules, decided once for every engine: which token record
//! carries a refresh token's hash, and whether a presented refresh token
//! rotates, was reused, or belongs to a session that has ended.
//!
//! The engines read the session and the presented token inside their
//! transaction (locked), ask [`decide`], and write what it returns in that
//! same transaction; so two presentations of one token still rotate at most
//! once.

use super::{
    TokenId,
    port::{RotateOutcome, Rotation},
    session::{RefreshTokenHash, SessionRecord, TokenRecord, TokenState},
};

/// The token records as stored: the one that is (or becomes) the session's
/// current refresh token carries `hash`, by which it is found when
/// presented and purged with its record; no other record carries one.
pub(crate) fn carrying_hash(tokens: &[TokenRecord], current: TokenId, hash: RefreshTokenHash) -> Vec<TokenRecord> {
    tokens
        .iter()
        .map(|token| {
            let mut token = token.clone();
            token.refresh_hash = (token.id == current).then_some(hash);
            token
        })
        .collect()
}

/// What a refresh writes when it rotates.
#[derive(Debug, Clone)]
pub(crate) struct RotationWrites {
    /// The presented token, ended as rotated at the rotation's time.
    pub rotated: TokenRecord,
    /// The new refresh token (carrying its hash) and the access token.
    pub issued: Vec<TokenRecord>,
    /// The session, its current refresh token and last-seen time moved.
    pub session: SessionRecord,
}

impl RotationWrites {
    /// What the store answers once these writes are committed.
    pub(crate) fn outcome(self) -> RotateOutcome {
        RotateOutcome::Rotated(Box::new(self.session))
    }
}

/// The decision on a presented refresh token.
#[derive(Debug, Clone)]
pub(crate) enum RotationDecision {
    /// Rotate: write these, in the transaction that read the records.
    Rotate(Box<RotationWrites>),
    /// Write nothing and answer this ([`RotateOutcome::Reused`] or
    /// [`RotateOutcome::Ended`]).
    Refuse(RotateOutcome),
}

/// Decides `rotation` from the session and the presented token as the
/// engine read them (`None`: not stored).
///
/// A session that is unknown, not active or past its expiry has ended,
/// whichever token is presented. A live session whose current refresh
/// token is not the presented one was refreshed before with it: reuse
/// (the caller revokes the session). The current token, if no longer
/// active (revoked on its own), has ended too.
pub(crate) fn decide(
    rotation: &Rotation,
    session: Option<SessionRecord>,
    presented: Option<TokenRecord>,
) -> RotationDecision {
    let Some(mut session) = session.filter(|s| s.is_live(rotation.now)) else {
        return RotationDecision::Refuse(RotateOutcome::Ended);
    };
    if session.current_refresh != rotation.presented {
        return RotationDecision::Refuse(RotateOutcome::Reused);
    }
    let Some(mut rotated) = presented.filter(|t| t.id == rotation.presented && t.state == TokenState::Active) else {
        return RotationDecision::Refuse(RotateOutcome::Ended);
    };
    rotated.end(TokenState::Rotated, rotation.now);
    let issued = carrying_hash(
        &[rotation.next_refresh.clone(), rotation.access.clone()],
        rotation.next_refresh.id,
        rotation.next_hash,
    );
    session.current_refresh = rotation.next_refresh.id;
    session.last_seen_at = rotation.now;
    RotationDecision::Rotate(Box::new(RotationWrites { rotated, issued, session }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{
        Timestamp,
        session::{
            SessionState, TokenKind,
            fixtures::{session, token},
        },
    };

    /// A session, its current refresh token, and a rotation of it at `now`.
    fn fixture() -> (SessionRecord, TokenRecord, Rotation) {
        let now = Timestamp::now();
        let s = session(now.minus(Duration::from_secs(60)));
        let current = token(&s, s.current_refresh, TokenKind::Refresh);
        let rotation = Rotation {
            session_id: s.id,
            presented: s.current_refresh,
            next_hash: RefreshTokenHash([9; 32]),
            next_refresh: token(&s, TokenId::generate(), TokenKind::Refresh),
            access: token(&s, TokenId::generate(), TokenKind::Access),
            now,
        };
        (s, current, rotation)
    }

    #[test]
    fn only_the_current_refresh_token_carries_the_hash() {
        let s = session(Timestamp::now());
        let tokens =
            [token(&s, TokenId::generate(), TokenKind::Access), token(&s, s.current_refresh, TokenKind::Refresh)];
        let stored = carrying_hash(&tokens, s.current_refresh, RefreshTokenHash([1; 32]));
        assert_eq!(stored[0].refresh_hash, None, "the access token");
        assert_eq!(stored[1].refresh_hash, Some(RefreshTokenHash([1; 32])), "the current refresh token");
        assert_eq!(stored.iter().map(|t| t.id).collect::<Vec<_>>(), tokens.iter().map(|t| t.id).collect::<Vec<_>>());
    }

    #[test]
    fn the_current_token_of_a_live_session_rotates() {
        let (s, current, rotation) = fixture();
        let RotationDecision::Rotate(writes) = decide(&rotation, Some(s.clone()), Some(current)) else {
            panic!("rotates");
        };
        assert_eq!((writes.rotated.id, writes.rotated.state), (s.current_refresh, TokenState::Rotated));
        assert_eq!(writes.rotated.revoked_at, Some(rotation.now));
        assert_eq!(writes.session.current_refresh, rotation.next_refresh.id);
        assert_eq!(writes.session.last_seen_at, rotation.now);
        let issued: Vec<_> = writes.issued.iter().map(|t| (t.id, t.refresh_hash)).collect();
        assert_eq!(issued, [(rotation.next_refresh.id, Some(rotation.next_hash)), (rotation.access.id, None)]);
        let RotateOutcome::Rotated(answered) = writes.outcome() else { panic!("rotated") };
        assert_eq!(answered.current_refresh, rotation.next_refresh.id);
    }

    #[test]
    fn an_older_token_of_a_live_session_is_reused() {
        let (mut s, current, rotation) = fixture();
        s.current_refresh = TokenId::generate();
        let decision = decide(&rotation, Some(s), Some(current));
        assert!(matches!(decision, RotationDecision::Refuse(RotateOutcome::Reused)), "{decision:?}");
    }

    #[test]
    fn an_unknown_ended_or_expired_session_has_ended() {
        let (s, current, rotation) = fixture();
        let ended = |d: RotationDecision| matches!(d, RotationDecision::Refuse(RotateOutcome::Ended));
        assert!(ended(decide(&rotation, None, Some(current.clone()))), "unknown");
        let mut revoked = s.clone();
        revoked.end(SessionState::Revoked, rotation.now);
        assert!(ended(decide(&rotation, Some(revoked.clone()), Some(current.clone()))), "revoked");
        revoked.current_refresh = TokenId::generate();
        assert!(ended(decide(&rotation, Some(revoked), Some(current.clone()))), "revoked, not reuse");
        let mut expiring = s;
        expiring.expires_at = rotation.now;
        assert!(ended(decide(&rotation, Some(expiring), Some(current))), "at its expiry");
    }

    #[test]
    fn a_current_token_no_longer_active_has_ended() {
        let (s, mut current, rotation) = fixture();
        let ended = |d: RotationDecision| matches!(d, RotationDecision::Refuse(RotateOutcome::Ended));
        assert!(ended(decide(&rotation, Some(s.clone()), None)), "not stored");
        current.end(TokenState::Revoked, rotation.now);
        assert!(ended(decide(&rotation, Some(s), Some(current))), "revoked");
    }
}
