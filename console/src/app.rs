//! The console's state and its transitions: actions in, state and backend
//! commands out. No terminal and no network here, so every behaviour can be
//! tested directly.

use std::time::SystemTime;

use ratatui::layout::Rect;
use sigil_proto::pb;

use crate::{
    action::Action,
    dashboard::Dashboard,
    form::Form,
    format::relative,
    hidden::Hidden,
    layout,
    messages::{Command, ConnectionState, Loading, Update},
    mode::{Mode, Pending},
    records::Record,
    table::Table,
};

/// The six views, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Sessions.
    Sessions,
    /// Issued tokens.
    Tokens,
    /// Users.
    Users,
    /// The live audit stream, newest first.
    Events,
    /// Live rates, counts, failed logins and lockouts.
    Dashboard,
    /// Service accounts (OAuth clients) with their secrets.
    ServiceAccounts,
}

impl View {
    /// All views in order.
    pub const ALL: [View; 6] =
        [View::Sessions, View::Tokens, View::Users, View::Events, View::Dashboard, View::ServiceAccounts];

    /// The view's title.
    pub fn title(self) -> &'static str {
        match self {
            View::Sessions => "Sessions",
            View::Tokens => "Tokens",
            View::Users => "Users",
            View::Events => "Events",
            View::Dashboard => "Dashboard",
            View::ServiceAccounts => "Service accounts",
        }
    }

    /// The title where the full one does not fit (the tabs of a narrow
    /// terminal).
    pub fn short_title(self) -> &'static str {
        match self {
            View::ServiceAccounts => "Accounts",
            other => other.title(),
        }
    }

    fn step(self, by: isize) -> View {
        let i = View::ALL.iter().position(|v| *v == self).unwrap_or(0) as isize;
        View::ALL[(i + by).rem_euclid(View::ALL.len() as isize) as usize]
    }
}

/// The status line: the outcome of the last action.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
}

/// Events kept in the Events view.
pub const MAX_EVENTS: usize = 10_000;

/// Everything the console shows.
pub struct App {
    /// The server's address, for the header.
    pub server: String,
    /// Who is logged in, for the header.
    pub username: String,
    /// The current view.
    pub view: View,
    /// Sessions.
    pub sessions: Table<pb::Session>,
    /// Issued tokens.
    pub tokens: Table<pb::Token>,
    /// Users.
    pub users: Table<pb::User>,
    /// Audit events.
    pub events: Table<pb::Event>,
    /// Service accounts.
    pub service_accounts: Table<pb::ServiceAccount>,
    /// The Dashboard's rates and lists.
    pub dashboard: Dashboard,
    /// What keys mean right now.
    pub mode: Mode,
    /// Whether the detail pane is open.
    pub detail: bool,
    /// Whether ended (revoked, expired) sessions and tokens are loaded too.
    pub include_inactive: bool,
    /// The status line.
    pub status: Option<Status>,
    /// The event stream's state.
    pub connection: ConnectionState,
    /// The console's own session (never part of a bulk revocation).
    pub own_session: Option<String>,
    /// How far the background load of a list has come, while it runs.
    pub loading: Option<Loading>,
    /// The clock relative times are drawn against.
    pub now: SystemTime,
    /// The terminal's area, as last reported: pages and scrolling are
    /// measured against it.
    pub screen: Rect,
    /// Set when the console should exit.
    pub should_quit: bool,
}

impl App {
    /// A console for `username` on `server`, with no data yet.
    pub fn new(server: &str, username: &str, now: SystemTime) -> Self {
        Self {
            server: server.to_string(),
            username: username.to_string(),
            view: View::Sessions,
            sessions: Table::new(false),
            tokens: Table::new(false),
            users: Table::new(false),
            events: Table::new(true),
            service_accounts: Table::new(false),
            dashboard: Dashboard::default(),
            mode: Mode::Normal,
            detail: false,
            include_inactive: false,
            status: None,
            connection: ConnectionState::Connecting,
            own_session: None,
            loading: None,
            now,
            screen: Rect::default(),
            should_quit: false,
        }
    }

    /// Applies one action; returns the commands for the backend.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        let mut commands = Vec::new();
        match action {
            Action::Quit => self.should_quit = true,
            Action::NextView => commands.extend(self.switch(self.view.step(1))),
            Action::PrevView => commands.extend(self.switch(self.view.step(-1))),
            Action::ShowView(view) => commands.extend(self.switch(view)),
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-(self.page_rows() as isize)),
            Action::PageDown => self.move_by(self.page_rows() as isize),
            Action::Top => self.with_table(|t| t.jump(false)),
            Action::Bottom => self.with_table(|t| t.jump(true)),
            Action::StartFilter => self.mode = Mode::Filter,
            Action::FilterChar(c) => {
                let mut filter = self.current_filter();
                filter.push(c);
                self.set_filter(filter);
            }
            Action::FilterBackspace => {
                let mut filter = self.current_filter();
                filter.pop();
                self.set_filter(filter);
            }
            Action::FilterKeep => self.mode = Mode::Normal,
            Action::FilterClear => {
                self.set_filter(String::new());
                self.mode = Mode::Normal;
            }
            Action::CycleSort => self.with_table(|t| t.cycle_sort()),
            Action::ReverseSort => self.with_table(|t| t.reverse_sort()),
            Action::Back => {
                if self.detail {
                    self.detail = false;
                } else if !self.current_filter().is_empty() {
                    self.set_filter(String::new());
                }
            }
            Action::ToggleInactive => {
                self.include_inactive = !self.include_inactive;
                if !self.include_inactive {
                    self.sessions.retain(|s| s.state() == pb::SessionState::Active);
                    self.tokens.retain(|t| t.state() == pb::TokenState::Active);
                }
                let command = Command::IncludeInactive(self.include_inactive);
                self.say(format!("{}…", command.describe()), false);
                self.refresh();
                return vec![command];
            }
            Action::StartLogin => {
                if self.connection == ConnectionState::LoggedOut {
                    self.mode = Mode::Password(Hidden::default());
                } else {
                    self.say("the console is logged in; L logs in again once its session has ended".into(), true);
                }
            }
            Action::PasswordChar(c) => {
                if let Mode::Password(password) = &mut self.mode {
                    password.push(c);
                }
            }
            Action::PasswordBackspace => {
                if let Mode::Password(password) = &mut self.mode {
                    password.pop();
                }
            }
            Action::PasswordSubmit => {
                if let Mode::Password(password) = std::mem::replace(&mut self.mode, Mode::Normal) {
                    let command = Command::Login { password };
                    self.say(format!("{}…", command.describe()), false);
                    return vec![command];
                }
            }
            Action::ToggleDetail => self.detail = !self.detail,
            Action::ToggleHelp => self.mode = if self.mode == Mode::Help { Mode::Normal } else { Mode::Help },
            Action::RevokeSelected => self.ask_revoke_selected(),
            Action::RevokeUserOfSelected => self.ask_revoke_user(),
            // Too grave for one key: the word must be typed.
            Action::EmergencyKeyRotation => self.mode = Mode::Form(Form::rotate_keys()),
            Action::RevokeFiltered => self.ask_revoke_filtered(),
            Action::NewUser => self.mode = Mode::Form(Form::create_user()),
            Action::ResetPassword => match self.selected_user() {
                Some((user_id, username)) => self.mode = Mode::Form(Form::set_password(user_id, username)),
                None => self.say("the selected row names no user".into(), true),
            },
            Action::EditRoles => match self.selected_user() {
                Some((user_id, username)) => {
                    let roles = self.users.get(&user_id).map(|u| u.roles.clone()).unwrap_or_default();
                    self.mode = Mode::Form(Form::edit_roles(user_id, username, &roles));
                }
                None => self.say("the selected row names no user".into(), true),
            },
            Action::FormChar(c) => {
                if let Mode::Form(form) = &mut self.mode {
                    form.type_char(c);
                }
            }
            Action::FormBackspace => {
                if let Mode::Form(form) = &mut self.mode {
                    form.backspace();
                }
            }
            Action::FormEnter => {
                if let Mode::Form(form) = &mut self.mode
                    && let Some(command) = form.enter()
                {
                    self.mode = Mode::Normal;
                    self.say(format!("{}…", command.describe()), false);
                    commands.push(command);
                }
            }
            Action::ToggleUserDisabled => self.ask_toggle_disabled(),
            Action::Confirm => {
                if let Mode::Confirm(pending) = std::mem::replace(&mut self.mode, Mode::Normal) {
                    self.say(format!("{}…", pending.command.describe()), false);
                    return vec![pending.command];
                }
            }
            Action::Cancel => {
                if matches!(self.mode, Mode::Confirm(_) | Mode::Password(_) | Mode::Form(_)) {
                    self.mode = Mode::Normal;
                    self.say("cancelled".into(), false);
                }
            }
            Action::Resize(size) => self.screen = Rect::from((ratatui::layout::Position::ORIGIN, size)),
            Action::Tick(now) => self.now = now,
            Action::Backend(update) => self.apply(update),
            Action::Nothing => {}
        }
        self.refresh();
        commands
    }

    /// Recomputes the tables' shown order after changes, and scrolls the
    /// current view so that its selection is on screen.
    pub fn refresh(&mut self) {
        self.sessions.refresh();
        self.tokens.refresh();
        self.users.refresh();
        self.events.refresh();
        self.service_accounts.refresh();
        let rows = layout::table_rows(layout::areas(self.screen, self.detail).table);
        self.with_table(|t| t.scroll_to_selection(rows));
    }

    /// How many rows PgUp and PgDn move: the rows the table shows.
    pub fn page_rows(&self) -> usize {
        layout::table_rows(layout::areas(self.screen, self.detail).table).max(1)
    }

    /// Shows `view`; opening or leaving the Dashboard starts or stops the
    /// worker's sampling of `GetStats`, which costs the server a count of
    /// every active row, so it runs only while someone looks. Opening
    /// Service accounts reloads them: the last use of a secret changes with
    /// every grant, which no event announces.
    fn switch(&mut self, view: View) -> Vec<Command> {
        let (was, is) = (self.view == View::Dashboard, view == View::Dashboard);
        let opened_accounts = view == View::ServiceAccounts && self.view != view;
        self.view = view;
        self.detail = false;
        let mut commands = Vec::new();
        if was != is {
            commands.push(Command::WatchStats { open: is });
        }
        if opened_accounts {
            commands.push(Command::LoadServiceAccounts);
        }
        commands
    }

    fn move_by(&mut self, delta: isize) {
        self.with_table(|t| t.move_by(delta));
    }

    /// Runs `f` on the current view's table, whatever its row type.
    fn with_table(&mut self, f: impl FnOnce(&mut dyn TableControl)) {
        match self.view {
            View::Sessions => f(&mut self.sessions),
            View::Tokens => f(&mut self.tokens),
            View::Users => f(&mut self.users),
            View::Events => f(&mut self.events),
            View::ServiceAccounts => f(&mut self.service_accounts),
            // The Dashboard has no table to move in.
            View::Dashboard => {}
        }
    }

    /// The current view's filter.
    pub fn current_filter(&self) -> String {
        match self.view {
            View::Sessions => self.sessions.filter().to_string(),
            View::Tokens => self.tokens.filter().to_string(),
            View::Users => self.users.filter().to_string(),
            View::Events => self.events.filter().to_string(),
            View::ServiceAccounts => self.service_accounts.filter().to_string(),
            View::Dashboard => String::new(),
        }
    }

    fn set_filter(&mut self, filter: String) {
        self.with_table(|t| t.set_filter(filter));
    }

    fn say(&mut self, text: String, error: bool) {
        self.status = Some(Status { text, error });
    }

    fn confirm(&mut self, prompt: String, command: Command) {
        self.mode = Mode::Confirm(Pending { prompt, command });
    }

    fn ask_revoke_selected(&mut self) {
        match self.view {
            View::Sessions => match self.sessions.selected() {
                Some(s) if s.state() == pb::SessionState::Active => {
                    let prompt = format!("Revoke {}'s {}, {} old?", s.username, session_words(s), self.age(s));
                    let command = Command::RevokeSession { session_id: s.session_id.clone() };
                    self.confirm(prompt, command);
                }
                Some(_) => self.say("that session has already ended".into(), true),
                None => self.say("no session selected".into(), true),
            },
            View::Tokens => match self.tokens.selected() {
                Some(t) if t.state() == pb::TokenState::Active => {
                    let kind = if t.kind() == pb::TokenKind::Refresh { "refresh" } else { "access" };
                    let session = match self.sessions.get(&t.session_id) {
                        Some(s) => format!(" of the {}", session_words(s)),
                        None => String::new(),
                    };
                    let issued = relative(t.issued_at.as_ref(), self.now);
                    let prompt = format!("Revoke {}'s {kind} token{session}, issued {issued}?", t.username);
                    let command = Command::RevokeToken { token_id: t.token_id.clone() };
                    self.confirm(prompt, command);
                }
                Some(_) => self.say("that token has already ended".into(), true),
                None => self.say("no token selected".into(), true),
            },
            View::ServiceAccounts => match self.service_accounts.selected() {
                Some(a) => {
                    let prompt = format!(
                        "Revoke every token of service account {}? Its secrets keep working for new ones.",
                        account_words(a)
                    );
                    let command =
                        Command::RevokeServiceAccountTokens { client_id: a.client_id.clone(), name: a.name.clone() };
                    self.confirm(prompt, command);
                }
                None => self.say("no service account selected".into(), true),
            },
            View::Users | View::Events | View::Dashboard => self.say(
                "d revokes a session, a token or a service account's tokens: select one in Sessions, Tokens or \
                 Service accounts"
                    .into(),
                true,
            ),
        }
    }

    /// How long ago a session started: "3m".
    fn age(&self, session: &pb::Session) -> String {
        let age = crate::format::now_millis(self.now) - crate::format::millis(session.created_at.as_ref());
        crate::format::human(std::time::Duration::from_millis(age.max(0).unsigned_abs()))
    }

    /// The user of the selected row, in any view.
    fn selected_user(&self) -> Option<(String, String)> {
        let (id, name) = match self.view {
            View::Sessions => self.sessions.selected().map(|s| (&s.user_id, &s.username))?,
            View::Tokens => self.tokens.selected().map(|t| (&t.user_id, &t.username))?,
            View::Users => self.users.selected().map(|u| (&u.user_id, &u.username))?,
            View::Events => self.events.selected().map(|e| (&e.user_id, &e.username))?,
            View::Dashboard | View::ServiceAccounts => return None,
        };
        (!id.is_empty()).then(|| (id.clone(), name.clone()))
    }

    fn ask_revoke_user(&mut self) {
        match self.selected_user() {
            Some((user_id, username)) => {
                let prompt = format!("Revoke every session of {username}?");
                self.confirm(prompt, Command::RevokeUser { user_id, username });
            }
            None => self.say("the selected row names no user".into(), true),
        }
    }

    /// Asks to revoke every active session the Sessions filter matches now
    /// but the console's own, naming how many and a few of them. Without a
    /// filter it refuses: that would be every session.
    fn ask_revoke_filtered(&mut self) {
        if self.view != View::Sessions {
            return self.say("D revokes the sessions a filter matches: filter them in Sessions".into(), true);
        }
        let filter = self.sessions.filter().to_string();
        if filter.is_empty() {
            return self.say("set a filter first (/): D revokes the sessions it matches".into(), true);
        }
        let own = |s: &pb::Session| self.own_session.as_deref() == Some(s.session_id.as_str());
        let active = || self.sessions.shown().filter(|s| s.state() == pb::SessionState::Active);
        // Revoking its own session would leave the console logged out in
        // the middle of an incident.
        let kept_own = active().any(own);
        let matching: Vec<&pb::Session> = active().filter(|s| !own(s)).collect();
        if matching.is_empty() && kept_own {
            return self.say(format!("only the console's own session matches \"{filter}\"; it is kept"), true);
        }
        if matching.is_empty() {
            return self.say(format!("no active session matches \"{filter}\""), true);
        }
        const SAMPLE: usize = 3;
        let sample: Vec<String> = matching
            .iter()
            .take(SAMPLE)
            .map(|s| {
                let device = if s.device_name.is_empty() { "no device name" } else { &s.device_name };
                format!("{} ({device}, {})", s.username, s.client_address)
            })
            .collect();
        let more = matching.len().saturating_sub(SAMPLE);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let kept = if kept_own { " (your own session is kept)" } else { "" };
        let prompt = format!(
            "Revoke {} active session{} matching \"{filter}\"? {}{more}{kept}",
            matching.len(),
            if matching.len() == 1 { "" } else { "s" },
            sample.join(", ")
        );
        let session_ids = matching.iter().map(|s| s.session_id.clone()).collect();
        self.confirm(prompt, Command::RevokeSessions { session_ids, filter });
    }

    fn ask_toggle_disabled(&mut self) {
        if self.view == View::ServiceAccounts {
            return self.ask_toggle_account_disabled();
        }
        let Some((user_id, username)) = self.selected_user() else {
            return self.say("the selected row names no user".into(), true);
        };
        let disabled = self.users.get(&user_id).is_some_and(|u| u.disabled);
        let (verb, disable) = if disabled { ("Enable", false) } else { ("Disable", true) };
        let prompt = if disable {
            format!("{verb} {username}? Every session of the user ends at once.")
        } else {
            format!("{verb} {username}?")
        };
        self.confirm(prompt, Command::SetDisabled { user_id, username, disabled: disable });
    }

    /// Asks to disable or enable the selected service account.
    fn ask_toggle_account_disabled(&mut self) {
        let Some(account) = self.service_accounts.selected() else {
            return self.say("no service account selected".into(), true);
        };
        let disable = !account.disabled;
        let prompt = if disable {
            format!(
                "Disable service account {}? Its tokens fail at once and it gets no new ones.",
                account_words(account)
            )
        } else {
            format!("Enable service account {}?", account_words(account))
        };
        let command = Command::SetServiceAccountDisabled {
            client_id: account.client_id.clone(),
            name: account.name.clone(),
            disabled: disable,
        };
        self.confirm(prompt, command);
    }

    /// Applies news from the backend.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Sessions(rows) => self.sessions.upsert(rows),
            Update::Tokens(rows) => self.tokens.upsert(rows),
            Update::Users(rows) => self.users.upsert(rows),
            Update::UserGone(user_id) => {
                self.users.modify(&user_id, |u| u.disabled = true);
            }
            Update::ServiceAccounts(rows) => self.service_accounts.upsert(rows),
            Update::ServiceAccountGone(client_id) => self.service_accounts.retain(|a| a.client_id != client_id),
            Update::History(events) => {
                // The Dashboard's 15-minute lists and revocation rate count
                // what happened before the console started too.
                for event in &events {
                    self.dashboard.event(event);
                }
                self.events.upsert(events.into_iter().map(|mut e| without_records(&mut e)));
                self.events.truncate_front(MAX_EVENTS);
            }
            Update::Event(event) => {
                self.dashboard.event(&event);
                self.apply_event(event);
            }
            Update::Stats(stats, at) => self.dashboard.stats(stats, at),
            Update::Connection(state) => self.connection = state,
            Update::Loading(progress) => {
                if progress.is_none() {
                    // Loaded: the lists now grow by single rows.
                    self.sessions.shrink_to_fit();
                    self.tokens.shrink_to_fit();
                    self.users.shrink_to_fit();
                    self.service_accounts.shrink_to_fit();
                }
                self.loading = progress;
            }
            Update::OwnSession(session_id) => self.own_session = Some(session_id),
            Update::Status { text, error } => self.say(text, error),
        }
    }

    /// Reflects an event at once, before any refetch: a revocation done
    /// elsewhere turns its rows red immediately, and a login shows its
    /// session and tokens from the event alone.
    fn apply_event(&mut self, mut event: pb::Event) {
        self.apply_changes(&event);
        self.apply_records(&event);
        self.events.upsert([without_records(&mut event)]);
        self.events.truncate_front(MAX_EVENTS);
    }

    /// The rows an event changes without carrying them.
    fn apply_changes(&mut self, event: &pb::Event) {
        use pb::EventKind as K;
        let at = event.occurred_at;
        match event.kind() {
            K::SessionRevoked | K::SessionExpired => {
                let (state, token_state) = if event.kind() == K::SessionRevoked {
                    (pb::SessionState::Revoked, pb::TokenState::Revoked)
                } else {
                    (pb::SessionState::Expired, pb::TokenState::Expired)
                };
                let reason = event.detail.clone();
                self.sessions.modify(&event.session_id, |s| {
                    s.set_state(state);
                    if state == pb::SessionState::Revoked {
                        s.revoked_at = at;
                        s.revoke_reason = reason;
                    }
                });
                let session_id = event.session_id.clone();
                self.tokens.modify_where(
                    |t| t.session_id == session_id && t.state() == pb::TokenState::Active,
                    |t| t.set_state(token_state),
                );
            }
            K::SessionRefreshed => {
                self.sessions.modify(&event.session_id, |s| s.last_seen_at = at);
            }
            K::TokenRevoked => {
                self.tokens.modify(&event.token_id, |t| {
                    t.set_state(pb::TokenState::Revoked);
                    t.revoked_at = at;
                });
            }
            K::UserDisabled | K::UserEnabled => {
                let disabled = event.kind() == K::UserDisabled;
                self.users.modify(&event.user_id, |u| u.disabled = disabled);
            }
            // The flag shows at once; the refetch the event also causes
            // brings the rest of the record.
            K::ServiceAccountDisabled | K::ServiceAccountEnabled => {
                let disabled = event.kind() == K::ServiceAccountDisabled;
                self.service_accounts.modify(&event.client_id, |a| a.disabled = disabled);
            }
            K::ServiceAccountDeleted => {
                let client_id = event.client_id.clone();
                self.service_accounts.retain(|a| a.client_id != client_id);
            }
            _ => {}
        }
    }

    /// Shows the session and token an event carries (a login, a refresh,
    /// an issued token) without asking the server for them; the worker
    /// fetches only what events without their records announce.
    fn apply_records(&mut self, event: &pb::Event) {
        if let Some(session) = &event.session {
            let new = self.sessions.get(&session.session_id).is_none();
            if new && session.state() == pb::SessionState::Active {
                // The user's count, as a fetch of the user would now say.
                self.users.modify(&session.user_id, |u| u.active_sessions += 1);
            }
            self.sessions.upsert([session.as_ref().clone()]);
        }
        if let Some(token) = &event.token {
            if event.kind() == pb::EventKind::SessionRefreshed && token.kind() == pb::TokenKind::Refresh {
                // A session has one refresh token that may be used: the new
                // one supersedes the one presented.
                let (session_id, token_id, at) = (&token.session_id, &token.token_id, event.occurred_at);
                self.tokens.modify_where(
                    |t| {
                        &t.session_id == session_id
                            && &t.token_id != token_id
                            && t.kind() == pb::TokenKind::Refresh
                            && t.state() == pb::TokenState::Active
                    },
                    |t| {
                        t.set_state(pb::TokenState::Rotated);
                        t.revoked_at = at;
                    },
                );
            }
            self.tokens.upsert([token.as_ref().clone()]);
        }
    }
}

/// An event as the Events view keeps it: the session and token it may
/// carry are shown in their own views, and ten thousand copies of them
/// would only cost memory.
fn without_records(event: &mut pb::Event) -> pb::Event {
    event.session = None;
    event.token = None;
    std::mem::take(event)
}

/// A session as a person recognises it: "session on firefox from
/// 10.0.0.7:5000".
fn session_words(s: &pb::Session) -> String {
    let device = if s.device_name.is_empty() { String::new() } else { format!(" on {}", s.device_name) };
    format!("session{device} from {}", s.client_address)
}

/// A service account as a person recognises it: its name and the tail of
/// its client id (two accounts may share a name).
fn account_words(a: &pb::ServiceAccount) -> String {
    format!("{} (client …{})", a.name, crate::format::short_id(&a.client_id))
}

/// What the App does to any table, whatever its row type.
pub trait TableControl {
    /// See [`Table::move_by`].
    fn move_by(&mut self, delta: isize);
    /// See [`Table::jump`].
    fn jump(&mut self, to_end: bool);
    /// See [`Table::cycle_sort`].
    fn cycle_sort(&mut self);
    /// See [`Table::reverse_sort`].
    fn reverse_sort(&mut self);
    /// See [`Table::set_filter`].
    fn set_filter(&mut self, filter: String);
    /// See [`Table::scroll_to_selection`].
    fn scroll_to_selection(&mut self, height: usize);
}

impl<T: Record> TableControl for Table<T> {
    fn move_by(&mut self, delta: isize) {
        Table::move_by(self, delta);
    }
    fn jump(&mut self, to_end: bool) {
        Table::jump(self, to_end);
    }
    fn cycle_sort(&mut self) {
        Table::cycle_sort(self);
    }
    fn reverse_sort(&mut self) {
        Table::reverse_sort(self);
    }
    fn set_filter(&mut self, filter: String) {
        Table::set_filter(self, filter);
    }
    fn scroll_to_selection(&mut self, height: usize) {
        Table::scroll_to_selection(self, height);
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::*;
    use crate::{fixtures, hidden::Hidden, keymap::from_key};

    fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
        let action = from_key(&app.mode, KeyEvent::new(code, KeyModifiers::NONE));
        app.update(action)
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            key(app, KeyCode::Char(c));
        }
    }

    fn loaded() -> App {
        let mut app = App::new("http://127.0.0.1:50051", "admin", fixtures::now());
        let sessions: Vec<_> =
            ["alice", "bob", "carol"].iter().enumerate().map(|(i, u)| fixtures::session(i + 1, u)).collect();
        let tokens: Vec<_> = sessions.iter().enumerate().map(|(i, s)| fixtures::token(i + 1, s)).collect();
        app.update(Action::Backend(Update::Users(vec![
            fixtures::user("alice", &["admin"], 1),
            fixtures::user("bob", &[], 1),
        ])));
        app.update(Action::Backend(Update::Sessions(sessions)));
        app.update(Action::Backend(Update::Tokens(tokens)));
        app
    }

    #[test]
    fn tab_and_shift_tab_cycle_through_the_six_views() {
        let mut app = loaded();
        let mut seen = vec![app.view];
        for _ in 0..6 {
            key(&mut app, KeyCode::Tab);
            seen.push(app.view);
        }
        assert_eq!(
            seen,
            [
                View::Sessions,
                View::Tokens,
                View::Users,
                View::Events,
                View::Dashboard,
                View::ServiceAccounts,
                View::Sessions
            ]
        );
        key(&mut app, KeyCode::BackTab);
        assert_eq!(app.view, View::ServiceAccounts);
    }

    #[test]
    fn number_keys_jump_to_a_view_and_only_the_dashboard_samples_stats() {
        let mut app = loaded();
        assert_eq!(app.view, View::Sessions, "the console opens on Sessions");
        assert!(key(&mut app, KeyCode::Char('3')).is_empty());
        assert_eq!(app.view, View::Users);
        assert_eq!(key(&mut app, KeyCode::Char('5')), vec![Command::WatchStats { open: true }]);
        assert_eq!(app.view, View::Dashboard);
        assert!(key(&mut app, KeyCode::Char('5')).is_empty(), "already open");
        assert_eq!(key(&mut app, KeyCode::BackTab), vec![Command::WatchStats { open: false }]);
        assert_eq!(app.view, View::Events);
        key(&mut app, KeyCode::Char('1'));
        assert_eq!(app.view, View::Sessions);
        key(&mut app, KeyCode::Char('4'));
        assert_eq!(app.view, View::Events);
    }

    #[test]
    fn capital_d_revokes_exactly_the_active_sessions_the_filter_matches() {
        let mut app = loaded();
        let mut more: Vec<_> = (10..15).map(|n| fixtures::session(n, "mallory")).collect();
        more[4].set_state(pb::SessionState::Revoked);
        app.update(Action::Backend(Update::Sessions(more.clone())));
        // Without a filter, D refuses: that would be every session.
        assert!(key(&mut app, KeyCode::Char('D')).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.status.as_ref().is_some_and(|s| s.error && s.text.contains("filter")), "{:?}", app.status);
        key(&mut app, KeyCode::Char('/'));
        typed(&mut app, "mallory");
        key(&mut app, KeyCode::Enter);
        key(&mut app, KeyCode::Char('D'));
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked: {:?}", app.status) };
        assert!(pending.prompt.starts_with("Revoke 4 active sessions matching \"mallory\"?"), "{}", pending.prompt);
        assert!(pending.prompt.contains("mallory (device-10, 10.0.0.10:40010)"), "{}", pending.prompt);
        assert!(pending.prompt.ends_with("and 1 more"), "{}", pending.prompt);
        let commands = key(&mut app, KeyCode::Char('y'));
        let expected: Vec<String> = more[..4].iter().map(|s| s.session_id.clone()).collect();
        assert_eq!(commands, vec![Command::RevokeSessions { session_ids: expected, filter: "mallory".into() }]);
    }

    #[test]
    fn capital_d_never_includes_the_consoles_own_session() {
        let mut app = loaded();
        let mut consoles: Vec<_> = (20..23).map(|n| fixtures::session(n, "admin")).collect();
        for console in &mut consoles {
            console.device_name = "sigil-console".into();
        }
        app.update(Action::Backend(Update::Sessions(consoles.clone())));
        app.update(Action::Backend(Update::OwnSession(consoles[1].session_id.clone())));
        key(&mut app, KeyCode::Char('/'));
        typed(&mut app, "sigil-console");
        key(&mut app, KeyCode::Enter);
        key(&mut app, KeyCode::Char('D'));
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked: {:?}", app.status) };
        assert!(
            pending.prompt.starts_with("Revoke 2 active sessions matching \"sigil-console\"?"),
            "{}",
            pending.prompt
        );
        assert!(pending.prompt.ends_with("(your own session is kept)"), "{}", pending.prompt);
        let commands = key(&mut app, KeyCode::Char('y'));
        let expected = vec![consoles[0].session_id.clone(), consoles[2].session_id.clone()];
        assert_eq!(commands, vec![Command::RevokeSessions { session_ids: expected, filter: "sigil-console".into() }]);
        // A filter that matches only the console's own session revokes nothing.
        key(&mut app, KeyCode::Char('/'));
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Char('/'));
        typed(&mut app, &consoles[1].client_address);
        key(&mut app, KeyCode::Enter);
        assert!(key(&mut app, KeyCode::Char('D')).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        let status = app.status.as_ref().expect("a reason");
        assert!(status.error && status.text.contains("own session"), "{status:?}");
    }

    #[test]
    fn forms_create_users_reset_passwords_and_edit_roles() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('n'));
        assert!(matches!(&app.mode, Mode::Form(f) if f.title == "New user"));
        typed(&mut app, "dave");
        key(&mut app, KeyCode::Enter);
        typed(&mut app, "pw-q1");
        key(&mut app, KeyCode::Enter);
        typed(&mut app, "ops");
        let commands = key(&mut app, KeyCode::Enter);
        assert!(
            matches!(&commands[..], [Command::CreateUser { username, password, roles }]
                if username == "dave" && password.expose() == "pw-q1" && roles == &["ops".to_string()]),
            "{commands:?}"
        );
        assert_eq!(app.mode, Mode::Normal);
        // p and R work on the selected row's user (alice, in Sessions).
        key(&mut app, KeyCode::Char('p'));
        typed(&mut app, "new");
        key(&mut app, KeyCode::Enter);
        typed(&mut app, "new");
        let commands = key(&mut app, KeyCode::Enter);
        assert!(matches!(&commands[..], [Command::SetPassword { username, .. }] if username == "alice"));
        key(&mut app, KeyCode::Char('R'));
        let Mode::Form(form) = &app.mode else { panic!("no roles form") };
        assert_eq!(form.fields[0].value.expose(), "admin");
        typed(&mut app, ",billing");
        let commands = key(&mut app, KeyCode::Enter);
        assert!(matches!(&commands[..], [Command::SetRoles { roles, .. }] if roles == &["admin", "billing"]));
        // Esc leaves a form without sending anything.
        key(&mut app, KeyCode::Char('n'));
        typed(&mut app, "q");
        assert!(key(&mut app, KeyCode::Esc).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert!(!app.should_quit, "q typed into a form does not quit");
    }

    /// `loaded()` with two service accounts, in their view.
    fn with_accounts() -> App {
        let mut app = loaded();
        app.update(Action::Backend(Update::ServiceAccounts(vec![
            fixtures::service_account(1, "billing-worker", &[(3, None, Some(2))]),
            fixtures::service_account(2, "billing-worker", &[]),
        ])));
        app
    }

    #[test]
    fn six_opens_service_accounts_and_loads_them_again_each_time() {
        let mut app = with_accounts();
        assert_eq!(app.view, View::Sessions, "the console still opens on Sessions");
        assert_eq!(key(&mut app, KeyCode::Char('6')), vec![Command::LoadServiceAccounts]);
        assert_eq!(app.view, View::ServiceAccounts);
        assert!(key(&mut app, KeyCode::Char('6')).is_empty(), "staying in the view reloads nothing");
        // Tab reaches it too: from the Dashboard, the sampling stops and the
        // accounts load.
        key(&mut app, KeyCode::Char('5'));
        assert_eq!(
            key(&mut app, KeyCode::Tab),
            vec![Command::WatchStats { open: false }, Command::LoadServiceAccounts]
        );
        assert_eq!(app.view, View::ServiceAccounts);
        assert_eq!(app.service_accounts.len(), 2);
        key(&mut app, KeyCode::Char('/'));
        typed(&mut app, "c00000000002");
        assert_eq!(app.service_accounts.len(), 1, "the filter finds an account by its client id's tail");
    }

    #[test]
    fn d_revokes_the_selected_accounts_tokens_after_naming_it() {
        let mut app = with_accounts();
        key(&mut app, KeyCode::Char('6'));
        key(&mut app, KeyCode::Down);
        assert!(key(&mut app, KeyCode::Char('d')).is_empty());
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked") };
        // Both are called billing-worker: the client id's tail tells them apart.
        assert_eq!(
            pending.prompt,
            "Revoke every token of service account billing-worker (client …00000002)? Its secrets keep working \
             for new ones."
        );
        assert!(key(&mut app, KeyCode::Char('n')).is_empty(), "anything but y cancels");
        key(&mut app, KeyCode::Char('d'));
        let client_id = app.service_accounts.selected().map(|a| a.client_id.clone()).unwrap_or_default();
        assert_eq!(
            key(&mut app, KeyCode::Char('y')),
            vec![Command::RevokeServiceAccountTokens { client_id, name: "billing-worker".into() }]
        );
    }

    #[test]
    fn x_disables_the_selected_account_and_its_event_shows_it_then_x_enables() {
        let mut app = with_accounts();
        key(&mut app, KeyCode::Char('6'));
        key(&mut app, KeyCode::Char('x'));
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked") };
        assert_eq!(
            pending.prompt,
            "Disable service account billing-worker (client …00000001)? Its tokens fail at once and it gets no new \
             ones."
        );
        let account = app.service_accounts.selected().cloned().expect("an account");
        let commands = key(&mut app, KeyCode::Char('y'));
        assert_eq!(
            commands,
            vec![Command::SetServiceAccountDisabled {
                client_id: account.client_id.clone(),
                name: account.name.clone(),
                disabled: true
            }]
        );
        let event = pb::Event {
            sequence: 20,
            kind: pb::EventKind::ServiceAccountDisabled.into(),
            client_id: account.client_id.clone(),
            ..Default::default()
        };
        app.update(Action::Backend(Update::Event(event)));
        let row = app.service_accounts.get(&account.client_id).expect("row");
        assert!(row.disabled);
        assert_eq!(row.style(), ratatui::style::Style::new().fg(ratatui::style::Color::Red));
        key(&mut app, KeyCode::Char('x'));
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked") };
        assert_eq!(pending.prompt, "Enable service account billing-worker (client …00000001)?");
        assert!(matches!(
            &key(&mut app, KeyCode::Char('y'))[..],
            [Command::SetServiceAccountDisabled { disabled: false, .. }]
        ));
        // u names a user, and an account is none.
        assert!(key(&mut app, KeyCode::Char('u')).is_empty());
        assert!(app.status.as_ref().is_some_and(|s| s.error));
    }

    #[test]
    fn a_deleted_account_leaves_the_list() {
        let mut app = with_accounts();
        let gone = app.service_accounts.all()[0].client_id.clone();
        let event = pb::Event {
            kind: pb::EventKind::ServiceAccountDeleted.into(),
            client_id: gone.clone(),
            ..Default::default()
        };
        app.update(Action::Backend(Update::Event(event)));
        assert!(app.service_accounts.get(&gone).is_none());
        app.update(Action::Backend(Update::ServiceAccountGone(app.service_accounts.all()[0].client_id.clone())));
        assert!(app.service_accounts.is_empty());
    }

    #[test]
    fn movement_stays_within_the_rows() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('j'));
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Down);
        assert_eq!(app.sessions.selected().map(|s| s.username.as_str()), Some("carol"));
        key(&mut app, KeyCode::Char('g'));
        assert_eq!(app.sessions.selected_index(), 0);
        key(&mut app, KeyCode::Char('G'));
        assert_eq!(app.sessions.selected_index(), 2);
        key(&mut app, KeyCode::Char('k'));
        assert_eq!(app.sessions.selected_index(), 1);
    }

    #[test]
    fn filter_is_case_insensitive_enter_keeps_it_and_esc_clears_it() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('/'));
        assert_eq!(app.mode, Mode::Filter);
        typed(&mut app, "BOB");
        assert_eq!(app.sessions.len(), 1);
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.sessions.len(), 1, "Enter keeps the filter");
        assert_eq!(app.sessions.selected().map(|s| s.username.as_str()), Some("bob"));
        key(&mut app, KeyCode::Char('/'));
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.sessions.len(), 3);
    }

    #[test]
    fn sort_cycles_through_the_columns() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sessions.sort(), Some(0));
        key(&mut app, KeyCode::Char('s'));
        key(&mut app, KeyCode::Char('s'));
        key(&mut app, KeyCode::Char('s'));
        key(&mut app, KeyCode::Char('s'));
        // Column 4 is "Created": newest first, i.e. session 1 (1 minute ago).
        assert_eq!(app.sessions.sort(), Some(4));
        assert_eq!(app.sessions.selected().map(|s| s.username.as_str()), Some("alice"));
    }

    #[test]
    fn revoking_asks_first_and_only_y_sends_the_command() {
        let mut app = loaded();
        key(&mut app, KeyCode::Down);
        assert!(key(&mut app, KeyCode::Char('d')).is_empty());
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked") };
        assert!(pending.prompt.contains("bob"), "{}", pending.prompt);
        assert!(key(&mut app, KeyCode::Char('n')).is_empty(), "anything but y cancels");
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.status.as_ref().map(|s| s.text.as_str()), Some("cancelled"));

        key(&mut app, KeyCode::Char('d'));
        let commands = key(&mut app, KeyCode::Char('y'));
        let bob = app.sessions.selected().map(|s| s.session_id.clone()).unwrap_or_default();
        assert_eq!(commands, vec![Command::RevokeSession { session_id: bob }]);
    }

    #[test]
    fn capital_k_asks_for_the_word_before_an_emergency_key_rotation() {
        let mut app = loaded();
        assert!(key(&mut app, KeyCode::Char('K')).is_empty());
        let Mode::Form(form) = &app.mode else { panic!("no confirmation asked") };
        assert!(form.title.contains("Emergency key rotation"), "{}", form.title);
        assert!(key(&mut app, KeyCode::Esc).is_empty(), "Esc cancels");
        assert_eq!(app.mode, Mode::Normal);
        key(&mut app, KeyCode::Char('K'));
        // One key is not enough: y and Enter do not rotate.
        typed(&mut app, "y");
        assert!(key(&mut app, KeyCode::Enter).is_empty());
        assert!(matches!(&app.mode, Mode::Form(f) if f.error.is_some()));
        key(&mut app, KeyCode::Backspace);
        typed(&mut app, "rotate");
        assert_eq!(key(&mut app, KeyCode::Enter), vec![Command::EmergencyKeyRotation]);
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn u_revokes_the_user_of_the_row_and_x_toggles_the_user() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('u'));
        let commands = key(&mut app, KeyCode::Char('y'));
        assert!(matches!(&commands[..], [Command::RevokeUser { username, .. }] if username == "alice"));
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Char('x'));
        let commands = key(&mut app, KeyCode::Char('y'));
        assert!(matches!(&commands[..], [Command::SetDisabled { disabled: true, .. }]), "{commands:?}");
    }

    #[test]
    fn a_revocation_event_turns_rows_red_without_a_key_press() {
        let mut app = loaded();
        let bob = app.sessions.all()[1].clone();
        let event = fixtures::event(5, pb::EventKind::SessionRevoked, &bob, "stolen laptop");
        app.update(Action::Backend(Update::Event(event)));
        let row = app.sessions.get(&bob.session_id).expect("row");
        assert_eq!(row.state(), pb::SessionState::Revoked);
        assert_eq!(row.revoke_reason, "stolen laptop");
        assert_eq!(row.style(), ratatui::style::Style::new().fg(ratatui::style::Color::Red));
        let token = app.tokens.all().iter().find(|t| t.session_id == bob.session_id).expect("token");
        assert_eq!(token.state(), pb::TokenState::Revoked);
        assert_eq!(app.events.len(), 1);
        // Revoking an ended session is refused locally, with a reason.
        app.sessions.move_by(1);
        key(&mut app, KeyCode::Char('d'));
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.status.as_ref().is_some_and(|s| s.error));
    }

    #[test]
    fn confirm_prompts_name_what_a_person_recognises() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('G'));
        key(&mut app, KeyCode::Char('d'));
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked") };
        assert_eq!(pending.prompt, "Revoke carol's session on device-3 from 10.0.0.3:40003, 3m old?");
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Char('d'));
        let Mode::Confirm(pending) = &app.mode else { panic!("no confirmation asked") };
        assert_eq!(
            pending.prompt,
            "Revoke alice's access token of the session on device-1 from 10.0.0.1:40001, issued 2m ago?"
        );
    }

    #[test]
    fn esc_closes_the_detail_pane_and_keeps_the_selection() {
        let mut app = loaded();
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Enter);
        assert!(app.detail);
        key(&mut app, KeyCode::Esc);
        assert!(!app.detail, "Esc closes the detail pane");
        assert_eq!(app.sessions.selected_index(), 1, "and the selection stays");
        // With the pane closed, Esc clears a kept filter, as before.
        key(&mut app, KeyCode::Char('/'));
        typed(&mut app, "bob");
        key(&mut app, KeyCode::Enter);
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.sessions.len(), 3);
    }

    #[test]
    fn capital_s_reverses_the_sort() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sessions.sort(), Some(0));
        assert!(!app.sessions.sort_reversed());
        assert_eq!(app.sessions.selected().map(|s| s.username.as_str()), Some("alice"));
        key(&mut app, KeyCode::Char('S'));
        assert!(app.sessions.sort_reversed());
        key(&mut app, KeyCode::Char('g'));
        assert_eq!(app.sessions.selected().map(|s| s.username.as_str()), Some("carol"));
        // The next column starts in its own natural order again.
        key(&mut app, KeyCode::Char('s'));
        assert!(!app.sessions.sort_reversed());
    }

    #[test]
    fn a_login_event_with_its_records_shows_the_session_its_tokens_and_the_count() {
        let mut app = loaded();
        let dave = fixtures::session(7, "bob");
        let mut refresh = fixtures::token(70, &dave);
        refresh.set_kind(pb::TokenKind::Refresh);
        let access = fixtures::token(71, &dave);
        let mut created = fixtures::event(10, pb::EventKind::SessionCreated, &dave, "from 10.0.0.7:40007 (device-7)");
        created.session = Some(Box::new(dave.clone()));
        created.token = Some(Box::new(refresh.clone()));
        let mut issued = fixtures::event(11, pb::EventKind::TokenIssued, &dave, "");
        issued.token = Some(Box::new(access.clone()));
        app.update(Action::Backend(Update::Event(created.clone())));
        app.update(Action::Backend(Update::Event(issued)));
        assert_eq!(app.sessions.get(&dave.session_id), Some(&dave));
        assert_eq!(app.tokens.get(&refresh.token_id), Some(&refresh));
        assert_eq!(app.tokens.get(&access.token_id), Some(&access));
        let bob = app.users.get(&dave.user_id).expect("bob");
        assert_eq!(bob.active_sessions, 2, "one more active session");
        // The same event again (a replay after a reconnect) counts nothing.
        app.update(Action::Backend(Update::Event(created)));
        assert_eq!(app.users.get(&dave.user_id).map(|u| u.active_sessions), Some(2));
        // The Events view keeps the event, not a copy of the records.
        assert!(app.events.all().iter().all(|e| e.session.is_none() && e.token.is_none()));
    }

    #[test]
    fn a_refresh_event_rotates_the_shown_refresh_token() {
        let mut app = loaded();
        let alice = app.sessions.all()[0].clone();
        let mut first = fixtures::token(80, &alice);
        first.set_kind(pb::TokenKind::Refresh);
        app.update(Action::Backend(Update::Tokens(vec![first.clone()])));
        let mut next = fixtures::token(81, &alice);
        next.set_kind(pb::TokenKind::Refresh);
        let mut refreshed = fixtures::event(12, pb::EventKind::SessionRefreshed, &alice, "");
        refreshed.session = Some(Box::new(alice.clone()));
        refreshed.token = Some(Box::new(next.clone()));
        app.update(Action::Backend(Update::Event(refreshed)));
        assert_eq!(app.tokens.get(&first.token_id).map(|t| t.state()), Some(pb::TokenState::Rotated));
        assert_eq!(app.tokens.get(&next.token_id).map(|t| t.state()), Some(pb::TokenState::Active));
        let access = fixtures::token(1, &alice).token_id;
        assert_eq!(app.tokens.get(&access).map(|t| t.state()), Some(pb::TokenState::Active), "access tokens stay");
    }

    #[test]
    fn history_goes_into_the_event_log_without_touching_the_rows() {
        let mut app = loaded();
        let bob = app.sessions.all()[1].clone();
        let old = fixtures::event(3, pb::EventKind::SessionRevoked, &bob, "long ago");
        app.update(Action::Backend(Update::History(vec![old])));
        assert_eq!(app.events.len(), 1);
        assert_eq!(app.sessions.get(&bob.session_id).map(|s| s.state()), Some(pb::SessionState::Active));
    }

    #[test]
    fn a_toggles_ended_records_in_and_out() {
        let mut app = loaded();
        let commands = key(&mut app, KeyCode::Char('a'));
        assert_eq!(commands, vec![Command::IncludeInactive(true)]);
        assert!(app.include_inactive);
        let mut ended = fixtures::session(9, "dave");
        ended.set_state(pb::SessionState::Revoked);
        app.update(Action::Backend(Update::Sessions(vec![ended])));
        assert_eq!(app.sessions.len(), 4);
        let commands = key(&mut app, KeyCode::Char('a'));
        assert_eq!(commands, vec![Command::IncludeInactive(false)]);
        assert_eq!(app.sessions.len(), 3, "ended sessions leave again");
    }

    #[test]
    fn the_consoles_own_session_ending_is_said_and_l_offers_a_new_login() {
        let mut app = loaded();
        app.update(Action::Backend(Update::Connection(ConnectionState::LoggedOut)));
        key(&mut app, KeyCode::Char('L'));
        assert_eq!(app.mode, Mode::Password(Hidden::default()));
        typed(&mut app, "s3cretx");
        key(&mut app, KeyCode::Backspace);
        assert!(!format!("{:?}", app.mode).contains("s3cret"), "the password never shows in Debug");
        let commands = key(&mut app, KeyCode::Enter);
        assert_eq!(commands, vec![Command::Login { password: Hidden::from("s3cret") }]);
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn help_opens_and_any_key_closes_it_and_q_quits() {
        let mut app = loaded();
        key(&mut app, KeyCode::Char('?'));
        assert_eq!(app.mode, Mode::Help);
        key(&mut app, KeyCode::Char('q'));
        assert_eq!(app.mode, Mode::Normal);
        assert!(!app.should_quit, "q closes help first");
        key(&mut app, KeyCode::Char('q'));
        assert!(app.should_quit);
        let mut app = loaded();
        app.update(from_key(&Mode::Normal, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(app.should_quit);
    }
}
