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
use std::time::{Duration, Instant};

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
    /// Waits up to `wait` for the lock, polling so the bound holds even on filesystems
    /// where a blocking lock call could hang.
    pub fn acquire(dir: &Path, name: &str, wait: Duration) -> Result<FileLock> {
        let file = open_lock_file(dir, name)?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::temp_fail(format!(
                        "the spool at {} stayed locked for {} s (a stuck process, or a hung \
                         filesystem?); nothing was written, try again later",
                        dir.display(),
                        wait.as_secs()
                    )))
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io(format!(
                        "cannot lock {}: {e}",
                        dir.join(name).display()
                    )))
                }
            }
        }
    }

    /// Takes the lock only if it is free right now.
    pub fn try_acquire(dir: &Path, name: &str) -> Result<Option<FileLock>> {
        let file = open_lock_file(dir, name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io(format!(
                "cannot lock {}: {e}",
                dir.join(name).display()
            ))),
        }
    }
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
