//! The spool: a SQLite database and its lock files in one private directory (SPEC §6).
//!
//! Everything that touches SQL lives under this module; the rest of telespool talks
//! to it through [`Spool`]'s methods and plain data types. Writes go through
//! [`Spool::write`], which holds the lock file, runs one `IMMEDIATE` transaction,
//! brings the schema up to date, folds the inbox into `events`, applies the limits and
//! commits — so every write, whoever makes it, follows the same rules. The one
//! exception is a small append ([`Spool::append`]), which may instead add its rows to the
//! inbox after checking the same limits; see `inbox.rs` for why.

mod append;
mod claim;
mod dir;
mod import;
mod inbox;
mod limits;
mod lock;
mod meta;
mod purge;
mod quarantine;
mod schema;
mod summary;
mod tally;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::event::{Kind, Status};
use crate::level::Level;
use crate::wire::Millis;

pub use append::{NewEvent, NewStream};
pub use claim::{
    Backoff, Batch, BatchLimits, Claim, Cursor, Plan, RunRecord, Settlement, Span, UploadState,
};
pub use dir::FsKind;
pub use import::Imported;
pub use limits::Limits;
pub use lock::{FileLock, LOCK_FILE, LOCK_WAIT, UPLOAD_LOCK_FILE};
pub use meta::LastUpload;
pub use purge::PurgeSelector;
pub use summary::Summary;

pub const DB_FILE: &str = "spool.db";

const SQL_IO_PREFIX: &str = "spool database error: ";
const DISK_FULL: &str = "the disk is full or the quota is used up; free some space (or lower \
                         TELESPOOL_MAX_BYTES) and try again";

/// An event as the spool holds it, with the envelope fields of its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub kind: Kind,
    pub status: Status,
    pub ts: Millis,
    pub level: Level,
    /// Canonical JSON of the parameters, as `Event::parameters_json` made it.
    pub parameters: String,
    pub session_id: String,
    pub client_ver: String,
    pub schema_ver: String,
}

/// Whether a write moves the inbox into `events` before its own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    First,
    Not,
}

/// An open spool directory.
pub struct Spool {
    dir: PathBuf,
    fs: FsKind,
    conn: Option<Connection>,
    /// Whether this connection's journal mode has been checked under the lock.
    ready: bool,
    /// Set when this process moved a corrupt database aside.
    quarantined_now: Option<String>,
}

impl Spool {
    /// Opens the spool for writing, creating its directory (0700) if needed.
    pub fn open(dir: &Path) -> Result<Spool> {
        dir::prepare(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            fs: dir::filesystem_kind(dir),
            conn: None,
            ready: false,
            quarantined_now: None,
        })
    }

    /// Opens an existing spool for reading only; `None` if there is none yet, so that
    /// looking never creates anything.
    pub fn open_existing(dir: &Path) -> Result<Option<Spool>> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot read {}: {e}", dir.display()))),
            Ok(_) => dir::check(dir)?,
        }
        if !dir.join(DB_FILE).exists() {
            return Ok(None);
        }
        Ok(Some(Spool {
            dir: dir.to_path_buf(),
            fs: dir::filesystem_kind(dir),
            conn: None,
            ready: false,
            quarantined_now: None,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn filesystem(&self) -> FsKind {
        self.fs
    }

    /// The journal mode this spool uses: WAL only where every process shares one
    /// kernel; network filesystems get a rollback journal.
    pub fn journal_mode(&self) -> &'static str {
        match self.fs {
            FsKind::Local => "wal",
            FsKind::Network(_) => "delete",
        }
    }

    /// The file name a corrupt database was moved to by this process, if any.
    pub fn quarantined_now(&self) -> Option<&str> {
        self.quarantined_now.as_deref()
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    fn connection(&mut self) -> Result<&mut Connection> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    fn connect(&self) -> Result<Connection> {
        let path = self.db_path();
        // Create the file ourselves first, so it (and the journals SQLite gives the
        // same mode) is private from the start.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::cant_write(&self.dir, e))?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sql_error(e))?;
        // Our lock file serializes writers; this only covers a reader's brief hold.
        conn.busy_timeout(LOCK_WAIT)
            .map_err(|e| self.sql_error(e))?;
        // FULL in WAL mode syncs the log at each commit; EXTRA in rollback mode also
        // syncs the directory after the journal is deleted, without which a power cut
        // right after a commit could bring the journal back and undo it.
        let synchronous = match self.fs {
            FsKind::Local => "FULL",
            FsKind::Network(_) => "EXTRA",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(|e| self.sql_error(e))?;
        Ok(conn)
    }

    fn connect_immutable(&self) -> Result<Connection> {
        let mut uri = std::ffi::OsString::from("file:");
        uri.push(self.db_path().as_os_str());
        uri.push("?immutable=1");
        Connection::open_with_flags(
            std::path::Path::new(&uri),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sql_error(e))
    }

    /// Runs `work` in one write transaction under the spool lock, with the schema
    /// current and, if `limits` is given, the limits applied before the commit.
    ///
    /// A corrupt database found on the way is moved aside and `work` runs again on a
    /// fresh one; `work` must therefore be safe to run twice.
    pub fn write<T>(
        &mut self,
        limits: Option<&Limits>,
        work: impl FnMut(&Transaction) -> Result<T>,
    ) -> Result<T> {
        self.write_as(Fold::First, limits, work)
    }

    /// [`Spool::write`] for an append, which decides itself whether to fold the inbox
    /// and apply the limits (see [`Spool::append`]).
    fn write_append<T>(&mut self, work: impl FnMut(&Transaction) -> Result<T>) -> Result<T> {
        self.write_as(Fold::Not, None, work)
    }

    fn write_as<T>(
        &mut self,
        fold: Fold,
        limits: Option<&Limits>,
        mut work: impl FnMut(&Transaction) -> Result<T>,
    ) -> Result<T> {
        // Open the database and read its header before queueing for the lock: with
        // hundreds of writers, that start-up work then runs side by side instead of
        // one writer at a time. Errors here are left for the locked attempt to meet
        // and handle (a damaged file is only quarantined under the lock).
        if let Ok(conn) = self.connection() {
            let _ = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
        }
        let _lock = FileLock::acquire(&self.dir, LOCK_FILE, LOCK_WAIT)?;
        let mut attempt = 0;
        loop {
            match self.write_locked(fold, limits, &mut work) {
                Err(Error::Corrupt(reason)) if attempt == 0 => {
                    attempt += 1;
                    self.quarantine(&reason)?;
                }
                other => return other,
            }
        }
    }

    fn write_locked<T>(
        &mut self,
        fold: Fold,
        limits: Option<&Limits>,
        work: &mut impl FnMut(&Transaction) -> Result<T>,
    ) -> Result<T> {
        let dir = self.dir.clone();
        let mode = self.journal_mode();
        let ready = self.ready;
        let conn = self.connection()?;
        let result = (|| {
            if !ready {
                let _: String =
                    conn.pragma_update_and_check(None, "journal_mode", mode, |r| r.get(0))?;
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            schema::migrate(&tx, &dir)?;
            if fold == Fold::First {
                inbox::fold(&tx)?;
            }
            let out = work(&tx)?;
            if let Some(limits) = limits {
                limits::enforce(&tx, limits, crate::wire::now_millis())?;
            }
            tx.commit()?;
            Ok(out)
        })();
        match result {
            Ok(out) => {
                self.ready = true;
                Ok(out)
            }
            Err(e) => Err(self.contextualize(e)),
        }
    }

    /// Runs `work` in a read transaction, without the lock. A corrupt database is
    /// moved aside (under the lock) and `work` runs on the fresh, empty one.
    pub fn read<T>(&mut self, mut work: impl FnMut(&Transaction) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match self.read_once(&mut work) {
                Err(Error::Corrupt(reason)) if attempt == 0 => {
                    attempt += 1;
                    let _lock = FileLock::acquire(&self.dir, LOCK_FILE, LOCK_WAIT)?;
                    self.quarantine(&reason)?;
                    // Start the fresh spool now, so the next writer finds it ready.
                    self.write_locked(Fold::First, None, &mut |_| Ok(()))?;
                }
                // A full disk can stop SQLite making the files a normal read needs;
                // the data is still there, so read it as a snapshot.
                Err(Error::CantWrite { .. }) if attempt == 0 => {
                    attempt += 1;
                    self.conn = Some(self.connect_immutable()?);
                }
                other => return other,
            }
        }
    }

    /// [`Spool::read`], seeing the inbox as the next write will leave it: folded into
    /// `events`. The fold happens in this read's own transaction and is rolled back, so
    /// nothing is written (for `upload --dry-run`, whose bodies must be those an upload
    /// would send). The transaction is `IMMEDIATE`, as a fold is a write: a deferred one
    /// could not upgrade once another writer had committed. Where the spool cannot be
    /// written at all, `events` alone is read.
    fn read_folded<T>(&mut self, mut work: impl FnMut(&Transaction) -> Result<T>) -> Result<T> {
        let conn = self.connection()?;
        let folded = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)
            .and_then(|tx| {
                inbox::fold(&tx)?;
                let out = work(&tx)?;
                tx.rollback()?;
                Ok(out)
            });
        match folded.map_err(|e| self.contextualize(e)) {
            Err(Error::CantWrite { .. }) => self.read(work),
            other => other,
        }
    }

    fn read_once<T>(&mut self, work: &mut impl FnMut(&Transaction) -> Result<T>) -> Result<T> {
        let dir = self.dir.clone();
        if self.conn.is_none() && !dir::writable(&dir) {
            // A read-only filesystem (or directory): SQLite cannot make its journal
            // or shared-memory files, so read the file as an immutable snapshot.
            self.conn = Some(self.connect_immutable()?);
        }
        let version: i64 = self
            .connection()?
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql_error(e))?;
        schema::check_not_newer(version, &dir)?;
        if version < schema::CURRENT {
            // A new or older spool: bring it up to date under the lock first.
            self.write(None, |_| Ok(()))?;
        }
        let conn = self.connection()?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            work(&tx)
        })();
        result.map_err(|e| self.contextualize(e))
    }

    /// Moves what waits in the inbox into `events`, when anything does and the spool
    /// can be written; for the reads that follow `events` alone (an upload's horizon, a
    /// purge's count). On a spool that cannot be written they see what `events` holds.
    fn fold_inbox(&mut self) -> Result<()> {
        if self.read(inbox::is_empty)? {
            return Ok(());
        }
        match self.write(None, |_| Ok(())) {
            Err(Error::CantWrite { .. }) => Ok(()),
            other => other,
        }
    }

    /// Adds the spool's path to errors that lack it, and tells a full disk from other
    /// I/O errors: SQLite reports a failed write to its shared-memory or journal file
    /// as a generic I/O error even when the cause is ENOSPC.
    fn contextualize(&self, e: Error) -> Error {
        match e {
            Error::Io(msg) if msg.starts_with(SQL_IO_PREFIX) && dir::nearly_full(&self.dir) => {
                Error::cant_write(&self.dir, DISK_FULL)
            }
            Error::CantWrite { path, reason } if path.as_os_str().is_empty() => {
                Error::cant_write(&self.dir, reason)
            }
            Error::TempFail(msg) if msg.is_empty() => Error::temp_fail(format!(
                "the spool database at {} stayed busy; nothing was written, try again later",
                self.dir.display()
            )),
            other => other,
        }
    }

    fn sql_error(&self, e: rusqlite::Error) -> Error {
        self.contextualize(Error::from(e))
    }

    /// Confirms the damage with a fresh connection, then moves the database aside.
    fn quarantine(&mut self, reason: &str) -> Result<()> {
        self.conn = None;
        self.ready = false;
        if !quarantine::confirm_corrupt(&self.db_path()) {
            return Err(Error::io(format!(
                "the spool database at {} reported damage ({reason}) but checks out now; \
                 nothing was changed, try again",
                self.dir.display()
            )));
        }
        let moved = quarantine::move_aside(&self.dir, DB_FILE)?;
        eprintln!(
            "telespool: warning: the spool database at {} was damaged ({reason}); it was moved \
             aside to {moved} and a fresh spool started",
            self.dir.display()
        );
        self.quarantined_now = Some(moved);
        Ok(())
    }
}

/// File names of damaged databases moved aside in the spool directory `dir`.
pub fn quarantined_in(dir: &Path) -> Vec<String> {
    quarantine::list(dir, DB_FILE)
}

/// Bytes every file in the spool directory `dir` takes.
pub fn size_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        let code = e.sqlite_error_code();
        let text = e.to_string();
        match code {
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                Error::Corrupt(text)
            }
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                Error::temp_fail(String::new())
            }
            Some(ErrorCode::DiskFull) => Error::cant_write(PathBuf::new(), DISK_FULL),
            Some(ErrorCode::ReadOnly)
            | Some(ErrorCode::CannotOpen)
            | Some(ErrorCode::PermissionDenied) => Error::cant_write(PathBuf::new(), text),
            _ => {
                let extended = e.sqlite_error().map_or(0, |f| f.extended_code);
                Error::io(format!("{SQL_IO_PREFIX}{text} (SQLite code {extended})"))
            }
        }
    }
}
