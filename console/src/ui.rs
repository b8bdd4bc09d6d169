//! Drawing: the header (server, user, connection), the view's table with
//! only its visible rows, the detail pane, the status line, the footer of
//! keys, and the help and confirm pop-ups. Drawing never does network work.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Tabs, Wrap},
};
use sigil_proto::pb;

use crate::{
    app::{App, View},
    dashboard_ui,
    form::Form,
    format::{relative, short_id, thousands},
    keymap, layout,
    messages::{ConnectionState, List, Loading},
    mode::Mode,
    records::{Record, event_detail, event_kind, session_state},
    table,
};

/// The marker of the selected row (its width is the same in characters
/// and in bytes' count of `chars`, which is what the layout needs).
const HIGHLIGHT: &str = "▶ ";

/// Draws the whole console. It only reads the state: what drawing needs
/// to know beforehand (the page size, the scroll offsets) the state machine
/// has worked out from the terminal's size ([`crate::layout`]).
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let areas = layout::areas(frame.area(), app.detail);
    draw_header(frame, areas.header, app);
    draw_tabs(frame, areas.tabs, app);
    let (main, now) = (areas.table, app.now);
    let (sessions, tokens) =
        if app.include_inactive { ("Sessions, ended too", "Tokens, ended too") } else { ("Sessions", "Tokens") };
    // The list still loading in the background says how far it has come.
    let loading = |list: List| match &app.loading {
        Some(progress) if progress.list == list => format!(" · {}", loading_text(progress)),
        _ => String::new(),
    };
    match app.view {
        View::Sessions => draw_table(frame, main, &app.sessions, now, sessions, &loading(List::Sessions)),
        View::Tokens => draw_table(frame, main, &app.tokens, now, tokens, &loading(List::Tokens)),
        View::Users => draw_table(frame, main, &app.users, now, "Users", &loading(List::Users)),
        View::Events => draw_table(frame, main, &app.events, now, "Events (newest first)", ""),
        View::Dashboard => dashboard_ui::draw(frame, main, &app.dashboard, now),
        View::ServiceAccounts => draw_table(frame, main, &app.service_accounts, now, "Service accounts", ""),
    }
    if let Some(area) = areas.detail {
        draw_detail(frame, area, app);
    }
    draw_status(frame, areas.status, app);
    draw_footer(frame, areas.footer, app);
    match &app.mode {
        Mode::Help => draw_help(frame),
        Mode::Confirm(pending) => draw_confirm(frame, &pending.prompt),
        Mode::Password(password) => draw_password(frame, app, password.len()),
        Mode::Form(form) => draw_form(frame, form),
        _ => {}
    }
}

/// "loading 12,000/100,000": rows received of the rows the server counted.
fn loading_text(progress: &Loading) -> String {
    match progress.total {
        Some(total) => format!("loading {}/{}", thousands(progress.loaded), thousands(total.max(progress.loaded))),
        None => format!("loading {}…", thousands(progress.loaded)),
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let connection = match &app.connection {
        ConnectionState::Connecting => Span::styled("● connecting", Style::new().fg(Color::Yellow)),
        ConnectionState::Live => Span::styled("● live", Style::new().fg(Color::Green)),
        ConnectionState::Reconnecting { reason, retry_in } => {
            Span::styled(format!("● stream lost ({reason}); retrying in {retry_in}s"), Style::new().fg(Color::Red))
        }
        ConnectionState::LoggedOut => {
            Span::styled("● session ended · L log in", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
        }
    };
    let line = Line::from(vec![
        Span::styled(" Sigil console ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("│ {} │ {} │ ", app.server, app.username)),
        connection,
    ]);
    frame.render_widget(Paragraph::new(line).style(Style::new().bg(Color::Black)), area);
}

fn draw_tabs(frame: &mut Frame<'_>, area: Rect, app: &App) {
    // On a narrow terminal the long titles give way to short ones, then
    // the counts, so that every view's tab stays visible.
    let titles = |short: bool, counted: bool| -> Vec<String> {
        View::ALL
            .iter()
            .map(|v| {
                let title = if short { v.short_title() } else { v.title() };
                match tab_count(app, *v).filter(|_| counted) {
                    Some(n) => format!("{title} ({n})"),
                    None => title.to_string(),
                }
            })
            .collect()
    };
    // Each tab is padded by a space on either side, and a divider between.
    let width = |titles: &[String]| titles.iter().map(|t| t.chars().count() + 3).sum::<usize>();
    let fits = |titles: &Vec<String>| width(titles) <= usize::from(area.width);
    let titles =
        [titles(false, true), titles(true, true)].into_iter().find(fits).unwrap_or_else(|| titles(true, false));
    let selected = View::ALL.iter().position(|v| *v == app.view).unwrap_or(0);
    let tabs = Tabs::new(titles).select(selected).highlight_style(Style::new().reversed()).divider("│");
    frame.render_widget(tabs, area);
}

/// The number of rows a view's tab shows, if it has rows.
fn tab_count(app: &App, view: View) -> Option<usize> {
    Some(match view {
        View::Sessions => app.sessions.len(),
        View::Tokens => app.tokens.len(),
        View::Users => app.users.len(),
        View::Events => app.events.len(),
        View::ServiceAccounts => app.service_accounts.len(),
        // The Dashboard has no rows to count.
        View::Dashboard => return None,
    })
}

fn draw_table<T: Record>(
    frame: &mut Frame<'_>,
    area: Rect,
    rows: &table::Table<T>,
    now: std::time::SystemTime,
    title: &str,
    loading: &str,
) {
    let height = layout::table_rows(area);
    let total = rows.len();
    let position = if total == 0 { 0 } else { rows.selected_index() + 1 };
    let marker = rows.sort_marker();
    let sort =
        marker.map(|(c, arrow)| format!(" · sorted by {} {arrow}", T::COLUMNS[c].to_lowercase())).unwrap_or_default();
    let filter = if rows.filter().is_empty() { String::new() } else { format!(" · filter \"{}\"", rows.filter()) };
    let block =
        Block::default().borders(Borders::ALL).title(format!(" {title} {position}/{total}{sort}{filter}{loading} "));
    let (visible, selected) = rows.window(height);
    // Only the rows on screen are turned into widgets.
    // Inside the borders and beside the selection marker.
    let columns = layout::columns(T::WIDTHS, T::DROP_ORDER, area.width.saturating_sub(2 + HIGHLIGHT.len() as u16));
    let body: Vec<Row<'_>> = visible
        .iter()
        .map(|r| {
            let mut cells = r.cells(now);
            Row::new(columns.iter().map(|(c, _)| Cell::from(std::mem::take(&mut cells[*c])))).style(r.style())
        })
        .collect();
    let header = Row::new(columns.iter().map(|(c, _)| match marker {
        Some((sorted, arrow)) if sorted == *c => Cell::from(format!("{} {arrow}", T::COLUMNS[*c])),
        _ => Cell::from(T::COLUMNS[*c]),
    }))
    .style(Style::new().add_modifier(Modifier::BOLD));
    let widths: Vec<Constraint> = columns.iter().map(|(_, w)| Constraint::Length(*w)).collect();
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let now = app.now;
    let (title, lines): (String, Vec<Line<'_>>) = match app.view {
        View::Sessions => match app.sessions.selected() {
            Some(s) => {
                let tokens: Vec<&pb::Token> =
                    app.tokens.all().iter().filter(|t| t.session_id == s.session_id).collect();
                let mut lines = vec![Line::from(format!(
                    "session {}  user {}  state {}  reason {}",
                    s.session_id,
                    s.username,
                    session_state(s.state()),
                    if s.revoke_reason.is_empty() { "-" } else { &s.revoke_reason }
                ))];
                lines.extend(tokens.iter().map(|t| Line::styled(t.cells(now).join("  "), t.style())));
                (format!(" Tokens of session {} ", short_id(&s.session_id)), lines)
            }
            None => (" Details ".into(), vec![]),
        },
        View::Users => match app.users.selected() {
            Some(u) => {
                let sessions: Vec<Line<'_>> = app
                    .sessions
                    .all()
                    .iter()
                    .filter(|s| s.user_id == u.user_id)
                    .map(|s| Line::styled(s.cells(now).join("  "), s.style()))
                    .collect();
                (format!(" Sessions of {} ", u.username), sessions)
            }
            None => (" Details ".into(), vec![]),
        },
        View::Tokens => match app.tokens.selected() {
            Some(t) => (
                " Token ".into(),
                vec![
                    Line::from(format!("token {}  session {}  user {}", t.token_id, t.session_id, t.user_id)),
                    Line::from(format!(
                        "issued {}  expires {}  revoked {}",
                        relative(t.issued_at.as_ref(), now),
                        relative(t.expires_at.as_ref(), now),
                        relative(t.revoked_at.as_ref(), now)
                    )),
                ],
            ),
            None => (" Details ".into(), vec![]),
        },
        View::Dashboard => (" Details ".into(), vec![]),
        View::ServiceAccounts => match app.service_accounts.selected() {
            Some(a) => (format!(" Service account {} ", a.name), account_detail(a, now)),
            None => (" Details ".into(), vec![]),
        },
        View::Events => match app.events.selected() {
            Some(e) => (
                format!(" Event {} ", e.sequence),
                vec![
                    Line::from(format!("{}  {}", event_kind(e.kind()), relative(e.occurred_at.as_ref(), now))),
                    Line::from(format!(
                        "user {} {}  session {}  token {}",
                        e.username, e.user_id, e.session_id, e.token_id
                    )),
                    Line::from(if e.actor_user_id.is_empty() {
                        event_detail(e)
                    } else {
                        format!("by {}  {}", e.actor_user_id, event_detail(e))
                    }),
                ],
            ),
            None => (" Details ".into(), vec![]),
        },
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// A service account's detail: its client id and grants, its key, and each
/// secret with its age, expiry and last use.
fn account_detail(a: &pb::ServiceAccount, now: std::time::SystemTime) -> Vec<Line<'static>> {
    let list = |items: &[String]| if items.is_empty() { "-".to_string() } else { items.join(",") };
    let mut lines = vec![
        Line::from(format!(
            "client {}  {}  {}",
            a.client_id,
            if a.disabled { "disabled" } else { "enabled" },
            match &a.key {
                Some(key) =>
                    format!("key {} (registered {})", key.algorithm, relative(key.registered_at.as_ref(), now)),
                None => "no key".to_string(),
            }
        )),
        Line::from(format!("roles {}  audiences {}  scopes {}", list(&a.roles), list(&a.audiences), list(&a.scopes))),
    ];
    if a.secrets.is_empty() {
        lines.push(Line::from("no client secret"));
    }
    for secret in &a.secrets {
        let age = crate::format::now_millis(now) - crate::format::millis(secret.created_at.as_ref());
        let age = crate::format::human(std::time::Duration::from_millis(age.max(0).unsigned_abs()));
        let expires = match &secret.expires_at {
            Some(at) => format!("expires {}", relative(Some(at), now)),
            None => "never expires".to_string(),
        };
        let used = match &secret.last_used_at {
            Some(at) => format!("last used {}", relative(Some(at), now)),
            None => "never used".to_string(),
        };
        let expired = secret
            .expires_at
            .as_ref()
            .is_some_and(|at| crate::format::millis(Some(at)) <= crate::format::now_millis(now));
        let style = if expired { Style::new().fg(Color::DarkGray) } else { Style::new() };
        lines.push(Line::styled(
            format!("secret …{}  {age} old  {expires}  {used}", short_id(&secret.secret_id)),
            style,
        ));
    }
    lines
}

fn draw_status(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let line = match (&app.mode, &app.status) {
        (Mode::Filter, _) => Line::from(vec![Span::raw(" filter: "), Span::raw(app.current_filter()), Span::raw("▏")]),
        (_, Some(status)) if status.error => Line::styled(format!(" {}", status.text), Style::new().fg(Color::Red)),
        (_, Some(status)) => Line::styled(format!(" {}", status.text), Style::new().fg(Color::Green)),
        (_, None) => Line::from(""),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let keys = keymap::footer_within(&app.mode, app.view, usize::from(area.width.saturating_sub(1)));
    frame.render_widget(Paragraph::new(Line::styled(format!(" {keys}"), Style::new().fg(Color::Cyan))), area);
}

fn popup(frame: &mut Frame<'_>, width: u16, height: u16) -> Rect {
    let area = frame.area();
    let w = width.min(area.width);
    let h = height.min(area.height);
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    frame.render_widget(Clear, popup);
    popup
}

fn draw_help(frame: &mut Frame<'_>) {
    let lines: Vec<Line<'_>> = keymap::help()
        .map(|(key, what)| Line::from(vec![Span::styled(format!("{key:>16}  "), Style::new().bold()), Span::raw(what)]))
        .collect();
    // Every key stays on screen: when one column is taller than the
    // terminal, the list is shown in two, side by side.
    let fits = lines.len() + 2 <= usize::from(frame.area().height);
    let (columns, width) = if fits { (1, 80) } else { (2, 140) };
    let rows = lines.len().div_ceil(columns);
    let area = popup(frame, width, rows as u16 + 2);
    let block = Block::default().borders(Borders::ALL).title(" Keys (any key closes) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let halves = Layout::horizontal(vec![Constraint::Fill(1); columns]).split(inner);
    for (column, area) in lines.chunks(rows.max(1)).zip(halves.iter()) {
        frame.render_widget(Paragraph::new(column.to_vec()), *area);
    }
}

fn draw_password(frame: &mut Frame<'_>, app: &App, typed: usize) {
    let area = popup(frame, 70, 5);
    let block =
        Block::default().borders(Borders::ALL).title(" Log in again ").border_style(Style::new().fg(Color::Yellow));
    let text = vec![
        Line::from(format!("Password for {} at {}:", app.username, app.server)),
        Line::from(format!("{}▏", "•".repeat(typed))),
        Line::from("Enter logs in, Esc cancels"),
    ];
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
}

fn draw_confirm(frame: &mut Frame<'_>, prompt: &str) {
    // As tall as the wrapped prompt needs, so that a long one (an account
    // and its client id, a sample of sessions) never hides how to answer.
    let inner = usize::from(70.min(frame.area().width).saturating_sub(2)).max(1);
    let prompt_rows = prompt.chars().count().div_ceil(inner).max(1);
    let area = popup(frame, 70, prompt_rows as u16 + 4);
    let block = Block::default().borders(Borders::ALL).title(" Confirm ").border_style(Style::new().fg(Color::Red));
    let text =
        vec![Line::from(prompt.to_string()), Line::from(""), Line::from("y to confirm, any other key to cancel")];
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
}

/// A form: its note, each field (the current one marked, hidden ones as
/// dots), and why the last submit was refused.
fn draw_form(frame: &mut Frame<'_>, form: &Form) {
    let mut lines = vec![Line::from(form.note.clone()), Line::from("")];
    for (i, field) in form.fields.iter().enumerate() {
        let current = i == form.current;
        let marker = if current { "▶ " } else { "  " };
        let cursor = if current { "▏" } else { "" };
        lines.push(Line::from(vec![
            Span::raw(marker),
            Span::styled(format!("{}: ", field.label), Style::new().bold()),
            Span::raw(format!("{}{cursor}", field.shown())),
        ]));
    }
    lines.push(Line::from(""));
    match &form.error {
        Some(error) => lines.push(Line::styled(error.clone(), Style::new().fg(Color::Red))),
        None => lines.push(Line::from("Enter: next field / submit · Esc: cancel")),
    }
    // The height the lines take once wrapped, so that the last one (why
    // a submit was refused) is never cut off.
    let inner = usize::from(72.min(frame.area().width).saturating_sub(2)).max(1);
    let height: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let area = popup(frame, 72, height as u16 + 2);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} ", form.title))
        .border_style(Style::new().fg(Color::Yellow));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), area);
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        action::Action,
        app::Status,
        fixtures,
        messages::{Command, List, Loading, Update},
        mode::Pending,
    };

    fn app() -> App {
        let mut app = App::new("http://127.0.0.1:50051", "admin", fixtures::now());
        let sessions: Vec<_> =
            ["alice", "bob", "carol"].iter().enumerate().map(|(i, u)| fixtures::session(i + 1, u)).collect();
        let tokens: Vec<_> = sessions.iter().enumerate().map(|(i, s)| fixtures::token(i + 1, s)).collect();
        let events = vec![
            fixtures::event(1, pb::EventKind::SessionCreated, &sessions[0], "from 10.0.0.1:40001 (device-1)"),
            fixtures::event(2, pb::EventKind::SessionRevoked, &sessions[1], "stolen laptop"),
        ];
        app.update(Action::Backend(Update::Users(vec![
            fixtures::user("alice", &["admin"], 1),
            fixtures::user("bob", &[], 0),
            fixtures::user("carol", &["billing"], 1),
        ])));
        app.update(Action::Backend(Update::Sessions(sessions)));
        app.update(Action::Backend(Update::Tokens(tokens)));
        for event in events {
            app.update(Action::Backend(Update::Event(event)));
        }
        let mut signer = fixtures::service_account(2, "invoice-signer", &[]);
        signer.key = Some(pb::ClientKey {
            algorithm: "EdDSA".into(),
            public_jwk_json: "{}".into(),
            registered_at: fixtures::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| prost_types::Timestamp { seconds: d.as_secs() as i64 - 7200, nanos: 0 }),
        });
        signer.disabled = true;
        app.update(Action::Backend(Update::ServiceAccounts(vec![
            fixtures::service_account(
                1,
                "billing-worker",
                &[(30, Some(60), Some(2)), (1, None, None), (90, Some(-5), Some(7200))],
            ),
            signer,
        ])));
        app.update(Action::Backend(Update::Connection(ConnectionState::Live)));
        app
    }

    fn render(app: &mut App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(130, 16)).expect("terminal");
        app.update(Action::Resize(terminal.size().expect("size")));
        terminal.draw(|frame| draw(frame, app)).expect("draw");
        terminal.backend().to_string()
    }

    #[test]
    fn sessions_view() {
        insta::assert_snapshot!(render(&mut app()));
    }

    #[test]
    fn sessions_view_with_the_detail_pane() {
        let mut app = app();
        app.update(Action::ToggleDetail);
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn tokens_view() {
        let mut app = app();
        app.update(Action::NextView);
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn users_view() {
        let mut app = app();
        app.update(Action::NextView);
        app.update(Action::NextView);
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn events_view_newest_first() {
        let mut app = app();
        app.update(Action::ShowView(View::Events));
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn help() {
        let mut app = app();
        app.update(Action::ToggleHelp);
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn confirm_dialog() {
        let mut app = app();
        app.mode = Mode::Confirm(Pending {
            prompt: "Revoke session 50000001 of alice (device-1, 10.0.0.1:40001)?".into(),
            command: Command::RevokeSession { session_id: "x".into() },
        });
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn stream_lost_and_a_failed_command() {
        let mut app = app();
        app.update(Action::Backend(Update::Connection(ConnectionState::Reconnecting {
            reason: "connection refused".into(),
            retry_in: 2,
        })));
        app.status =
            Some(Status { text: "revoking session 50000001 failed: storage is unavailable".into(), error: true });
        insta::assert_snapshot!(render(&mut app));
    }

    #[test]
    fn filtering() {
        let mut app = app();
        app.update(Action::StartFilter);
        for c in "car".chars() {
            app.update(Action::FilterChar(c));
        }
        insta::assert_snapshot!(render(&mut app));
    }

    fn render_at(app: &mut App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        app.update(Action::Resize(terminal.size().expect("size")));
        terminal.draw(|frame| draw(frame, app)).expect("draw");
        terminal.backend().to_string()
    }

    /// Every view (and every pop-up) at the smallest common terminal and
    /// at a large one.
    #[test]
    fn every_view_at_80x24_and_200x50() {
        type Setup = fn(&mut App);
        let views: [(&str, Setup); 15] = [
            ("sessions", |_| {}),
            ("sessions_detail", |app| {
                app.update(Action::ToggleDetail);
            }),
            ("tokens", |app| {
                app.update(Action::NextView);
            }),
            ("tokens_detail", |app| {
                app.update(Action::NextView);
                app.update(Action::ToggleDetail);
            }),
            ("users", |app| {
                app.update(Action::NextView);
                app.update(Action::NextView);
            }),
            ("users_detail", |app| {
                app.update(Action::NextView);
                app.update(Action::NextView);
                app.update(Action::ToggleDetail);
            }),
            ("events", |app| {
                app.update(Action::ShowView(View::Events));
            }),
            ("events_detail", |app| {
                app.update(Action::ShowView(View::Events));
                app.update(Action::ToggleDetail);
            }),
            ("help", |app| {
                app.update(Action::ToggleHelp);
            }),
            ("confirm", |app| {
                app.update(Action::Down);
                app.update(Action::RevokeSelected);
            }),
            ("sorted_descending", |app| {
                app.update(Action::CycleSort);
                app.update(Action::ReverseSort);
            }),
            ("service_accounts_empty", |app| {
                app.update(Action::ShowView(View::ServiceAccounts));
                app.service_accounts.retain(|_| false);
                app.refresh();
            }),
            ("service_accounts", |app| {
                app.update(Action::ShowView(View::ServiceAccounts));
            }),
            ("service_accounts_detail", |app| {
                app.update(Action::ShowView(View::ServiceAccounts));
                app.update(Action::ToggleDetail);
            }),
            ("service_accounts_confirm", |app| {
                app.update(Action::ShowView(View::ServiceAccounts));
                app.update(Action::ToggleUserDisabled);
            }),
        ];
        for (width, height) in [(80, 24), (200, 50)] {
            for (name, setup) in views {
                let mut app = app();
                setup(&mut app);
                insta::assert_snapshot!(format!("{name}_{width}x{height}"), render_at(&mut app, width, height));
            }
        }
    }

    /// The first page is on screen while the rest loads: the title says how
    /// far the load has come, and says nothing once it is done.
    #[test]
    fn loading_in_the_background_at_80x24_and_200x50() {
        for (width, height) in [(80, 24), (200, 50)] {
            let mut app = app();
            let progress = Loading { list: List::Sessions, loaded: 12_000, total: Some(100_000) };
            app.update(Action::Backend(Update::Loading(Some(progress))));
            insta::assert_snapshot!(format!("loading_{width}x{height}"), render_at(&mut app, width, height));
            app.update(Action::Backend(Update::Loading(None)));
            assert!(!render_at(&mut app, width, height).contains("loading"), "done: no indicator");
        }
    }

    /// Five minutes of traffic: validations in a wave, a login burst, a
    /// password-guessing storm from two addresses, a few revocations and a
    /// lockout.
    fn dashboard() -> App {
        let mut app = app();
        app.update(Action::ShowView(View::Dashboard));
        let start = fixtures::now() - std::time::Duration::from_secs(300);
        let (mut validations, mut logins, mut failures) = (0, 0, 0);
        for second in 0..=300u64 {
            validations += 50 + (second % 60) * 3;
            logins += if (200..230).contains(&second) { 20 } else { 1 };
            failures += if second >= 250 { 8 } else { 0 };
            let stats = pb::GetStatsResponse {
                users: 3,
                active_sessions: 3,
                active_tokens: 3,
                revocation_index_entries: 1,
                validations_total: validations,
                logins_total: logins,
                login_failures_total: failures,
                ..Default::default()
            };
            let at = start + std::time::Duration::from_secs(second);
            app.update(Action::Backend(Update::Stats(stats, at)));
        }
        let carol = fixtures::session(3, "carol");
        let mut nobody = fixtures::session(4, "");
        nobody.username.clear();
        for n in 60..90 {
            let (who, from) = if n % 3 == 0 { (&nobody, "203.0.113.7:5") } else { (&carol, "198.51.100.2:6") };
            let detail = format!("from {from}{n}");
            app.update(Action::Backend(Update::Event(fixtures::event(n, pb::EventKind::LoginFailed, who, &detail))));
        }
        let locked = fixtures::event(90, pb::EventKind::AccountLocked, &carol, "5 failed logins within 15m");
        app.update(Action::Backend(Update::Event(locked)));
        for n in [92, 92, 95, 96, 96, 96] {
            let revoked = fixtures::event(n, pb::EventKind::SessionRevoked, &carol, "revoked from sigil-console");
            app.update(Action::Backend(Update::Event(pb::Event { sequence: 1000 + n, ..revoked })));
        }
        app
    }

    #[test]
    fn the_help_lists_every_key_at_80x24_and_on_a_short_terminal() {
        for (width, height) in [(80, 24), (130, 16)] {
            let mut app = app();
            app.update(Action::ToggleHelp);
            let screen = render_at(&mut app, width, height);
            for (keys, what) in keymap::help() {
                let start: String = what.chars().take(12).collect();
                assert!(
                    screen.contains(keys) && screen.contains(&start),
                    "{keys} {what} at {width}x{height}:\n{screen}"
                );
            }
        }
    }

    #[test]
    fn at_80x24_the_client_address_and_the_essential_keys_stay_visible() {
        let mut app = app();
        app.sessions.modify(&app.sessions.all()[0].session_id.clone(), |s| {
            s.client_address = "203.113.255.254:65535".into();
        });
        let screen = render_at(&mut app, 80, 24);
        assert!(screen.contains("203.113.255.254:65535"), "{screen}");
        let footer = screen.lines().last().expect("footer");
        for key in ["x disable", "? help", "q quit"] {
            assert!(footer.contains(key), "{key:?} missing from {footer}");
        }
    }

    #[test]
    fn a_logged_out_console_says_so_instead_of_live() {
        let mut app = app();
        app.update(Action::Backend(Update::Connection(ConnectionState::LoggedOut)));
        let screen = render_at(&mut app, 80, 24);
        let header = screen.lines().next().expect("header");
        assert!(!header.contains("live"), "{header}");
        assert!(header.contains("session ended") && header.contains("L log in"), "{header}");
        insta::assert_snapshot!(screen);
    }

    #[test]
    fn dashboard_80x24() {
        insta::assert_snapshot!(render_at(&mut dashboard(), 80, 24));
    }

    #[test]
    fn dashboard_200x50() {
        insta::assert_snapshot!(render_at(&mut dashboard(), 200, 50));
    }

    #[test]
    fn dashboard_before_the_first_sample() {
        let mut app = app();
        app.update(Action::ShowView(View::Dashboard));
        let screen = render_at(&mut app, 80, 24);
        assert!(screen.contains("waiting for the server's counts"), "{screen}");
    }

    #[test]
    fn the_key_rotation_asks_for_the_word() {
        let mut app = app();
        app.update(Action::EmergencyKeyRotation);
        for c in "rot".chars() {
            app.update(Action::FormChar(c));
        }
        insta::assert_snapshot!(render_at(&mut app, 80, 24));
    }

    #[test]
    fn a_password_is_drawn_as_dots() {
        let mut app = app();
        app.update(Action::ResetPassword);
        for c in "hunter2".chars() {
            app.update(Action::FormChar(c));
        }
        let screen = render_at(&mut app, 80, 24);
        assert!(screen.contains("•••••••"), "{screen}");
        assert!(!screen.contains("hunter2"), "{screen}");
    }

    #[test]
    fn a_redraw_of_100k_sessions_only_builds_the_visible_rows() {
        let mut app = App::new("http://127.0.0.1:50051", "admin", fixtures::now());
        app.update(Action::Backend(Update::Sessions((0..100_000).map(|n| fixtures::session(n, "user")).collect())));
        let mut terminal = Terminal::new(TestBackend::new(130, 40)).expect("terminal");
        app.update(Action::Resize(terminal.size().expect("size")));
        terminal.draw(|frame| draw(frame, &app)).expect("draw");
        app.update(Action::Bottom);
        terminal.draw(|frame| draw(frame, &app)).expect("draw");
        let screen = terminal.backend().to_string();
        assert!(screen.contains("100000/100000"), "{screen}");
        assert!(screen.contains("device-99999"), "the last row is on screen after G");
    }
}
