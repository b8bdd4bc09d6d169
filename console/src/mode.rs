//! What keys mean right now: moving around, typing a filter, answering a
//! confirmation, typing a password to log in again or reading the help. A leaf of the console's modules, so
//! that the key map and the state machine can both name it.

use crate::{form::Form, messages::Command};

/// A destructive action waiting for `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The question shown.
    pub prompt: String,
    /// What `y` sends.
    pub command: Command,
}

/// Text typed at a hidden prompt (a password): never drawn, and its
/// `Debug` shows only its length, so it cannot reach a log or a panic
/// message.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Hidden(String);

impl Hidden {
    /// The text, for the one call that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// How many characters were typed, for the prompt's dots.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    /// Whether nothing was typed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One more character.
    pub fn push(&mut self, c: char) {
        self.0.push(c);
    }

    /// One character less.
    pub fn pop(&mut self) {
        self.0.pop();
    }
}

impl From<&str> for Hidden {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hidden({} characters)", self.len())
    }
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
