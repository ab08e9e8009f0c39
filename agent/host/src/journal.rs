//! The node agent's state journal: what the agent intends to do and did to the kernel, kept
//! so a crash, a restart or a reboot never leaves objects it cannot account for.
//!
//! One JSON object per line in `journal.jsonl` (format and guarantees: docs/journal.md). It is
//! generic over the record type: it stores whatever the engine's ops serialize to and knows
//! nothing of their meaning. One writer at a time holds `lock` in the state directory (an
//! `flock(2)` lock, so `flock -n` sees it too); readers that only report (`status`) use
//! [`Journal::read_only`] and take no lock. A torn last line (a crash while it was written) is
//! cut off and reported; any other damage is an error naming the line, never skipped.
//! It must not decide what to do about a reboot or when to compact: it reports, the caller acts.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use line::{HeaderLine, RecordLine, SnapshotLine, encode};
use replay::replay;

mod line;
mod replay;

/// The one format version this build reads and writes (`"v"` on every line).
pub const FORMAT_VERSION: u64 = 1;
/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// Where compaction writes the next journal before renaming it over [`JOURNAL_FILE`].
pub const COMPACT_FILE: &str = "journal.jsonl.tmp";
/// The single-writer lock's file name in the state directory.
pub const LOCK_FILE: &str = "lock";
/// `"kind"` of the header line that starts every journal file.
pub const HEADER_KIND: &str = "ipvs-migrate-journal";

/// Bytes read from the lock file to name its holder.
const HOLDER_MAX: u64 = 512;

/// What can go wrong with the journal; every variant names the file, and the line where
/// one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file-system call failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("open", "fsync", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process (or another open in this one) holds the writer's lock.
    #[error("{path} is held by another ipvs-migrate ({holder}); only one writer at a time")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into the lock file: `pid=<pid> cmd=<argv0 subcommand>`.
        holder: String,
    },
    /// A line other than the last is damaged or out of place; nothing after it is trusted.
    #[error("{path}:{line}: corrupt journal: {reason}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A line carries a format version this build does not know.
    #[error(
        "{path}:{line}: journal format version {found} is not supported (this build knows \
         version {FORMAT_VERSION}); run the ipvs-migrate release that wrote it"
    )]
    UnsupportedVersion {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The `"v"` value as written.
        found: String,
    },
    /// A line is intact but its record does not decode as this build's record type.
    #[error("{path}:{line}: journal record does not decode as this build's record type: {source}")]
    Record {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The decoder's message.
        source: serde_json::Error,
    },
    /// A record could not be serialized (nothing was written).
    #[error("cannot encode a journal record: {source}")]
    Encode {
        /// The encoder's message.
        source: serde_json::Error,
    },
    /// An earlier write or fsync failed, so the end of the file is unknown; appending after it
    /// could bury a partial line in the middle. Drop the journal and open it again.
    #[error("an earlier write to {path} failed; reopen the journal to recover")]
    Poisoned {
        /// The journal file.
        path: PathBuf,
    },
    /// The kernel's boot id could not be read.
    #[error("cannot read the boot id from {path}: {reason}")]
    BootId {
        /// The boot_id file under the host root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What replaying the journal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<R> {
    /// The snapshot written by the last compaction, if any.
    pub snapshot: Option<R>,
    /// Records appended after the snapshot (or since the journal began), oldest first.
    pub records: Vec<R>,
    /// The journal was last written under another boot id: the kernel state it describes
    /// was lost at reboot and must be reconciled from what the kernel holds now.
    pub boot_changed: bool,
    /// The boot id of the last intact line (`None` for a new or empty journal).
    pub recorded_boot: Option<String>,
    /// 1-based number of a torn last line (a crash while it was written). [`Journal::open`]
    /// has cut it off; [`Journal::read_only`] only reports it.
    pub torn_tail: Option<u64>,
}

/// The journal, opened for writing: holds the state directory's lock until dropped.
#[derive(Debug)]
pub struct Journal<R> {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Held for the flock; closing it (drop) releases the lock.
    _lock: File,
    boot: String,
    next_seq: u64,
    since_snapshot: u64,
    poisoned: bool,
    _record: PhantomData<fn() -> R>,
}

impl<R: Serialize + DeserializeOwned> Journal<R> {
    /// Opens (or creates) the journal in `state_dir` as its single writer and replays it.
    /// Creates `state_dir` (mode 0700) if missing, takes the lock (failing with
    /// [`JournalError::Locked`] if held), removes a compaction file left by a crash, cuts a
    /// torn last line off, and starts a new file with a header if there is none.
    pub fn open(state_dir: &Path, boot_id: &str) -> Result<(Self, Opened<R>), JournalError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_err("create", state_dir))?;
        let lock = lock(state_dir)?;
        remove_stale_compaction(state_dir)?;
        let path = state_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let replay = replay::<R>(&path, &file, boot_id)?;
        if let Some(line) = replay.opened.torn_tail {
            tracing::warn!(path = %path.display(), line, "cutting off a torn last journal line");
            file.set_len(replay.good_len)
                .map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        let mut journal = Journal {
            dir: state_dir.to_path_buf(),
            path,
            file,
            _lock: lock,
            boot: boot_id.to_owned(),
            next_seq: replay.next_seq,
            since_snapshot: replay.opened.records.len() as u64,
            poisoned: false,
            _record: PhantomData,
        };
        if replay.good_len == 0 {
            // New (or emptied by a torn header): start it with a header, and make the
            // directory entry durable too.
            let header = encode(&HeaderLine {
                v: FORMAT_VERSION,
                kind: HEADER_KIND,
                seq: journal.next_seq,
                boot: boot_id,
            })?;
            journal.write_durably(&header)?;
            sync_dir(&journal.dir)?;
            journal.next_seq = journal.next_seq.saturating_add(1);
        }
        Ok((journal, replay.opened))
    }

    /// Replays the journal in `state_dir` without taking the lock and without changing any
    /// file (a torn last line is only reported: the writer may be writing it right now).
    /// `None` when there is no journal.
    pub fn read_only(state_dir: &Path, boot_id: &str) -> Result<Option<Opened<R>>, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        Ok(Some(replay::<R>(&path, &file, boot_id)?.opened))
    }

    /// Appends one record and makes it durable (`fdatasync`) before returning its sequence
    /// number: an intent must be on disk before the kernel op it announces runs.
    pub fn append(&mut self, rec: &R) -> Result<u64, JournalError> {
        self.check_usable()?;
        let seq = self.next_seq;
        let line = encode(&RecordLine {
            v: FORMAT_VERSION,
            seq,
            boot: &self.boot,
            rec,
        })?;
        self.write_durably(&line)?;
        self.next_seq = seq.saturating_add(1);
        self.since_snapshot += 1;
        Ok(seq)
    }

    /// Replaces the journal by a header and `snapshot`: written to [`COMPACT_FILE`], fsynced,
    /// renamed over [`JOURNAL_FILE`], directory fsynced. Later appends go to the new file. On
    /// an error before the rename the old journal is untouched and still in use.
    pub fn compact(&mut self, snapshot: &R) -> Result<(), JournalError> {
        self.check_usable()?;
        let seq = self.next_seq;
        let mut bytes = encode(&HeaderLine {
            v: FORMAT_VERSION,
            kind: HEADER_KIND,
            seq,
            boot: &self.boot,
        })?;
        bytes.extend(encode(&SnapshotLine {
            v: FORMAT_VERSION,
            seq: seq.saturating_add(1),
            boot: &self.boot,
            snapshot,
        })?);
        let tmp = self.dir.join(COMPACT_FILE);
        let file = match write_new_file(&tmp, &bytes).and_then(|file| {
            fs::rename(&tmp, &self.path)
                .map(|()| file)
                .map_err(|e| ("rename", e))
        }) {
            Ok(file) => file,
            Err((action, e)) => {
                // rename(2) is atomic: on failure the old journal is still the journal.
                let _ = fs::remove_file(&tmp);
                return Err(JournalError::Io {
                    action,
                    path: tmp,
                    source: e,
                });
            }
        };
        self.file = file;
        self.next_seq = seq.saturating_add(2);
        self.since_snapshot = 0;
        if let Err(e) = sync_dir(&self.dir) {
            // The rename may not survive a crash, and appends to the new file with it.
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// Records appended since the last snapshot (or since the journal began): the caller's
    /// measure for deciding when to compact.
    pub fn records_since_snapshot(&self) -> u64 {
        self.since_snapshot
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_usable(&self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// One `write` of whole lines, then `fdatasync`; any failure poisons the journal.
    fn write_durably(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        let result = (&self.file)
            .write_all(bytes)
            .map_err(io_err("write", &self.path))
            .and_then(|()| self.file.sync_data().map_err(io_err("fsync", &self.path)));
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

/// Reads the kernel's boot id (`/proc/sys/kernel/random/boot_id`, a UUID that changes at
/// every boot; proc(5)) below `root` (`/` on the node, the mounted host root in a pod).
pub fn boot_id(root: &Path) -> Result<String, JournalError> {
    let path = root.join("proc/sys/kernel/random/boot_id");
    let text = fs::read_to_string(&path).map_err(|e| JournalError::BootId {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let id = text.trim();
    let shaped = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if !shaped {
        return Err(JournalError::BootId {
            path,
            reason: format!("{id:?} is not a boot id (a UUID such as 3f2c1e9a-...)"),
        });
    }
    Ok(id.to_owned())
}

/// Takes the writer's lock and writes who holds it; on contention reads who does.
fn lock(state_dir: &Path) -> Result<File, JournalError> {
    let path = state_dir.join(LOCK_FILE);
    // Never truncate on open: the file names the current holder until we hold the lock.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = read_holder(&file);
            return Err(JournalError::Locked { path, holder });
        }
        Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    file.set_len(0).map_err(io_err("truncate", &path))?;
    (&file)
        .write_all(holder_text().as_bytes())
        .map_err(io_err("write", &path))?;
    Ok(file)
}

/// `pid=<pid> cmd=<argv0 subcommand>` of this process, on one line.
fn holder_text() -> String {
    let cmd: Vec<String> = std::env::args_os()
        .take(2)
        .map(|a| a.to_string_lossy().replace(['\n', '\r'], " "))
        .collect();
    format!("pid={} cmd={}\n", std::process::id(), cmd.join(" "))
}

fn read_holder(file: &File) -> String {
    let mut bytes = Vec::new();
    let text = match file.take(HOLDER_MAX).read_to_end(&mut bytes) {
        Ok(_) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(e) => return format!("holder unknown: cannot read the lock file: {e}"),
    };
    if text.is_empty() {
        return "holder unknown: the lock file names no process yet".into();
    }
    text
}

/// A compaction file is only ever complete once renamed; one still here is from a crash
/// before the rename, and the journal beside it is the valid one.
fn remove_stale_compaction(state_dir: &Path) -> Result<(), JournalError> {
    let tmp = state_dir.join(COMPACT_FILE);
    match fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::warn!(path = %tmp.display(), "removed an unfinished journal compaction");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &tmp)(e)),
    }
}

/// Creates `path` (replacing a leftover), writes `bytes` and fsyncs; the handle appends.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<File, (&'static str, io::Error)> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(("remove", e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ("create", e))?;
    file.write_all(bytes).map_err(|e| ("write", e))?;
    file.sync_all().map_err(|e| ("fsync", e))?;
    Ok(file)
}

/// fsync on the directory makes a created or renamed entry durable (fsync(2), NOTES).
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
