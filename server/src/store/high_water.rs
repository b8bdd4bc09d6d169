//! The high-water mark: a small file beside the embedded store recording
//! how far its committed history had reached, so that a store that lost
//! part of it is refused at start instead of served.
//!
//! sled takes the first bad checksum in its log for the end of the log: a
//! flipped byte, a truncated file or a restored old copy silently drops
//! everything after it (revocations, users, events), and a bad first byte
//! makes the store look empty — and an empty store is where Sigil creates a
//! new signing key and bootstrap admin. sled cannot tell; a record kept
//! outside its log can.
//!
//! What the mark holds only ever grows: the highest revocation-log sequence
//! and the highest audit-event sequence committed, and whether the store
//! held a signing key (it has one from its first start on). Counts of users
//! or sessions go down in normal operation and are not used.
//!
//! The mark is written after a flush of the store, with values read before
//! that flush, so it never claims more than the store had made durable: a
//! `kill -9` at any moment leaves a mark at or behind the store, never
//! ahead (no false alarm after a crash). It is written atomically (temp
//! file, fsync, rename, fsync of the directory), so a crash leaves the old
//! mark or the new one, never a torn one.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// The mark's file name inside the data directory.
pub(crate) const FILE_NAME: &str = "high-water.json";

/// What to do when the store opened behind its high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDataLoss {
    /// Refuse to start, saying what is missing and the ways out.
    Refuse,
    /// Start anyway (the operator said so): reset the mark to what the
    /// store holds and record the loss in the audit trail.
    Accept,
}

/// How far a store's committed history reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HighWaterMark {
    /// The highest revocation-log sequence committed.
    pub revocation_sequence: u64,
    /// The highest audit-event sequence committed.
    pub event_sequence: u64,
    /// Whether the store held a signing key: it does from its first start
    /// on, so a store without one after that is one that lost everything.
    pub held_data: bool,
}

impl HighWaterMark {
    /// What `recovered` (the store as it opened) lacks of this mark, one
    /// line per kind of history, or `None` when it lacks nothing.
    pub(crate) fn shortfall(&self, recovered: &HighWaterMark) -> Option<String> {
        let mut missing = Vec::new();
        if self.held_data && !recovered.held_data {
            missing.push("the store opened empty (not even a signing key) although it held data".to_string());
        }
        if recovered.revocation_sequence < self.revocation_sequence {
            missing.push(format!(
                "the revocation log ends at sequence {} but reached sequence {}: revoked sessions and tokens would be valid again",
                recovered.revocation_sequence, self.revocation_sequence
            ));
        }
        if recovered.event_sequence < self.event_sequence {
            missing.push(format!(
                "the audit trail ends at sequence {} but reached sequence {}: later users, sessions and changes are gone",
                recovered.event_sequence, self.event_sequence
            ));
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }

    /// The later of two marks, field by field.
    pub(crate) fn max(self, other: HighWaterMark) -> HighWaterMark {
        HighWaterMark {
            revocation_sequence: self.revocation_sequence.max(other.revocation_sequence),
            event_sequence: self.event_sequence.max(other.event_sequence),
            held_data: self.held_data || other.held_data,
        }
    }
}

/// Why the mark could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the high-water mark {path} cannot be read: {reason}")]
pub(crate) struct UnreadableMark {
    /// The file.
    pub path: PathBuf,
    /// Why (I/O error or invalid contents).
    pub reason: String,
}

/// The mark's file in one data directory.
#[derive(Debug, Clone)]
pub(crate) struct HighWaterFile {
    dir: PathBuf,
    path: PathBuf,
}

impl HighWaterFile {
    /// The mark of the store in `dir`.
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), path: dir.join(FILE_NAME) }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded mark; `None` when there is no file.
    pub(crate) fn read(&self) -> Result<Option<HighWaterMark>, UnreadableMark> {
        let unreadable = |reason: String| UnreadableMark { path: self.path.clone(), reason };
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e.to_string())),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| unreadable(format!("invalid contents: {e}")))
    }

    /// Replaces the recorded mark, atomically and durably.
    pub(crate) fn write(&self, mark: &HighWaterMark) -> io::Result<()> {
        let temp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(mark).map_err(io::Error::other)?;
        bytes.push(b'\n');
        {
            let mut file = File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&temp, &self.path)?;
        // The rename is durable only once the directory is.
        File::open(&self.dir)?.sync_all()
    }
}

/// How often a mark that advanced only in its event sequence is written.
/// Events come with nearly every write (logins, refreshes), and writing the
/// file costs two fsyncs; revocations, the history that matters most, are
/// written as soon as a flush covered them.
const EVENT_MARK_INTERVAL: Duration = Duration::from_millis(250);

/// Writes the marks that flushes covered to the file, on its own thread:
/// the file's fsyncs never delay a flush or an acknowledgement, and marks
/// that arrive while one is written are coalesced into the next write.
#[derive(Debug)]
pub(crate) struct HighWaterRecorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    file: HighWaterFile,
    state: Mutex<State>,
    wake: Condvar,
    /// Held while the file is written, so writes never interleave and the
    /// file never goes back to an older mark.
    writing: Mutex<()>,
}

#[derive(Debug)]
struct State {
    written: HighWaterMark,
    written_at: Instant,
    pending: Option<HighWaterMark>,
    /// Whether the last write failed (so that a failing disk is logged
    /// once, not on every flush).
    failing: bool,
    closed: bool,
}

impl HighWaterRecorder {
    /// A recorder whose file holds `written` (just written); starts its
    /// writing thread.
    pub(crate) fn start(file: HighWaterFile, written: HighWaterMark) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            file,
            state: Mutex::new(State {
                written,
                written_at: Instant::now(),
                pending: None,
                failing: false,
                closed: false,
            }),
            wake: Condvar::new(),
            writing: Mutex::new(()),
        });
        let writer = shared.clone();
        thread::Builder::new().name("sigil-high-water".into()).spawn(move || writer.run())?;
        Ok(Self { shared })
    }

    /// Notes that a flush covered `covered` (read before it started): the
    /// thread writes it soon (see [`EVENT_MARK_INTERVAL`]).
    pub(crate) fn covered(&self, covered: HighWaterMark) {
        let mut state = self.shared.lock_state();
        state.pending = Some(state.pending.map_or(covered, |pending| pending.max(covered)));
        self.shared.wake.notify_one();
    }

    /// Writes `mark` now (at a clean stop, after the last flush).
    pub(crate) fn write_now(&self, mark: HighWaterMark) -> io::Result<()> {
        self.shared.write(mark)
    }
}

impl Drop for HighWaterRecorder {
    fn drop(&mut self) {
        self.shared.lock_state().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writing thread: waits for a mark that is due, writes it.
    fn run(&self) {
        loop {
            let mut state = self.lock_state();
            let due = loop {
                if state.closed {
                    return;
                }
                let Some(pending) = state.pending else {
                    state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                    continue;
                };
                let next = state.written.max(pending);
                if next == state.written {
                    state.pending = None;
                    continue;
                }
                let urgent = next.revocation_sequence > state.written.revocation_sequence
                    || next.held_data != state.written.held_data;
                let wait = EVENT_MARK_INTERVAL.saturating_sub(state.written_at.elapsed());
                if urgent || wait.is_zero() {
                    state.pending = None;
                    break next;
                }
                state = self.wake.wait_timeout(state, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
            };
            drop(state);
            // A failure is logged in `write`; the older mark stays, which is
            // still true, only less complete.
            let _ = self.write(due);
        }
    }

    /// Writes the later of `mark` and what was written.
    fn write(&self, mark: HighWaterMark) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = self.lock_state().written.max(mark);
        let result = self.file.write(&next);
        let mut state = self.lock_state();
        match &result {
            Ok(()) => {
                if state.failing {
                    tracing::info!(file = %self.file.path().display(), "high-water mark written again");
                }
                state.written = next;
                state.written_at = Instant::now();
                state.failing = false;
            }
            Err(e) => {
                if !state.failing {
                    tracing::warn!(file = %self.file.path().display(), error = %e, "cannot write the high-water mark; it keeps its older value until a write succeeds");
                }
                state.failing = true;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(revocation_sequence: u64, event_sequence: u64, held_data: bool) -> HighWaterMark {
        HighWaterMark { revocation_sequence, event_sequence, held_data }
    }

    #[test]
    fn a_store_at_or_ahead_of_its_mark_lacks_nothing() {
        let recorded = mark(10, 20, true);
        assert_eq!(recorded.shortfall(&recorded), None);
        // sled flushes on its own too: the store may be ahead of the mark.
        assert_eq!(recorded.shortfall(&mark(11, 25, true)), None);
        assert_eq!(HighWaterMark::default().shortfall(&HighWaterMark::default()), None);
    }

    #[test]
    fn each_kind_of_lost_history_is_named() {
        let recorded = mark(10, 20, true);
        let lost = recorded.shortfall(&mark(9, 20, true)).expect("revocations lost");
        assert!(lost.contains("revocation log ends at sequence 9 but reached sequence 10"), "{lost}");
        let lost = recorded.shortfall(&mark(10, 3, true)).expect("events lost");
        assert!(lost.contains("audit trail ends at sequence 3"), "{lost}");
        let lost = recorded.shortfall(&HighWaterMark::default()).expect("everything lost");
        assert!(lost.contains("opened empty") && lost.contains("revocation") && lost.contains("audit"), "{lost}");
    }

    #[test]
    fn the_recorder_writes_revocations_at_once_events_soon_and_never_goes_back() {
        let dir = tempfile::tempdir().expect("dir");
        let file = HighWaterFile::in_dir(dir.path());
        file.write(&mark(1, 1, true)).expect("write");
        let recorder = HighWaterRecorder::start(file.clone(), mark(1, 1, true)).expect("start");
        let read = || file.read().expect("read").expect("present");
        let eventually = |want: HighWaterMark| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while read() != want {
                assert!(Instant::now() < deadline, "the file reached {want:?} within 10 s: {:?}", read());
                thread::sleep(Duration::from_millis(5));
            }
        };
        recorder.covered(mark(2, 5, true));
        eventually(mark(2, 5, true));
        // Events alone: written within the interval, not lost.
        recorder.covered(mark(2, 9, true));
        eventually(mark(2, 9, true));
        // An older mark (marks are read before flushes that finish in
        // order, but the writes of two recorders may cross) never lowers it.
        recorder.covered(mark(1, 3, true));
        recorder.write_now(mark(2, 8, true)).expect("write now");
        assert_eq!(read(), mark(2, 9, true));
    }

    #[test]
    fn the_file_round_trips_and_damage_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let file = HighWaterFile::in_dir(dir.path());
        assert!(file.read().expect("no file is fine").is_none());
        file.write(&mark(3, 4, true)).expect("write");
        assert_eq!(file.read().expect("read"), Some(mark(3, 4, true)));
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists(), "the temp file was renamed");
        fs::write(file.path(), b"{\"revocation_sequence\": 3, \"ev").expect("damage");
        let error = file.read().expect_err("damaged");
        assert!(error.to_string().contains(FILE_NAME), "{error}");
    }
}
