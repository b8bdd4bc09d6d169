//! Drawing the Dashboard: the server's counts on one line, a sparkline per
//! rate (newest second on the right, as wide as the screen allows), and
//! the failed logins and lockouts of the last fifteen minutes. It reads
//! [`crate::dashboard::Dashboard`] and nothing else.

use std::time::SystemTime;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Sparkline},
};

use crate::{
    dashboard::{Dashboard, HISTORY_SECONDS, Series},
    format::{human, now_millis},
};

/// Draws the Dashboard into `area` (where the other views put their table).
pub(crate) fn draw(frame: &mut Frame<'_>, area: Rect, dashboard: &Dashboard, now: SystemTime) {
    let block = Block::default().borders(Borders::ALL).title(" Dashboard ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // The lists get what the charts leave, but at least five lines.
    let lists_height = (inner.height.saturating_sub(1) / 3).max(5);
    let [counts, charts, lists] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(lists_height)]).areas(inner);
    frame.render_widget(Paragraph::new(counts_line(dashboard)), counts);
    draw_rates(frame, charts, dashboard, now);
    draw_lists(frame, lists, dashboard, now);
}

fn counts_line(dashboard: &Dashboard) -> Line<'static> {
    match &dashboard.stats {
        Some(s) => Line::from(format!(
            " active sessions {} · active tokens {} · users {} · revocation index {}",
            s.active_sessions, s.active_tokens, s.users, s.revocation_index_entries
        )),
        None => Line::styled(" waiting for the server's counts…", Style::new().fg(Color::DarkGray)),
    }
}

fn draw_rates(frame: &mut Frame<'_>, area: Rect, dashboard: &Dashboard, now: SystemTime) {
    let second = now_millis(now).div_euclid(1000);
    let rates: [(&str, &Series, Color); 4] = [
        ("validations", &dashboard.validations, Color::Cyan),
        ("logins", &dashboard.logins, Color::Green),
        ("failed logins", &dashboard.failures, Color::Red),
        ("revocations", &dashboard.revocations, Color::Yellow),
    ];
    let rows = Layout::vertical([Constraint::Fill(1); 4]).split(area);
    for ((name, series, color), row) in rates.into_iter().zip(rows.iter()) {
        // As many seconds as the row is wide, the newest on the right.
        let width = usize::from(row.width).clamp(1, HISTORY_SECONDS);
        let data = series.recent(width, second);
        let current = data.last().copied().unwrap_or(0);
        let peak = data.iter().copied().max().unwrap_or(0);
        let title = format!(
            " {name} {current}/s · peak {peak}/s over {} ",
            human(std::time::Duration::from_secs(width as u64))
        );
        let sparkline = Sparkline::default()
            .block(Block::default().borders(Borders::TOP).title(title))
            .data(&data)
            // A flat line at zero, not bars scaled to nothing.
            .max(peak.max(1))
            .style(Style::new().fg(color));
        frame.render_widget(sparkline, *row);
    }
}

fn draw_lists(frame: &mut Frame<'_>, area: Rect, dashboard: &Dashboard, now: SystemTime) {
    let rows = usize::from(area.height.saturating_sub(1)).max(1);
    let [names, addresses, locks] = Layout::horizontal([Constraint::Fill(1); 3]).areas(area);
    let ranked = |list: Vec<(String, u64)>| -> Vec<Line<'static>> {
        if list.is_empty() {
            return vec![Line::styled("none", Style::new().fg(Color::DarkGray))];
        }
        list.into_iter().map(|(what, n)| Line::from(format!("{n:>6}  {what}"))).collect()
    };
    let titled = |title: &'static str| Block::default().borders(Borders::TOP).title(title);
    let by_name = ranked(dashboard.top_usernames(now, rows));
    frame.render_widget(Paragraph::new(by_name).block(titled(" failures by name, 15m ")), names);
    let by_address = ranked(dashboard.top_addresses(now, rows));
    frame.render_widget(Paragraph::new(by_address).block(titled(" failures by address ")), addresses);
    let lockouts = dashboard.lockouts(now);
    let locked: Vec<Line<'static>> = if lockouts.is_empty() {
        vec![Line::styled("none", Style::new().fg(Color::DarkGray))]
    } else {
        lockouts
            .into_iter()
            .take(rows)
            .map(|(name, at)| {
                let ago = human(std::time::Duration::from_millis((now_millis(now) - at).max(0) as u64));
                Line::styled(format!("{name}  locked {ago} ago"), Style::new().fg(Color::Red))
            })
            .collect()
    };
    frame.render_widget(Paragraph::new(locked).block(titled(" lockouts, 15m ")), locks);
}
