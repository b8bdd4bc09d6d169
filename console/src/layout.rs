//! Where each part of the screen goes. Drawing places the parts with it,
//! and the state machine asks it how many rows a page of the table holds,
//! so that paging and scrolling agree with what is drawn without drawing
//! ever writing into the state. It also decides which columns of a table
//! fit a narrow screen.

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

/// The columns a table `available` characters wide shows, with their
/// widths: each needs its entry of `widths` plus a space between columns;
/// when they do not all fit, columns give way in `drop_order`; what room is
/// left is shared in proportion to the widths.
pub fn columns(widths: &[u16], drop_order: &[usize], available: u16) -> Vec<(usize, u16)> {
    let mut kept: Vec<usize> = (0..widths.len()).collect();
    let needed = |kept: &[usize]| kept.iter().map(|&c| widths[c]).sum::<u16>() + kept.len().saturating_sub(1) as u16;
    for drop in drop_order {
        if needed(&kept) <= available {
            break;
        }
        kept.retain(|c| c != drop);
    }
    let spare = available.saturating_sub(needed(&kept));
    let total: u16 = kept.iter().map(|&c| widths[c]).sum::<u16>().max(1);
    let mut shared = 0;
    let mut columns: Vec<(usize, u16)> = kept
        .iter()
        .map(|&c| {
            let share = (u32::from(spare) * u32::from(widths[c]) / u32::from(total)) as u16;
            shared += share;
            (c, widths[c] + share)
        })
        .collect();
    // Rounding leaves a few characters; the last column takes them.
    if let Some(last) = columns.last_mut() {
        last.1 += spare - shared;
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_tables_drop_columns_in_order_and_wide_ones_share_the_room() {
        let widths = [10, 20, 5];
        assert_eq!(columns(&widths, &[2, 0], 37), vec![(0, 10), (1, 20), (2, 5)]);
        assert_eq!(columns(&widths, &[2, 0], 31), vec![(0, 10), (1, 20)]);
        assert_eq!(columns(&widths, &[2, 0], 25), vec![(1, 25)]);
        let wide = columns(&widths, &[2, 0], 72);
        assert_eq!(wide.iter().map(|(_, w)| w).sum::<u16>() + 2, 72);
        assert_eq!(wide, vec![(0, 20), (1, 40), (2, 10)]);
    }
}
