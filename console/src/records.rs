//! How each kind of row (session, token, user, service account, event) is
//! shown: its columns, its cells, its sort keys and its colour.

use std::time::SystemTime;

use ratatui::style::{Color, Style};
use sigil_proto::pb;

use crate::format::{millis, relative, short_id};

/// A value rows are sorted by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    /// Case-insensitive text.
    Text(String),
    /// A time; newest sorts first.
    Newest(std::cmp::Reverse<i64>),
    /// A count; largest first.
    Largest(std::cmp::Reverse<i64>),
}

/// A row type of the console's tables.
pub trait Record {
    /// Column titles.
    const COLUMNS: &'static [&'static str];
    /// The width (in characters) each column needs; wider screens share
    /// the rest in proportion.
    const WIDTHS: &'static [u16];
    /// The columns that give way, first to last, when the screen is too
    /// narrow for all of them.
    const DROP_ORDER: &'static [usize];
    /// Stable id.
    fn id(&self) -> &str;
    /// The cells of the row at `now`.
    fn cells(&self, now: SystemTime) -> Vec<String>;
    /// The sort key of column `column`.
    fn sort_key(&self, column: usize) -> SortKey;
    /// Row colour: red for ended, grey for expired, default for live.
    fn style(&self) -> Style;
    /// Which columns hold relative times. Those change every second, so the
    /// filter does not look at them (filtering on "3m ago" helps nobody).
    const TIME_COLUMNS: &'static [usize];
    /// The lower-cased text the filter searches: every column but the times.
    fn search_text(&self, now: SystemTime) -> String {
        let cells = self.cells(now);
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate().filter(|(i, _)| !Self::TIME_COLUMNS.contains(i)) {
            if i > 0 {
                text.push('\u{1f}');
            }
            text.push_str(&cell.to_lowercase());
        }
        text
    }
}

fn text(s: &str) -> SortKey {
    SortKey::Text(s.to_lowercase())
}

fn newest(t: Option<&prost_types::Timestamp>) -> SortKey {
    SortKey::Newest(std::cmp::Reverse(millis(t)))
}

const ENDED: Style = Style::new().fg(Color::Red);
const EXPIRED: Style = Style::new().fg(Color::DarkGray);
const LIVE: Style = Style::new();

impl Record for pb::Session {
    const COLUMNS: &'static [&'static str] =
        &["User", "Device", "Client", "User agent", "Created", "Last seen", "Expires", "State"];
    const WIDTHS: &'static [u16] = &[12, 14, 21, 18, 8, 9, 8, 7];
    // The address and the device tell sessions apart in an incident; the
    // user agent and the times can be looked up in the details.
    const DROP_ORDER: &'static [usize] = &[3, 6, 5, 4, 1];
    const TIME_COLUMNS: &'static [usize] = &[4, 5, 6];

    fn id(&self) -> &str {
        &self.session_id
    }

    fn cells(&self, now: SystemTime) -> Vec<String> {
        vec![
            self.username.clone(),
            self.device_name.clone(),
            self.client_address.clone(),
            self.user_agent.clone(),
            relative(self.created_at.as_ref(), now),
            relative(self.last_seen_at.as_ref(), now),
            relative(self.expires_at.as_ref(), now),
            session_state(self.state()).into(),
        ]
    }

    fn sort_key(&self, column: usize) -> SortKey {
        match column {
            0 => text(&self.username),
            1 => text(&self.device_name),
            2 => text(&self.client_address),
            3 => text(&self.user_agent),
            4 => newest(self.created_at.as_ref()),
            5 => newest(self.last_seen_at.as_ref()),
            6 => newest(self.expires_at.as_ref()),
            _ => text(session_state(self.state())),
        }
    }

    fn style(&self) -> Style {
        match self.state() {
            pb::SessionState::Revoked => ENDED,
            pb::SessionState::Expired => EXPIRED,
            _ => LIVE,
        }
    }
}

/// Short name of a session state.
pub fn session_state(state: pb::SessionState) -> &'static str {
    match state {
        pb::SessionState::Active => "active",
        pb::SessionState::Revoked => "revoked",
        pb::SessionState::Expired => "expired",
        pb::SessionState::Unspecified => "?",
    }
}

impl Record for pb::Token {
    const COLUMNS: &'static [&'static str] = &["Token", "Kind", "User", "Session", "Issued", "Expires", "State"];
    const WIDTHS: &'static [u16] = &[10, 8, 12, 10, 10, 10, 8];
    const DROP_ORDER: &'static [usize] = &[5, 4, 1, 3];
    const TIME_COLUMNS: &'static [usize] = &[4, 5];

    fn id(&self) -> &str {
        &self.token_id
    }

    fn cells(&self, now: SystemTime) -> Vec<String> {
        vec![
            short_id(&self.token_id).to_string(),
            token_kind(self.kind()).into(),
            self.username.clone(),
            short_id(&self.session_id).to_string(),
            relative(self.issued_at.as_ref(), now),
            relative(self.expires_at.as_ref(), now),
            token_state(self.state()).into(),
        ]
    }

    fn sort_key(&self, column: usize) -> SortKey {
        match column {
            0 => text(&self.token_id),
            1 => text(token_kind(self.kind())),
            2 => text(&self.username),
            3 => text(&self.session_id),
            4 => newest(self.issued_at.as_ref()),
            5 => newest(self.expires_at.as_ref()),
            _ => text(token_state(self.state())),
        }
    }

    fn style(&self) -> Style {
        match self.state() {
            pb::TokenState::Revoked => ENDED,
            pb::TokenState::Expired | pb::TokenState::Rotated => EXPIRED,
            _ => LIVE,
        }
    }
}

fn token_kind(kind: pb::TokenKind) -> &'static str {
    match kind {
        pb::TokenKind::Access => "access",
        pb::TokenKind::Refresh => "refresh",
        pb::TokenKind::Unspecified => "?",
    }
}

fn token_state(state: pb::TokenState) -> &'static str {
    match state {
        pb::TokenState::Active => "active",
        pb::TokenState::Revoked => "revoked",
        pb::TokenState::Expired => "expired",
        pb::TokenState::Rotated => "rotated",
        pb::TokenState::Unspecified => "?",
    }
}

impl Record for pb::User {
    const COLUMNS: &'static [&'static str] = &["Name", "Roles", "Disabled", "Active sessions", "Created"];
    const WIDTHS: &'static [u16] = &[16, 20, 9, 15, 10];
    const DROP_ORDER: &'static [usize] = &[4, 2];
    const TIME_COLUMNS: &'static [usize] = &[4];

    fn id(&self) -> &str {
        &self.user_id
    }

    fn cells(&self, now: SystemTime) -> Vec<String> {
        vec![
            self.username.clone(),
            self.roles.join(","),
            if self.disabled { "yes" } else { "no" }.into(),
            self.active_sessions.to_string(),
            relative(self.created_at.as_ref(), now),
        ]
    }

    fn sort_key(&self, column: usize) -> SortKey {
        match column {
            0 => text(&self.username),
            1 => text(&self.roles.join(",")),
            2 => text(if self.disabled { "yes" } else { "no" }),
            3 => SortKey::Largest(std::cmp::Reverse(i64::from(self.active_sessions))),
            _ => newest(self.created_at.as_ref()),
        }
    }

    fn style(&self) -> Style {
        if self.disabled { ENDED } else { LIVE }
    }
}

impl Record for pb::ServiceAccount {
    const COLUMNS: &'static [&'static str] =
        &["Name", "Client", "Roles", "Audiences", "Disabled", "Secrets", "Last used"];
    const WIDTHS: &'static [u16] = &[16, 10, 14, 18, 8, 7, 9];
    // The name, the client id and whether it is disabled tell accounts
    // apart in an incident; the rest is in the detail pane.
    const DROP_ORDER: &'static [usize] = &[3, 5, 2];
    const TIME_COLUMNS: &'static [usize] = &[6];

    fn id(&self) -> &str {
        &self.client_id
    }

    fn cells(&self, now: SystemTime) -> Vec<String> {
        vec![
            self.name.clone(),
            short_id(&self.client_id).to_string(),
            self.roles.join(","),
            self.audiences.join(","),
            if self.disabled { "yes" } else { "no" }.into(),
            self.secrets.len().to_string(),
            relative(last_used(self), now),
        ]
    }

    fn sort_key(&self, column: usize) -> SortKey {
        match column {
            0 => text(&self.name),
            1 => text(short_id(&self.client_id)),
            2 => text(&self.roles.join(",")),
            3 => text(&self.audiences.join(",")),
            4 => text(if self.disabled { "yes" } else { "no" }),
            5 => SortKey::Largest(std::cmp::Reverse(self.secrets.len() as i64)),
            _ => newest(last_used(self)),
        }
    }

    fn style(&self) -> Style {
        if self.disabled { ENDED } else { LIVE }
    }

    /// The shown columns and the whole client id: an operator may paste
    /// one from a log, and the table shows only its tail.
    fn search_text(&self, now: SystemTime) -> String {
        let mut text: Vec<String> = self
            .cells(now)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !Self::TIME_COLUMNS.contains(i))
            .map(|(_, cell)| cell.to_lowercase())
            .collect();
        text.push(self.client_id.to_lowercase());
        text.join("\u{1f}")
    }
}

/// The newest last use of any of a service account's secrets, if one was
/// ever used.
pub fn last_used(account: &pb::ServiceAccount) -> Option<&prost_types::Timestamp> {
    account.secrets.iter().filter_map(|s| s.last_used_at.as_ref()).max_by_key(|t| millis(Some(t)))
}

impl Record for pb::Event {
    const COLUMNS: &'static [&'static str] = &["Seq", "When", "Event", "User", "Session", "Detail"];
    const WIDTHS: &'static [u16] = &[7, 9, 16, 12, 10, 30];
    const DROP_ORDER: &'static [usize] = &[4, 0];
    const TIME_COLUMNS: &'static [usize] = &[1];

    fn id(&self) -> &str {
        // Events are never updated in place; the sequence is their identity.
        ""
    }

    fn cells(&self, now: SystemTime) -> Vec<String> {
        vec![
            self.sequence.to_string(),
            relative(self.occurred_at.as_ref(), now),
            event_kind(self.kind()).into(),
            self.username.clone(),
            short_id(&self.session_id).to_string(),
            event_detail(self),
        ]
    }

    fn sort_key(&self, column: usize) -> SortKey {
        match column {
            0 | 1 => newest(self.occurred_at.as_ref()),
            2 => text(event_kind(self.kind())),
            3 => text(&self.username),
            4 => text(&self.session_id),
            _ => text(&self.detail),
        }
    }

    fn style(&self) -> Style {
        match self.kind() {
            pb::EventKind::SessionRevoked
            | pb::EventKind::TokenRevoked
            | pb::EventKind::LoginFailed
            | pb::EventKind::RefreshReused
            | pb::EventKind::AccountLocked
            | pb::EventKind::StoreLossAccepted
            | pb::EventKind::UserDisabled
            | pb::EventKind::UserDeleted => ENDED,
            _ => LIVE,
        }
    }
}

/// An event's detail as shown: the server writes "from ADDRESS (DEVICE)"
/// also when a login named no device, and empty parentheses say nothing.
pub fn event_detail(event: &pb::Event) -> String {
    event.detail.replace(" ()", "")
}

/// Short name of an event kind.
pub fn event_kind(kind: pb::EventKind) -> &'static str {
    use pb::EventKind as K;
    match kind {
        K::SessionCreated => "session created",
        K::SessionRefreshed => "session refreshed",
        K::SessionRevoked => "session revoked",
        K::SessionExpired => "session expired",
        K::TokenIssued => "token issued",
        K::TokenRevoked => "token revoked",
        K::UserCreated => "user created",
        K::UserUpdated => "user updated",
        K::UserDisabled => "user disabled",
        K::UserEnabled => "user enabled",
        K::UserDeleted => "user deleted",
        K::LoginFailed => "login failed",
        K::KeyRotated => "key rotated",
        K::KeyRetired => "key retired",
        K::RefreshReused => "refresh reused",
        K::AccountLocked => "account locked",
        K::StoreLossAccepted => "store loss accepted",
        K::ServiceAccountCreated => "service account created",
        K::ServiceAccountUpdated => "service account updated",
        K::ServiceAccountDisabled => "service account disabled",
        K::ServiceAccountEnabled => "service account enabled",
        K::ServiceAccountDeleted => "service account deleted",
        K::ClientSecretAdded => "client secret added",
        K::ClientSecretRevoked => "client secret revoked",
        K::ClientKeySet => "client key set",
        K::ServiceTokensRevoked => "service tokens revoked",
        K::ClientAuthFailed => "client auth failed",
        K::Unspecified => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_without_a_device_shows_no_empty_parentheses() {
        let event = pb::Event { detail: "from 10.0.0.7:5000 ()".into(), ..Default::default() };
        assert_eq!(event.cells(std::time::UNIX_EPOCH)[5], "from 10.0.0.7:5000");
    }
}
