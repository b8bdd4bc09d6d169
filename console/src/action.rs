//! Actions: everything that can change the console's state, and the key
//! map that turns key presses into them.

use std::time::SystemTime;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Size;

use crate::{messages::Update, mode::Mode};

/// One thing that happens to the console.
#[derive(Debug)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Next view (Tab).
    NextView,
    /// Previous view (Shift-Tab).
    PrevView,
    /// Selection up one row.
    Up,
    /// Selection down one row.
    Down,
    /// Selection up one page.
    PageUp,
    /// Selection down one page.
    PageDown,
    /// First row.
    Top,
    /// Last row.
    Bottom,
    /// Start typing a filter.
    StartFilter,
    /// A character of the filter.
    FilterChar(char),
    /// Delete the filter's last character.
    FilterBackspace,
    /// Keep the filter and return to the table.
    FilterKeep,
    /// Clear the filter.
    FilterClear,
    /// Sort by the next column.
    CycleSort,
    /// Show or hide the detail pane.
    ToggleDetail,
    /// Show or hide the help.
    ToggleHelp,
    /// Revoke the selected session or token (asks first).
    RevokeSelected,
    /// Revoke every session of the selected row's user (asks first).
    RevokeUserOfSelected,
    /// Disable or enable the selected row's user (asks first).
    ToggleUserDisabled,
    /// Emergency key rotation: a new signing key, every older one
    /// distrusted at once (asks first).
    EmergencyKeyRotation,
    /// Confirm the pending destructive action.
    Confirm,
    /// Cancel the pending destructive action.
    Cancel,
    /// The terminal has this size now (at start and on every resize).
    Resize(Size),
    /// Time passed; relative times are redrawn.
    Tick(SystemTime),
    /// News from the background gRPC worker.
    Backend(Update),
    /// A key with no meaning here.
    Nothing,
}

/// The key map, in the console's current mode.
pub fn from_key(mode: &Mode, key: KeyEvent) -> Action {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    match mode {
        Mode::Confirm(_) => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Action::Confirm,
            _ => Action::Cancel,
        },
        Mode::Help => Action::ToggleHelp,
        Mode::Filter => match key.code {
            KeyCode::Enter => Action::FilterKeep,
            KeyCode::Esc => Action::FilterClear,
            KeyCode::Backspace => Action::FilterBackspace,
            KeyCode::Char(c) => Action::FilterChar(c),
            _ => Action::Nothing,
        },
        Mode::Normal => match key.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Tab => Action::NextView,
            KeyCode::BackTab => Action::PrevView,
            KeyCode::Up | KeyCode::Char('k') => Action::Up,
            KeyCode::Down | KeyCode::Char('j') => Action::Down,
            KeyCode::PageUp => Action::PageUp,
            KeyCode::PageDown => Action::PageDown,
            KeyCode::Home | KeyCode::Char('g') => Action::Top,
            KeyCode::End | KeyCode::Char('G') => Action::Bottom,
            KeyCode::Char('/') => Action::StartFilter,
            KeyCode::Char('s') => Action::CycleSort,
            KeyCode::Enter => Action::ToggleDetail,
            KeyCode::Char('d') => Action::RevokeSelected,
            KeyCode::Char('u') => Action::RevokeUserOfSelected,
            KeyCode::Char('x') => Action::ToggleUserDisabled,
            KeyCode::Char('K') => Action::EmergencyKeyRotation,
            KeyCode::Char('?') => Action::ToggleHelp,
            KeyCode::Esc => Action::FilterClear,
            _ => Action::Nothing,
        },
    }
}

/// Every key of the console with what it does, for the help screen.
pub const KEY_HELP: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous view (Sessions, Tokens, Users, Events)"),
    ("↑ ↓ / j k", "move the selection"),
    ("PgUp PgDn / g G", "page up / down, first / last row"),
    ("/", "filter the view (Enter keeps it, Esc clears it)"),
    ("s", "sort by the next column"),
    ("Enter", "details: a session's tokens, a user's sessions"),
    ("d", "revoke the selected session or token"),
    ("u", "revoke every session of the selected row's user"),
    ("x", "disable / enable the selected row's user"),
    ("K", "emergency key rotation: distrust all older keys"),
    ("y", "confirm a revocation (any other key cancels)"),
    ("?", "this help"),
    ("q / Ctrl-C", "quit"),
];
