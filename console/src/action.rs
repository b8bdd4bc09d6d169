//! Actions: everything that can change the console's state. Key presses
//! become actions through the key map ([`crate::keymap`]).

use std::time::SystemTime;

use ratatui::layout::Size;

use crate::{app::View, messages::Update};

/// One thing that happens to the console.
// `Backend` holds an update (at most one audit event with its session and
// token) that lives for one `App::update`; boxing it would add an
// allocation per event for no saving, as in the key map's `Act`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Next view (Tab).
    NextView,
    /// Previous view (Shift-Tab).
    PrevView,
    /// Straight to a view (the number keys).
    ShowView(View),
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
    /// Reverse the current sort.
    ReverseSort,
    /// Close the detail pane, or else clear the filter.
    Back,
    /// Show ended sessions and tokens too, or stop.
    ToggleInactive,
    /// Ask for the password to log in again.
    StartLogin,
    /// A character of the password being typed.
    PasswordChar(char),
    /// Delete the password's last character.
    PasswordBackspace,
    /// Log in with the typed password.
    PasswordSubmit,
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
    /// distrusted at once (asks for the word to be typed first).
    EmergencyKeyRotation,
    /// Revoke every active session the Sessions filter matches (asks
    /// first, with the count and a sample).
    RevokeFiltered,
    /// Open the new-user form.
    NewUser,
    /// Open the password form of the selected row's user.
    ResetPassword,
    /// Open the roles form of the selected row's user.
    EditRoles,
    /// A character typed into the open form.
    FormChar(char),
    /// Delete the form field's last character.
    FormBackspace,
    /// Next field, or submit on the last.
    FormEnter,
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
