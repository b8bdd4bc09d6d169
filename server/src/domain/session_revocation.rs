//! What a revocation ends, decided once for every engine, and the audit
//! events derived from what it ended.
//!
//! The engines read (and lock) the records inside their transaction, ask
//! [`revoke_session`] or [`revoke_token`] for the [`RevocationWrites`],
//! write them in that same transaction, and answer with
//! [`RevocationWrites::outcome`]. The domain turns the outcome into events
//! with [`revocation_events`].

use super::{
    UserId,
    event::{EventKind, EventRecord},
    port::{RevocationCause, RevokeOutcome},
    revocation::{RevocationEntry, RevocationTarget},
    session::{SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
};

/// What a revocation writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RevocationWrites {
    /// Sessions it ends, as they now stand (revoked at the cause's time,
    /// with its reason).
    pub ended_sessions: Vec<SessionRecord>,
    /// Tokens it ends, as they now stand (revoked at the cause's time).
    pub ended_tokens: Vec<TokenRecord>,
    /// Revocation-log entries to append, with the cause's time and bound.
    pub log: Vec<RevocationTarget>,
}

impl RevocationWrites {
    /// What the store answers once these writes are committed, `entries`
    /// being the log entries as appended.
    pub(crate) fn outcome(self, entries: Vec<RevocationEntry>) -> RevokeOutcome {
        RevokeOutcome {
            sessions: count(self.ended_sessions.len()),
            tokens: count(self.ended_tokens.len()),
            entries,
            ended_sessions: self.ended_sessions,
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Revoking `session`, whose stored tokens are `tokens`: an active session
/// ends (and is logged, so that `Validate` refuses its access tokens at
/// once); every token still active ends with it, whether or not the session
/// was still active (a token recorded by a rotation that raced an earlier
/// revocation). Tokens already ended keep their state and time.
pub(crate) fn revoke_session(
    session: &SessionRecord,
    tokens: impl IntoIterator<Item = TokenRecord>,
    cause: &RevocationCause,
) -> RevocationWrites {
    let mut writes = RevocationWrites::default();
    if session.state == SessionState::Active {
        let mut ended = session.clone();
        ended.revoke_reason = Some(cause.reason.clone());
        ended.end(SessionState::Revoked, cause.at);
        writes.log.push(RevocationTarget::Session(ended.id));
        writes.ended_sessions.push(ended);
    }
    writes.ended_tokens = tokens.into_iter().filter_map(|token| end_if_active(token, cause)).collect();
    writes
}

/// Revoking one token: an active token ends, its session stays. Only an
/// access token is logged: a refresh token is checked against its record
/// whenever it is used, an access token only against the in-memory index.
pub(crate) fn revoke_token(token: &TokenRecord, cause: &RevocationCause) -> RevocationWrites {
    let mut writes = RevocationWrites::default();
    if let Some(ended) = end_if_active(token.clone(), cause) {
        if ended.kind == TokenKind::Access {
            writes.log.push(RevocationTarget::Token(ended.id));
        }
        writes.ended_tokens.push(ended);
    }
    writes
}

fn end_if_active(mut token: TokenRecord, cause: &RevocationCause) -> Option<TokenRecord> {
    (token.state == TokenState::Active).then(|| {
        token.end(TokenState::Revoked, cause.at);
        token
    })
}

/// The audit events of a committed revocation: one per logged session or
/// token, each session's event naming its owner from the session ended.
pub(crate) fn revocation_events(outcome: &RevokeOutcome, actor: Option<UserId>, reason: &str) -> Vec<EventRecord> {
    outcome
        .entries
        .iter()
        .filter_map(|entry| match entry.target {
            RevocationTarget::Session(id) => {
                let mut event = EventRecord::new(EventKind::SessionRevoked).actor(actor).session(id).detail(reason);
                if let Some(session) = outcome.ended_sessions.iter().find(|s| s.id == id) {
                    event = event.user(session.user_id, &session.username);
                }
                Some(event)
            }
            RevocationTarget::Token(id) => {
                Some(EventRecord::new(EventKind::TokenRevoked).actor(actor).token(id).detail(reason))
            }
            RevocationTarget::UserDisabled(_)
            | RevocationTarget::UserEnabled(_)
            | RevocationTarget::UserNotBefore(_)
            | RevocationTarget::UserSessionsBefore(_)
            | RevocationTarget::ServiceAccountNotBefore(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Timestamp, TokenId, session::fixtures};

    fn session() -> SessionRecord {
        fixtures::session(Timestamp::now())
    }

    fn token(session: &SessionRecord, kind: TokenKind, state: TokenState) -> TokenRecord {
        TokenRecord { state, ..fixtures::token(session, TokenId::generate(), kind) }
    }

    fn cause() -> RevocationCause {
        let at = Timestamp::now().plus(Duration::from_secs(5));
        RevocationCause { at, expires_at: at.plus(Duration::from_secs(900)), reason: "stolen laptop".into() }
    }

    #[test]
    fn revoking_an_active_session_ends_it_and_its_active_tokens_and_logs_it() {
        let s = session();
        let c = cause();
        let rotated = token(&s, TokenKind::Refresh, TokenState::Rotated);
        let live =
            [token(&s, TokenKind::Refresh, TokenState::Active), token(&s, TokenKind::Access, TokenState::Active)];
        let writes = revoke_session(&s, [rotated, live[0].clone(), live[1].clone()], &c);
        assert_eq!(writes.log, [RevocationTarget::Session(s.id)]);
        let ended = &writes.ended_sessions[0];
        assert_eq!((ended.state, ended.revoked_at), (SessionState::Revoked, Some(c.at)));
        assert_eq!(ended.revoke_reason.as_deref(), Some("stolen laptop"));
        let tokens: Vec<_> = writes.ended_tokens.iter().map(|t| (t.id, t.state, t.revoked_at)).collect();
        assert_eq!(tokens, live.iter().map(|t| (t.id, TokenState::Revoked, Some(c.at))).collect::<Vec<_>>());
        let outcome = writes.outcome(Vec::new());
        assert_eq!((outcome.sessions, outcome.tokens), (1, 2));
        assert_eq!(outcome.ended_sessions[0].id, s.id);
    }

    #[test]
    fn revoking_an_ended_session_again_only_ends_tokens_left_active() {
        let mut s = session();
        s.end(SessionState::Revoked, Timestamp::now());
        s.revoke_reason = Some("first".into());
        let late = token(&s, TokenKind::Access, TokenState::Active);
        let writes = revoke_session(&s, [late.clone()], &cause());
        assert!(writes.log.is_empty() && writes.ended_sessions.is_empty(), "nothing logged twice");
        assert_eq!(writes.ended_tokens.iter().map(|t| t.id).collect::<Vec<_>>(), [late.id]);
        let nothing = revoke_session(&s, [], &cause()).outcome(Vec::new());
        assert_eq!((nothing.sessions, nothing.tokens), (0, 0));
    }

    #[test]
    fn revoking_a_token_ends_it_and_logs_only_access_tokens() {
        let s = session();
        let c = cause();
        let access = token(&s, TokenKind::Access, TokenState::Active);
        let writes = revoke_token(&access, &c);
        assert_eq!(writes.log, [RevocationTarget::Token(access.id)]);
        assert_eq!(writes.ended_tokens[0].revoked_at, Some(c.at));
        assert!(writes.ended_sessions.is_empty(), "its session stays");
        let refresh = revoke_token(&token(&s, TokenKind::Refresh, TokenState::Active), &c);
        assert_eq!((refresh.ended_tokens.len(), refresh.log.len()), (1, 0));
        let expired = revoke_token(&token(&s, TokenKind::Access, TokenState::Expired), &c);
        assert!(expired.ended_tokens.is_empty() && expired.log.is_empty(), "an ended token stays as it is");
    }

    #[test]
    fn events_name_each_ended_sessions_owner() {
        let (s, other) = (session(), session());
        let c = cause();
        let access = TokenId::generate();
        let entry = |sequence, target| RevocationEntry { sequence, target, at: c.at, expires_at: c.expires_at };
        let mut writes = revoke_session(&s, [], &c);
        writes.ended_sessions.extend(revoke_session(&other, [], &c).ended_sessions);
        let entries = vec![
            entry(1, RevocationTarget::Session(s.id)),
            entry(2, RevocationTarget::Token(access)),
            entry(3, RevocationTarget::UserSessionsBefore(s.user_id)),
            entry(4, RevocationTarget::Session(other.id)),
        ];
        let admin = UserId::generate();
        let events = revocation_events(&writes.outcome(entries), Some(admin), "stolen laptop");
        let seen: Vec<_> = events.iter().map(|e| (e.kind, e.user_id, e.username.clone(), e.actor)).collect();
        assert_eq!(
            seen,
            [
                (EventKind::SessionRevoked, Some(s.user_id), Some(s.username.clone()), Some(admin)),
                (EventKind::TokenRevoked, None, None, Some(admin)),
                (EventKind::SessionRevoked, Some(other.user_id), Some(other.username.clone()), Some(admin)),
            ]
        );
        assert!(events.iter().all(|e| e.detail == "stolen laptop"));
    }
}
