//! The sled engine's layout versions, and the conversion of a store of an
//! older layout at its first open.
//!
//! Layout 1 (every version before this one) kept every session in
//! `sessions` and every token in `tokens`, whatever their state, and said
//! again in index trees what was active (`active`: kind ++ id) and whose
//! tokens were whose (`user_tokens`: user ++ token). Layout 2 keeps the
//! ended records in trees of their own (`ended_sessions`, `ended_tokens`),
//! so that the active trees are the active set, and derives a user's
//! tokens from its sessions': five sled entries fewer per login, and sled
//! holds a resident page-table entry for every page of entries.
//!
//! The conversion moves each ended record in batches of [`BATCH`], each
//! one sled transaction over both trees (recovered whole or not at all
//! after a `kill -9`), then drops the two index trees, makes it durable
//! and records [`LAYOUT_2`] under [`LAYOUT`] in the `format` tree. A
//! conversion cut short leaves every record in one tree or the other
//! (reads look in both), and is finished at the next open: it runs before
//! anything else reads or writes the store.

use sled::{Transactional, Tree};

use crate::{
    domain::{
        port::StoreError,
        session::{SessionRecord, SessionState, TokenRecord, TokenState},
    },
    store::sled_codec::{self, BinaryRecord},
};

/// Key of the `format` tree: the layout the store is in (absent: 1).
const LAYOUT: &[u8] = b"layout";

/// The layout of this version.
const LAYOUT_2: u8 = 2;

/// Records moved per transaction.
const BATCH: usize = 1_000;

/// The index trees of layout 1 that layout 2 does without.
const DROPPED_TREES: [&str; 2] = ["active", "user_tokens"];

/// The trees records move between: `[active, ended]` of each kind.
pub(super) struct Moves<'a> {
    /// The sessions.
    pub(super) sessions: [&'a Tree; 2],
    /// The tokens.
    pub(super) tokens: [&'a Tree; 2],
}

/// Brings a store of layout 1 to layout 2, once (see the module doc).
/// Runs at open, after the records are binary ([`sled_codec::migrate`])
/// and before they are counted.
pub(super) fn migrate(db: &sled::Db, format: &Tree, moves: Moves<'_>) -> Result<(), StoreError> {
    let backend = |e: sled::Error| StoreError::Backend(format!("converting the store to layout {LAYOUT_2}: {e}"));
    if format.get(LAYOUT).map_err(backend)?.is_some_and(|v| v.as_ref() == [LAYOUT_2]) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let sessions = move_ended::<SessionRecord>(moves.sessions, |s| s.state != SessionState::Active)?;
    let tokens = move_ended::<TokenRecord>(moves.tokens, |t| t.state != TokenState::Active)?;
    let mut dropped = 0;
    for name in DROPPED_TREES {
        if db.drop_tree(name).map_err(backend)? {
            dropped += 1;
        }
    }
    db.flush().map_err(backend)?;
    format.insert(LAYOUT, &[LAYOUT_2]).map_err(backend)?;
    db.flush().map_err(backend)?;
    if sessions + tokens + dropped > 0 {
        tracing::info!(
            ended_sessions = sessions,
            ended_tokens = tokens,
            dropped_trees = dropped,
            took_ms = started.elapsed().as_millis() as u64,
            "converted the store to layout 2 (ended sessions and tokens apart from the active ones, no `active` and `user_tokens` indexes)"
        );
    }
    Ok(())
}

/// Moves every record of `active` that `is_ended` from `active` to
/// `ended`, [`BATCH`] per transaction; returns how many.
fn move_ended<T: BinaryRecord>(
    [active, ended]: [&Tree; 2],
    is_ended: impl Fn(&T) -> bool,
) -> Result<usize, StoreError> {
    let backend = |e: sled::Error| StoreError::Backend(format!("moving ended {} records: {e}", T::NAME));
    let mut moved = 0;
    let mut records = active.iter();
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        for item in records.by_ref() {
            let (key, value) = item.map_err(backend)?;
            if is_ended(&sled_codec::decode::<T>(&value)?) {
                batch.push((key, value));
                if batch.len() == BATCH {
                    break;
                }
            }
        }
        if batch.is_empty() {
            return Ok(moved);
        }
        (active, ended)
            .transaction(|(active, ended)| {
                for (key, value) in &batch {
                    ended.insert(key, value)?;
                    active.remove(key)?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => backend(e),
            })?;
        moved += batch.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Timestamp, TokenId,
        session::{TokenKind, fixtures},
    };

    struct Layout1 {
        db: sled::Db,
        format: Tree,
        trees: [Tree; 4],
    }

    impl Layout1 {
        /// `n` sessions (every third revoked) with an access token each
        /// (every other one expired), all in the active trees, and the
        /// index trees of layout 1.
        fn written(dir: &std::path::Path, n: usize) -> Self {
            let db = sled::Config::new().path(dir).open().expect("opens");
            let tree = |name: &str| db.open_tree(name).expect("tree");
            let trees = [tree("sessions"), tree("ended_sessions"), tree("tokens"), tree("ended_tokens")];
            for i in 0..n {
                let mut session = fixtures::session(Timestamp::now());
                if i % 3 == 0 {
                    session.end(SessionState::Revoked, Timestamp::now());
                }
                let mut token = fixtures::token(&session, TokenId::generate(), TokenKind::Access);
                if i % 2 == 0 {
                    token.end(TokenState::Expired, Timestamp::now());
                }
                trees[0].insert(session.id.as_bytes(), session.encode().expect("encodes")).expect("insert");
                trees[2].insert(token.id.as_bytes(), token.encode().expect("encodes")).expect("insert");
                tree("active").insert([b'S'], &[]).expect("insert");
                tree("user_tokens").insert(token.id.as_bytes(), &[]).expect("insert");
            }
            Self { format: tree("format"), db, trees }
        }

        fn migrate(&self) -> Result<(), StoreError> {
            let [sessions, ended_sessions, tokens, ended_tokens] = &self.trees;
            let moves = Moves { sessions: [sessions, ended_sessions], tokens: [tokens, ended_tokens] };
            migrate(&self.db, &self.format, moves)
        }

        /// Whether every record is in the tree of its state.
        fn states_agree(&self) -> bool {
            let sessions = |tree: &Tree, active: bool| {
                tree.iter().values().all(|v| {
                    let s: SessionRecord = sled_codec::decode(&v.expect("read")).expect("decodes");
                    (s.state == SessionState::Active) == active
                })
            };
            let tokens = |tree: &Tree, active: bool| {
                tree.iter().values().all(|v| {
                    let t: TokenRecord = sled_codec::decode(&v.expect("read")).expect("decodes");
                    (t.state == TokenState::Active) == active
                })
            };
            sessions(&self.trees[0], true)
                && sessions(&self.trees[1], false)
                && tokens(&self.trees[2], true)
                && tokens(&self.trees[3], false)
        }
    }

    #[test]
    fn every_ended_record_moves_and_the_index_trees_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Layout1::written(dir.path(), 2 * BATCH + 7);
        store.migrate().expect("converts");
        assert!(store.states_agree(), "every record in the tree of its state");
        let lens: Vec<usize> = store.trees.iter().map(Tree::len).collect();
        assert_eq!(lens, [2 * BATCH + 7 - 669, 669, BATCH + 3, BATCH + 4], "sessions, ended, tokens, ended");
        let names = store.db.tree_names();
        for dropped in DROPPED_TREES {
            assert!(!names.iter().any(|n| n.as_ref() == dropped.as_bytes()), "{dropped} is dropped");
        }
        assert_eq!(store.format.get(LAYOUT).expect("read").as_deref(), Some([LAYOUT_2].as_slice()));
    }

    /// A conversion cut short (a kill -9 between two batches) leaves a
    /// store whose records are each in one tree, and the next open
    /// finishes it; after the marker, nothing is looked at again.
    #[test]
    fn a_conversion_cut_short_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Layout1::written(dir.path(), BATCH + 10);
        // One batch's worth moved, as a conversion killed after its first
        // transaction leaves it; no marker.
        let [sessions, ended_sessions, ..] = &store.trees;
        let first: Vec<(sled::IVec, sled::IVec)> = sessions
            .iter()
            .filter_map(|item| {
                let (key, value) = item.expect("read");
                let s: SessionRecord = sled_codec::decode(&value).expect("decodes");
                (s.state != SessionState::Active).then_some((key, value))
            })
            .take(100)
            .collect();
        for (key, value) in &first {
            ended_sessions.insert(key, value).expect("insert");
            sessions.remove(key).expect("remove");
        }
        assert!(!store.states_agree());
        store.migrate().expect("finishes");
        assert!(store.states_agree());
        assert_eq!(store.trees[1].len(), (BATCH + 10).div_ceil(3), "every revoked session moved, once");
        // Marked: a record written by hand in the wrong tree stays there.
        let mut late = fixtures::session(Timestamp::now());
        late.end(SessionState::Expired, Timestamp::now());
        store.trees[0].insert(late.id.as_bytes(), late.encode().expect("encodes")).expect("insert");
        store.migrate().expect("again");
        assert!(store.trees[0].contains_key(late.id.as_bytes()).expect("read"), "converted once only");
    }
}
