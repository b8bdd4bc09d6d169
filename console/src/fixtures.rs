//! Fixed sample data for the console's tests: deterministic ids and times,
//! so snapshots need no filtering and never drift.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_proto::pb;

/// The fixed "now" of every test: 2026-01-01T00:00:00Z.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn at(offset_seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: 1_767_225_600 + offset_seconds, nanos: 0 })
}

fn id(prefix: char, n: usize) -> String {
    // UUIDv7-like: a shared time prefix, a distinct tail.
    format!("01900000-0000-7000-8000-{prefix}{n:011}")
}

fn user_id(username: &str) -> String {
    id('u', username.bytes().map(usize::from).sum())
}

/// A session of `username` numbered `n`, created `n` minutes ago.
pub(crate) fn session(n: usize, username: &str) -> pb::Session {
    pb::Session {
        session_id: id('5', n),
        user_id: user_id(username),
        username: username.into(),
        state: pb::SessionState::Active.into(),
        created_at: at(-60 * n as i64),
        last_seen_at: at(-30),
        expires_at: at(30 * 86_400),
        client_address: format!("10.0.0.{}:4{n:04}", n % 250),
        user_agent: "grpc-go/1.70".into(),
        device_name: format!("device-{n}"),
        revoked_at: None,
        revoke_reason: String::new(),
    }
}

/// An access token of a session.
pub(crate) fn token(n: usize, session: &pb::Session) -> pb::Token {
    pb::Token {
        token_id: id('7', n),
        kind: pb::TokenKind::Access.into(),
        session_id: session.session_id.clone(),
        user_id: session.user_id.clone(),
        username: session.username.clone(),
        state: pb::TokenState::Active.into(),
        issued_at: at(-120),
        expires_at: at(780),
        revoked_at: None,
    }
}

/// A user.
pub(crate) fn user(username: &str, roles: &[&str], active_sessions: u32) -> pb::User {
    pb::User {
        user_id: user_id(username),
        username: username.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        disabled: false,
        created_at: at(-86_400 * 3),
        updated_at: at(-86_400),
        active_sessions,
    }
}

/// An event.
pub(crate) fn event(sequence: u64, kind: pb::EventKind, session: &pb::Session, detail: &str) -> pb::Event {
    pb::Event {
        sequence,
        occurred_at: at(-(100 - sequence as i64)),
        kind: kind.into(),
        actor_user_id: String::new(),
        user_id: session.user_id.clone(),
        username: session.username.clone(),
        session_id: session.session_id.clone(),
        token_id: String::new(),
        detail: detail.into(),
        client_id: String::new(),
        session: None,
        token: None,
    }
}

/// A service account numbered `n`, created `n` days ago, with a secret
/// per entry of `secrets`: (age in days, expires in days, last used
/// minutes ago), `None` for never.
pub(crate) fn service_account(n: usize, name: &str, secrets: &[(i64, Option<i64>, Option<i64>)]) -> pb::ServiceAccount {
    pb::ServiceAccount {
        client_id: id('c', n),
        name: name.into(),
        roles: vec!["reader".into()],
        audiences: vec!["billing-api".into()],
        scopes: vec!["read".into()],
        disabled: false,
        created_at: at(-86_400 * n as i64),
        updated_at: at(-3600),
        secrets: secrets
            .iter()
            .enumerate()
            .map(|(i, (age, expires, used))| pb::ClientSecret {
                secret_id: id('e', n * 10 + i),
                created_at: at(-86_400 * age),
                expires_at: expires.and_then(|d| at(86_400 * d)),
                last_used_at: used.and_then(|m| at(-60 * m)),
            })
            .collect(),
        key: None,
    }
}
