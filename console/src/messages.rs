//! The messages between the UI and the background gRPC worker: the
//! operator's commands one way, news for the screen the other. Both sides
//! depend on this module and on nothing of each other.

use sigil_proto::pb;

use crate::{format::short_id, hidden::Hidden};

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
    /// Revoke each of these sessions (those a filter matched when the
    /// operator confirmed: sessions that appear later are not included).
    RevokeSessions {
        /// Their ids.
        session_ids: Vec<String>,
        /// The filter that matched them, for messages.
        filter: String,
    },
    /// Create a user.
    CreateUser {
        /// The name.
        username: String,
        /// The first password.
        password: Hidden,
        /// The roles.
        roles: Vec<String>,
    },
    /// Set a user's password and end every session of the user.
    SetPassword {
        /// The user's id.
        user_id: String,
        /// The user's name, for messages.
        username: String,
        /// The new password.
        password: Hidden,
    },
    /// Replace a user's roles.
    SetRoles {
        /// The user's id.
        user_id: String,
        /// The user's name, for messages.
        username: String,
        /// The roles.
        roles: Vec<String>,
    },
    /// Revoke every token a service account obtained so far.
    RevokeServiceAccountTokens {
        /// Its client id.
        client_id: String,
        /// Its name, for messages.
        name: String,
    },
    /// Disable or enable a service account.
    SetServiceAccountDisabled {
        /// Its client id.
        client_id: String,
        /// Its name, for messages.
        name: String,
        /// Disable (true) or enable (false).
        disabled: bool,
    },
    /// Reload the service accounts (their view was opened: a secret's last
    /// use changes with every grant, and no event announces it).
    LoadServiceAccounts,
    /// Sample `GetStats` every second while the Dashboard is open.
    WatchStats {
        /// The Dashboard opened (true) or closed (false).
        open: bool,
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
            Command::RevokeSessions { session_ids, filter } => {
                format!("revoking {} sessions matching \"{filter}\"", session_ids.len())
            }
            Command::CreateUser { username, .. } => format!("creating user {username}"),
            Command::SetPassword { username, .. } => format!("setting the password of {username}"),
            Command::SetRoles { username, roles, .. } => {
                format!("setting the roles of {username} to [{}]", roles.join(", "))
            }
            Command::RevokeServiceAccountTokens { name, .. } => format!("revoking every token of {name}"),
            Command::SetServiceAccountDisabled { name, disabled: true, .. } => {
                format!("disabling service account {name}")
            }
            Command::SetServiceAccountDisabled { name, disabled: false, .. } => {
                format!("enabling service account {name}")
            }
            Command::LoadServiceAccounts => "loading the service accounts".into(),
            Command::WatchStats { open: true } => "following the server's counters".into(),
            Command::WatchStats { open: false } => "no longer following the server's counters".into(),
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

/// A list the worker loads page by page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Users.
    Users,
    /// Sessions.
    Sessions,
    /// Tokens.
    Tokens,
}

/// How far a full load has come: the first page is on screen at once, the
/// rest follows in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loading {
    /// The list being loaded.
    pub list: List,
    /// Rows received so far.
    pub loaded: u64,
    /// Rows the server counted when the load began, if it said.
    pub total: Option<u64>,
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
    /// Service accounts to insert or replace.
    ServiceAccounts(Vec<pb::ServiceAccount>),
    /// A service account (this client id) no longer exists.
    ServiceAccountGone(String),
    /// An audit event.
    Event(pb::Event),
    /// Events from before the console started, oldest first: they go into
    /// the event log only (the lists loaded at start already reflect them).
    History(Vec<pb::Event>),
    /// A `GetStats` answer, and when it arrived.
    Stats(pb::GetStatsResponse, std::time::SystemTime),
    /// The stream's state changed.
    Connection(ConnectionState),
    /// The console's own session, at start and after each new login.
    OwnSession(String),
    /// A full load advanced (`None`: it is done).
    Loading(Option<Loading>),
    /// The outcome of a command.
    Status {
        /// The text.
        text: String,
        /// Whether it is a failure.
        error: bool,
    },
}
