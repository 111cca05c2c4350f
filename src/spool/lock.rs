//! The spool's lock files, held with the standard library's `File::lock` family
//! (`flock(2)`, which Linux carries over NFS as a lock-manager lock).
//!
//! Every write to the database happens while holding `spool.lock` exclusively, so
//! writers on many hosts queue here in our code with a bounded wait, instead of
//! meeting SQLite's "database is locked" after an unbounded one. `upload.lock` is held
//! for a whole upload run, so two cron runs never send the same batch twice.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = "spool.lock";
pub const UPLOAD_LOCK_FILE: &str = "upload.lock";

/// How long a writer waits for the lock before giving up with exit 75 (SPEC §6).
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// An exclusive lock on a lock file; released when dropped (or when the process dies,
/// which is what makes `kill -9` safe).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits up to `wait` for the lock.
    ///
    /// The uncontended case is one `try_lock`. Otherwise a helper thread makes the
    /// blocking `lock()` call while this one waits on a channel with a deadline: a
    /// blocked caller is woken by the kernel (or, on NFS, granted by the lock manager)
    /// as soon as the lock is free, instead of polling and losing the race to newer
    /// writers, and the bound still holds on a filesystem where `lock()` hangs. If the
    /// deadline passes, the helper keeps waiting and lets go of the lock the moment it
    /// gets it, since nobody is left to use it.
    pub fn acquire(dir: &Path, name: &str, wait: Duration) -> Result<FileLock> {
        let file = open_lock_file(dir, name)?;
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(lock_error(dir, name, e)),
        }
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("telespool-lock".into())
            .spawn(move || {
                let result = file.lock().map(|()| file);
                // A send fails only when the waiter gave up; dropping the file then
                // releases the lock at once.
                let _ = tx.send(result);
            })
            .map_err(|e| Error::io(format!("cannot wait for the spool lock: {e}")))?;
        match rx.recv_timeout(wait) {
            Ok(Ok(file)) => Ok(FileLock { _file: file }),
            Ok(Err(e)) => Err(lock_error(dir, name, e)),
            Err(_) => Err(Error::temp_fail(format!(
                "the spool at {} stayed locked for {} s (a stuck process, or a hung \
                 filesystem?); nothing was written, try again later",
                dir.display(),
                wait.as_secs()
            ))),
        }
    }

    /// Takes the lock only if it is free right now.
    pub fn try_acquire(dir: &Path, name: &str) -> Result<Option<FileLock>> {
        let file = open_lock_file(dir, name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(lock_error(dir, name, e)),
        }
    }
}

fn lock_error(dir: &Path, name: &str, e: std::io::Error) -> Error {
    Error::io(format!("cannot lock {}: {e}", dir.join(name).display()))
}

fn open_lock_file(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| match e.kind() {
            ErrorKind::IsADirectory => Error::io(format!(
                "{} is a directory, not a lock file; remove it (`rmdir`) and try again",
                path.display()
            )),
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                Error::cant_write(dir, e)
            }
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::cant_write(dir, e),
            _ => Error::io(format!("cannot open {}: {e}", path.display())),
        })
}
