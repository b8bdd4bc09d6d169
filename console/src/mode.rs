//! What keys mean right now: moving around, typing a filter, answering a
//! confirmation, typing a password to log in again or reading the help. A leaf of the console's modules, so
//! that the key map and the state machine can both name it.

use crate::{form::Form, hidden::Hidden, messages::Command};

/// A destructive action waiting for `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The question shown.
    pub prompt: String,
    /// What `y` sends.
    pub command: Command,
}

/// What keys mean right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Moving around the table.
    Normal,
    /// Typing a filter.
    Filter,
    /// Waiting for `y` to confirm.
    Confirm(Pending),
    /// The help screen is open.
    Help,
    /// Typing the password to log in again (hidden).
    Password(Hidden),
    /// Typing into a form (a new user, a password, roles, or the word
    /// that confirms the emergency key rotation).
    Form(Form),
}
