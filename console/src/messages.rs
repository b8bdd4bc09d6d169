//! The messages between the UI and the background gRPC worker: the
//! operator's commands one way, news for the screen the other. Both sides
//! depend on this module and on nothing of each other.

use sigil_proto::pb;

use crate::{format::short_id, mode::Hidden};

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Revoke one session.
    RevokeSession {
        /// Its id.
        session_id: String,
    },
    /// Revoke one token.
    RevokeToken {
        /// Its id.
        token_id: String,
    },
    /// Revoke every session of a user.
    RevokeUser {
        /// The user's id.
        user_id: String,
        /// The user's name, for messages.
        username: String,
    },
    /// Disable or enable a user.
    SetDisabled {
        /// The user's id.
        user_id: String,
        /// The user's name, for messages.
        username: String,
        /// Disable (true) or enable (false).
        disabled: bool,
    },
    /// Make a new signing key active and distrust every older one.
    EmergencyKeyRotation,
    /// Load ended sessions and tokens too (true), or stop (false).
    IncludeInactive(bool),
    /// Log in again (after the console's own session ended).
    Login {
        /// The password typed at the hidden prompt.
        password: Hidden,
    },
}

impl Command {
    /// What the command does, for the status line.
    pub fn describe(&self) -> String {
        match self {
            Command::RevokeSession { session_id } => {
                format!("revoking session {}", short_id(session_id))
            }
            Command::RevokeToken { token_id } => format!("revoking token {}", short_id(token_id)),
            Command::RevokeUser { username, .. } => format!("revoking every session of {username}"),
            Command::SetDisabled { username, disabled: true, .. } => format!("disabling {username}"),
            Command::SetDisabled { username, disabled: false, .. } => format!("enabling {username}"),
            Command::EmergencyKeyRotation => "emergency key rotation".into(),
            Command::IncludeInactive(true) => "loading ended sessions and tokens".into(),
            Command::IncludeInactive(false) => "showing active records only".into(),
            Command::Login { .. } => "logging in".into(),
        }
    }
}

/// The state of the live event stream, for the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Starting.
    Connecting,
    /// Following events live.
    Live,
    /// The stream broke; retrying.
    Reconnecting {
        /// Why it broke.
        reason: String,
        /// Seconds until the next try.
        retry_in: u64,
    },
    /// The console's own session ended (revoked or expired): every call
    /// fails until the operator logs in again.
    LoggedOut,
}

/// News for the UI.
#[derive(Debug, Clone)]
pub enum Update {
    /// Sessions to insert or replace.
    Sessions(Vec<pb::Session>),
    /// Tokens to insert or replace.
    Tokens(Vec<pb::Token>),
    /// Users to insert or replace.
    Users(Vec<pb::User>),
    /// A user no longer exists.
    UserGone(String),
    /// An audit event.
    Event(pb::Event),
    /// Events from before the console started, oldest first: they go into
    /// the event log only (the lists loaded at start already reflect them).
    History(Vec<pb::Event>),
    /// The stream's state changed.
    Connection(ConnectionState),
    /// The outcome of a command.
    Status {
        /// The text.
        text: String,
        /// Whether it is a failure.
        error: bool,
    },
}
