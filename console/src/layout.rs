//! Where each part of the screen goes. Drawing places the parts with it,
//! and the state machine asks it how many rows a page of the table holds,
//! so that paging and scrolling agree with what is drawn without drawing
//! ever writing into the state.

use ratatui::layout::{Constraint, Layout, Rect};

/// The parts of the screen, top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// Server, user and the stream's state.
    pub header: Rect,
    /// The views, with their row counts.
    pub tabs: Rect,
    /// The current view's table.
    pub table: Rect,
    /// The detail pane, when open.
    pub detail: Option<Rect>,
    /// The outcome of the last action, or the filter being typed.
    pub status: Rect,
    /// The keys that work here.
    pub footer: Rect,
}

/// The parts of a `screen`, with or without the detail pane.
pub fn areas(screen: Rect, detail: bool) -> Areas {
    let [header, tabs, body, status, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(screen);
    let (table, detail) = if detail {
        let [table, detail] = Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
        (table, Some(detail))
    } else {
        (body, None)
    };
    Areas { header, tabs, table, detail, status, footer }
}

/// How many records a table drawn in `table` shows: its height minus the
/// borders and the column header.
pub fn table_rows(table: Rect) -> usize {
    usize::from(table.height.saturating_sub(3))
}
