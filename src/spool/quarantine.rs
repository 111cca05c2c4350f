//! Moving a damaged database aside: renamed with a timestamp, never deleted, so a
//! person can still try to rescue what it held.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

const MARK: &str = ".corrupt-";

/// Whether a fresh connection agrees the database is damaged. Guards against moving a
/// healthy spool aside because of a passing error (a flaky network filesystem).
pub fn confirm_corrupt(db: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE) else {
        return true;
    };
    match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
        Ok(result) => result != "ok",
        Err(e) => matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt) | Some(rusqlite::ErrorCode::NotADatabase)
        ),
    }
}

/// Renames `name` and its journal files to `name.corrupt-<UTC time>`; returns the new
/// name of the database file.
pub fn move_aside(dir: &Path, name: &str) -> Result<String> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let target = format!("{name}{MARK}{stamp}");
    for suffix in ["-journal", "-wal", "-shm"] {
        let from = dir.join(format!("{name}{suffix}"));
        if from.exists() {
            let _ = std::fs::rename(&from, dir.join(format!("{target}{suffix}")));
        }
    }
    std::fs::rename(dir.join(name), dir.join(&target)).map_err(|e| {
        Error::io(format!(
            "the spool database {} is damaged and cannot be moved aside ({e}); move it \
             away by hand and try again",
            dir.join(name).display()
        ))
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(target)
}

/// Names of databases moved aside, oldest first.
pub fn list(dir: &Path, name: &str) -> Vec<String> {
    let prefix = format!("{name}{MARK}");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.starts_with(&prefix)
                        && !["-journal", "-wal", "-shm"].iter().any(|s| n.ends_with(s))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
