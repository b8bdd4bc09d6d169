//! A table of records with selection, filter and sort. The filtered and
//! sorted order is cached and recomputed only when rows, filter or sort
//! change, so drawing 100,000 rows costs only the visible ones; each row's
//! search text is kept beside it, so a filter keystroke is one substring
//! search per row, not a re-formatting of every cell.

use std::hash::{BuildHasher as _, RandomState};

use hashbrown::HashTable;

use crate::records::{Record, SortKey};

/// Each row's position by its id, holding no copy of the ids: a position
/// is hashed and compared through the row it names. With 300,000 rows (a
/// large store's sessions and tokens) this is a few bytes per row, where a
/// map keyed by a copy of each id cost about a hundred.
#[derive(Default)]
struct IdIndex {
    positions: HashTable<u32>,
    hasher: RandomState,
}

impl IdIndex {
    fn get<T: Record>(&self, rows: &[T], id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        self.positions.find(hash, |&i| rows[i as usize].id() == id).map(|&i| i as usize)
    }

    /// Indexes `rows[position]`, whose id is not indexed yet.
    fn insert<T: Record>(&mut self, rows: &[T], position: usize) {
        let Self { positions, hasher } = self;
        let hash = hasher.hash_one(rows[position].id());
        // More than four billion rows would not fit in memory first.
        positions.insert_unique(hash, position as u32, |&i| hasher.hash_one(rows[i as usize].id()));
    }

    /// Indexes every row anew (after rows were removed).
    fn rebuild<T: Record>(&mut self, rows: &[T]) {
        self.positions.clear();
        for (position, row) in rows.iter().enumerate() {
            if !row.id().is_empty() {
                self.insert(rows, position);
            }
        }
    }
}

/// A row's search text. It leaves out relative times, so any clock will do.
fn haystack<T: Record>(row: &T) -> String {
    row.search_text(std::time::UNIX_EPOCH)
}

/// Rows of one view, with what the operator has selected, filtered and sorted.
pub struct Table<T> {
    rows: Vec<T>,
    /// Lower-cased search text of each row, same index as `rows`.
    haystacks: Vec<String>,
    by_id: IdIndex,
    filter: String,
    sort: Option<usize>,
    /// The sort runs against the column's natural order.
    reversed: bool,
    order: Vec<usize>,
    stale: bool,
    /// The id of the row selected when rows last changed: the selection
    /// follows that row, not its index, while pages arrive and events
    /// change rows (the order may move it).
    anchor: Option<String>,
    selected: usize,
    /// First row shown; kept so that the selection stays on screen.
    offset: usize,
    /// Newest rows first (the event log) instead of oldest first.
    newest_first: bool,
}

impl<T: Record> Table<T> {
    /// An empty table.
    pub fn new(newest_first: bool) -> Self {
        Self {
            rows: Vec::new(),
            haystacks: Vec::new(),
            by_id: IdIndex::default(),
            filter: String::new(),
            sort: None,
            reversed: false,
            order: Vec::new(),
            stale: false,
            anchor: None,
            selected: 0,
            offset: 0,
            newest_first,
        }
    }

    /// Inserts rows or replaces those with the same id.
    pub fn upsert(&mut self, rows: impl IntoIterator<Item = T>) {
        self.anchor_selection();
        for row in rows {
            let id = row.id();
            let haystack = haystack(&row);
            if !id.is_empty()
                && let Some(i) = self.by_id.get(&self.rows, id)
            {
                self.rows[i] = row;
                self.haystacks[i] = haystack;
            } else {
                let indexed = !id.is_empty();
                self.rows.push(row);
                self.haystacks.push(haystack);
                if indexed {
                    self.by_id.insert(&self.rows, self.rows.len() - 1);
                }
            }
        }
        self.stale = true;
    }

    /// Changes the row with `id` in place, if there is one.
    pub fn modify(&mut self, id: &str, change: impl FnOnce(&mut T)) -> bool {
        self.anchor_selection();
        match self.by_id.get(&self.rows, id) {
            Some(i) => {
                change(&mut self.rows[i]);
                self.haystacks[i] = haystack(&self.rows[i]);
                self.stale = true;
                true
            }
            None => false,
        }
    }

    /// Changes every row that `matches`.
    pub fn modify_where(&mut self, matches: impl Fn(&T) -> bool, change: impl Fn(&mut T)) {
        self.anchor_selection();
        for (row, haystack) in self.rows.iter_mut().zip(self.haystacks.iter_mut()).filter(|(r, _)| matches(r)) {
            change(row);
            *haystack = self::haystack(row);
            self.stale = true;
        }
    }

    /// Keeps only the rows `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        if self.rows.iter().all(&keep) {
            return;
        }
        self.anchor_selection();
        let rows = std::mem::take(&mut self.rows).into_iter().zip(std::mem::take(&mut self.haystacks));
        (self.rows, self.haystacks) = rows.filter(|(row, _)| keep(row)).unzip();
        self.by_id.rebuild(&self.rows);
        self.stale = true;
    }

    /// Drops the oldest rows beyond `max`.
    pub fn truncate_front(&mut self, max: usize) {
        if self.rows.len() > max {
            self.anchor_selection();
            let excess = self.rows.len() - max;
            self.rows.drain(..excess);
            self.haystacks.drain(..excess);
            self.by_id.rebuild(&self.rows);
            self.stale = true;
        }
    }

    /// Notes the selected row before the rows change (once until the next
    /// refresh: the indices it reads are those of the last refresh).
    fn anchor_selection(&mut self) {
        if self.anchor.is_none() {
            let selected = self.order.get(self.selected).and_then(|&i| self.rows.get(i));
            self.anchor = selected.map(|row| row.id().to_string()).filter(|id| !id.is_empty());
        }
    }

    /// Gives back the room the rows' buffers grew beyond them while pages
    /// arrived (up to half again, after a full load of a large store).
    pub fn shrink_to_fit(&mut self) {
        self.rows.shrink_to_fit();
        self.haystacks.shrink_to_fit();
        self.order.shrink_to_fit();
        let IdIndex { positions, hasher } = &mut self.by_id;
        positions.shrink_to_fit(|&i| hasher.hash_one(self.rows[i as usize].id()));
    }

    /// Every row, in arrival order.
    pub fn all(&self) -> &[T] {
        &self.rows
    }

    /// The row with `id`.
    pub fn get(&self, id: &str) -> Option<&T> {
        self.by_id.get(&self.rows, id).map(|i| &self.rows[i])
    }

    /// The filter text.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Sets the filter (case-insensitive, over the visible columns).
    pub fn set_filter(&mut self, filter: String) {
        self.filter = filter;
        self.stale = true;
        self.refresh();
        self.selected = 0;
        self.offset = 0;
    }

    /// The column sorted by, if any.
    pub fn sort(&self) -> Option<usize> {
        self.sort
    }

    /// Sorts by the next column (after the last: arrival order again), in
    /// that column's natural order.
    pub fn cycle_sort(&mut self) {
        self.sort = match self.sort {
            None => Some(0),
            Some(c) if c + 1 < T::COLUMNS.len() => Some(c + 1),
            Some(_) => None,
        };
        self.reversed = false;
        self.stale = true;
    }

    /// Reverses the sort (sorting by the first column if unsorted).
    pub fn reverse_sort(&mut self) {
        self.sort = Some(self.sort.unwrap_or(0));
        self.reversed = !self.reversed;
        self.stale = true;
    }

    /// Whether the sort runs against its column's natural order.
    pub fn sort_reversed(&self) -> bool {
        self.reversed
    }

    /// The sorted column and its direction as the header marks it: `▲`
    /// ascending (A to Z, oldest first, fewest first), `▼` descending.
    pub fn sort_marker(&self) -> Option<(usize, &'static str)> {
        let column = self.sort?;
        // The natural order of a column shows in its keys: text runs A to Z,
        // times newest first and counts largest first.
        let ascending = self.rows.first().is_none_or(|row| matches!(row.sort_key(column), SortKey::Text(_)));
        Some((column, if ascending != self.reversed { "▲" } else { "▼" }))
    }

    /// Recomputes the shown order if anything changed.
    pub fn refresh(&mut self) {
        if !self.stale {
            return;
        }
        let needle = self.filter.to_lowercase();
        let mut order: Vec<usize> =
            (0..self.rows.len()).filter(|&i| needle.is_empty() || self.haystacks[i].contains(&needle)).collect();
        if self.newest_first {
            order.reverse();
        }
        if let Some(column) = self.sort {
            order.sort_by_cached_key(|&i| self.rows[i].sort_key(column));
            if self.reversed {
                order.reverse();
            }
        }
        self.order = order;
        self.stale = false;
        let anchored = self.anchor.take().and_then(|id| self.by_id.get(&self.rows, &id));
        match anchored.and_then(|row| self.order.iter().position(|&i| i == row)) {
            Some(position) => self.selected = position,
            None => self.selected = self.selected.min(self.order.len().saturating_sub(1)),
        }
    }

    /// The rows that pass the filter, in shown order.
    pub fn shown(&self) -> impl Iterator<Item = &T> {
        self.order.iter().map(|&i| &self.rows[i])
    }

    /// How many rows pass the filter.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no row passes the filter.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Index (in shown order) of the selected row.
    pub fn selected_index(&self) -> usize {
        self.selected
    }

    /// The selected row.
    pub fn selected(&self) -> Option<&T> {
        self.order.get(self.selected).map(|&i| &self.rows[i])
    }

    /// Moves the selection by `delta` rows, within bounds.
    pub fn move_by(&mut self, delta: isize) {
        let last = self.order.len().saturating_sub(1) as isize;
        self.selected = (self.selected as isize + delta).clamp(0, last.max(0)) as usize;
    }

    /// Selects the first or last row.
    pub fn jump(&mut self, to_end: bool) {
        self.selected = if to_end { self.order.len().saturating_sub(1) } else { 0 };
    }

    /// Scrolls so that the selection is within a window of `height` rows.
    pub fn scroll_to_selection(&mut self, height: usize) {
        self.offset = self.offset_for(height);
    }

    /// The first row of a window of `height` rows that shows the selection,
    /// moving the current offset as little as possible.
    fn offset_for(&self, height: usize) -> usize {
        if height == 0 || self.order.is_empty() {
            return self.offset;
        }
        let mut offset = self.offset;
        if self.selected < offset {
            offset = self.selected;
        } else if self.selected >= offset + height {
            offset = self.selected + 1 - height;
        }
        offset.min(self.order.len().saturating_sub(1))
    }

    /// The rows to draw in a window of `height` rows, scrolled so that the
    /// selection is visible; returns them with the selected one's position.
    pub fn window(&self, height: usize) -> (Vec<&T>, Option<usize>) {
        if height == 0 || self.order.is_empty() {
            return (Vec::new(), None);
        }
        let offset = self.offset_for(height);
        let end = (offset + height).min(self.order.len());
        let rows = self.order[offset..end].iter().map(|&i| &self.rows[i]).collect();
        (rows, Some(self.selected - offset))
    }
}

#[cfg(test)]
mod tests {
    use sigil_proto::pb;

    use super::*;
    use crate::fixtures;

    #[test]
    fn the_selection_stays_on_its_row_while_more_rows_arrive() {
        let mut table: Table<pb::Session> = Table::new(false);
        table.upsert(["dave", "mallory", "trent"].iter().enumerate().map(|(n, u)| fixtures::session(n + 1, u)));
        table.cycle_sort();
        table.refresh();
        table.move_by(1);
        assert_eq!(table.selected().map(|s| s.username.as_str()), Some("mallory"));
        // A later page holds rows that sort before the selected one: the
        // operator's cursor stays where it was, on mallory.
        table.upsert(["alice", "bob", "carol"].iter().enumerate().map(|(n, u)| fixtures::session(n + 10, u)));
        table.refresh();
        assert_eq!(table.selected().map(|s| s.username.as_str()), Some("mallory"));
        assert_eq!(table.selected_index(), 4);
        let shown: Vec<&str> = table.shown().map(|s| s.username.as_str()).collect();
        assert_eq!(shown, ["alice", "bob", "carol", "dave", "mallory", "trent"], "sorted once loaded");
    }
}
