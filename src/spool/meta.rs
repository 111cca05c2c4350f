//! Small facts kept in the `meta` table, shared by every host using the spool.

use rusqlite::{OptionalExtension, Transaction};

use crate::error::Result;
use crate::wire::Millis;

/// Events dropped by limits or expiry since the spool was created.
pub const DROPPED: &str = "dropped";
/// The secret key of Slurm session ids (32 random bytes).
pub const SLURM_KEY: &str = "slurm_key";
/// Before this time (ms) an upload sends nothing, unless `--now`.
pub const NEXT_ATTEMPT: &str = "next_attempt";
pub const LAST_UPLOAD_AT: &str = "last_upload_at";
pub const LAST_UPLOAD_RESULT: &str = "last_upload_result";
pub const LAST_UPLOAD_DETAIL: &str = "last_upload_detail";
/// Consecutive upload runs that ended in a temporary failure, for the doubling backoff.
pub const UPLOAD_FAILURES: &str = "upload_failures";

pub fn get_i64(tx: &Transaction, key: &str) -> Result<Option<i64>> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn get_text(tx: &Transaction, key: &str) -> Result<Option<String>> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn get_blob(tx: &Transaction, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn set(tx: &Transaction, key: &str, value: impl rusqlite::ToSql) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value],
    )?;
    Ok(())
}

pub fn remove(tx: &Transaction, key: &str) -> Result<()> {
    tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
    Ok(())
}

pub fn add_dropped(tx: &Transaction, n: u64) -> Result<()> {
    if n > 0 {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            rusqlite::params![DROPPED, n as i64],
        )?;
    }
    Ok(())
}

/// The outcome of the last upload run, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUpload {
    pub at: Millis,
    /// `ok`, `rejected`, `retry` or `refused`.
    pub result: String,
    pub detail: String,
}

pub fn last_upload(tx: &Transaction) -> Result<Option<LastUpload>> {
    let Some(at) = get_i64(tx, LAST_UPLOAD_AT)? else {
        return Ok(None);
    };
    Ok(Some(LastUpload {
        at,
        result: get_text(tx, LAST_UPLOAD_RESULT)?.unwrap_or_default(),
        detail: get_text(tx, LAST_UPLOAD_DETAIL)?.unwrap_or_default(),
    }))
}

/// The spool's Slurm session key, created on first use.
pub fn slurm_key(tx: &Transaction) -> Result<[u8; 32]> {
    if let Some(bytes) = get_blob(tx, SLURM_KEY)? {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
    }
    let key = crate::session::new_key()?;
    set(tx, SLURM_KEY, &key[..])?;
    Ok(key)
}
