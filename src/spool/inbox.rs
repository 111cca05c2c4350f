//! The inbox: where a small append lands, one self-contained row per event.
//!
//! Why it exists: `record` runs once per event inside every job, and its cost is the
//! pages its commit writes (each is written to the log, synced, then copied into the
//! database file when the process closes it). A row in `events` writes six — the row,
//! two index entries, the tally a trigger updates, and for a new session a `streams` row
//! and its unique index entry — where a plain insert writes one. An inbox row carries
//! its envelope fields inline and has no index and no trigger, so appending it writes
//! the one page at the end of the table.
//!
//! The rules that keep it simple:
//! - Only [`fold`] removes rows, and it always takes all of them, into `streams` and
//!   `events`, in arrival order. Row ids therefore stay contiguous, and the running
//!   totals of the last row (events, bytes, oldest and newest time) describe the whole
//!   inbox: the limits check an append against them without counting anything.
//! - Every write other than a small append folds the inbox first (`Spool::write`), so
//!   uploads, imports, purges and limit drops only ever see `events`. Reads never write:
//!   `inspect` adds what the inbox holds to what it reads from `events`.

use rusqlite::{OptionalExtension, Transaction};

use crate::error::Result;
use crate::spool::append::Row;
use crate::wire::Millis;

/// What the inbox holds, from its last row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub events: u64,
    pub bytes: u64,
    pub oldest: Option<Millis>,
    pub newest: Option<Millis>,
}

pub(super) fn totals(tx: &Transaction) -> Result<Totals> {
    let last = tx
        .prepare_cached(
            "SELECT run_events, run_bytes, run_min_ts, run_max_ts
             FROM inbox ORDER BY id DESC LIMIT 1",
        )?
        .query_row([], |r| {
            Ok(Totals {
                events: r.get::<_, i64>(0)?.max(0) as u64,
                bytes: r.get::<_, i64>(1)?.max(0) as u64,
                oldest: Some(r.get(2)?),
                newest: Some(r.get(3)?),
            })
        })
        .optional()?;
    Ok(last.unwrap_or_default())
}

/// Appends `rows` after the last row, carrying its running totals on.
pub(super) fn push(tx: &Transaction, rows: &[Row]) -> Result<()> {
    let mut run = totals(tx)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO inbox (session_id, client_ver, schema_ver, kind, status, ts, level,
                            parameters, bytes, run_events, run_bytes, run_min_ts, run_max_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for row in rows {
        run.events += 1;
        run.bytes += row.bytes.max(0) as u64;
        run.oldest = Some(run.oldest.map_or(row.ts, |t| t.min(row.ts)));
        run.newest = Some(run.newest.map_or(row.ts, |t| t.max(row.ts)));
        insert.execute(rusqlite::params![
            row.session_id,
            row.client_ver,
            row.schema_ver,
            row.kind,
            row.status,
            row.ts,
            row.level,
            row.parameters,
            row.bytes,
            run.events as i64,
            run.bytes as i64,
            run.oldest,
            run.newest,
        ])?;
    }
    Ok(())
}

/// Moves every inbox row into `streams` and `events`, in arrival order; returns how many.
pub(super) fn fold(tx: &Transaction) -> Result<u64> {
    let pending: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM inbox)")?
        .query_row([], |r| r.get(0))?;
    if !pending {
        return Ok(0);
    }
    // New streams in the order their first event arrived; existing ones are kept.
    tx.prepare_cached(
        "INSERT OR IGNORE INTO streams (session_id, client_ver, schema_ver)
         SELECT session_id, client_ver, schema_ver FROM inbox ORDER BY id",
    )?
    .execute([])?;
    let moved = tx
        .prepare_cached(
            "INSERT INTO events (stream, kind, status, ts, level, parameters, bytes)
             SELECT s.id, i.kind, i.status, i.ts, i.level, i.parameters, i.bytes
             FROM inbox i JOIN streams s
               ON s.session_id = i.session_id AND s.client_ver = i.client_ver
              AND s.schema_ver = i.schema_ver
             ORDER BY i.id",
        )?
        .execute([])?;
    tx.prepare_cached("DELETE FROM inbox")?.execute([])?;
    Ok(moved as u64)
}

/// Whether anything waits in the inbox.
pub(super) fn is_empty(tx: &Transaction) -> Result<bool> {
    Ok(totals(tx)?.events == 0)
}

/// Inbox events by (kind code, status code): a scan, but of a table that every upload
/// empties.
pub(super) fn counts(tx: &Transaction) -> Result<Vec<(i64, i64, u64)>> {
    let mut stmt =
        tx.prepare_cached("SELECT kind, status, count(*) FROM inbox GROUP BY kind, status")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}
