//! The spool's bounds (SPEC §6): events, bytes and age. Applied inside every write
//! transaction that can add to the spool, so no writer — however many run at once — can
//! leave the spool over them; the oldest events go first and every drop is counted.
//!
//! The byte bound holds twice: for the event data, as each row's `bytes` counts it, and
//! for the database file itself, whose pages also hold indexes, the rows of the streams
//! (one per session: with a fresh session per `record`, as many as events) and partly
//! filled pages. After every write, the pages in use in `spool.db` take at most
//! `max_bytes` + [`FILE_SLACK`]: the events that do not fit go, oldest first, with the
//! streams they leave empty. Freed pages are reused by later writes, so the file itself
//! stays within that bound plus what one write adds before its own drops (a page or two
//! for one event; the size of the input for a large `record --json -` or import). The
//! write-ahead log is bounded too; see [`wal_pages`].
//!
//! (`auto_vacuum=INCREMENTAL` would also give freed pages back to the filesystem, but it
//! made large single writes about twice as slow — their pointer-map pages are written
//! over and over once the transaction outgrows SQLite's page cache — so it is not used.)

use std::collections::BTreeSet;
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction};

use crate::error::Result;
use crate::spool::append::Row;
use crate::spool::{inbox, meta, tally};
use crate::wire::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: u64,
    /// Bytes of event data, as each row's `bytes` counts it; the database file may hold
    /// [`FILE_SLACK`] more.
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: 50_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(30 * 86_400),
        }
    }
}

/// What `spool.db` may take beyond `max_bytes`: the pages every spool has whatever it
/// holds (the schema, one root page per table and index, the meta rows) and the slack of
/// partly filled pages.
pub const FILE_SLACK: u64 = 64 << 10;

/// How many pages the write-ahead log may reach before it is checkpointed, and the size
/// it is cut back to once it has been: an eighth of `max_bytes`, at least 16 pages and at
/// most SQLite's default of 1000 (4 MiB), so the log of a small spool stays small and a
/// default spool behaves as SQLite does by default. A write in progress can take the log
/// past it by its own size until the next checkpoint.
pub fn wal_pages(limits: &Limits, page_size: u64) -> u64 {
    (limits.max_bytes / page_size.max(512) / 8).clamp(16, 1000)
}

/// Drops expired events, then the oldest until every bound holds; returns how many.
pub fn enforce(tx: &Transaction, limits: &Limits, now: Millis) -> Result<u64> {
    let mut drop = Dropping::default();
    let cutoff = now.saturating_sub(limits.max_age.as_millis() as i64);
    drop.run(tx, "DELETE FROM events WHERE ts < ?1", [cutoff])?;

    let (events, bytes): (i64, i64) = tx.query_row(
        "SELECT COALESCE(SUM(events), 0), COALESCE(SUM(bytes), 0) FROM tally",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let excess_events = (events as u64).saturating_sub(limits.max_events);
    let mut excess_bytes = (bytes as u64).saturating_sub(limits.max_bytes);

    if excess_events > 0 {
        let freed: i64 = tx.query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM
               (SELECT bytes FROM events ORDER BY ts, id LIMIT ?1)",
            [excess_events as i64],
            |r| r.get(0),
        )?;
        drop.run(
            tx,
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts, id LIMIT ?1)",
            [excess_events as i64],
        )?;
        excess_bytes = excess_bytes.saturating_sub(freed as u64);
    }
    if excess_bytes > 0 {
        drop.oldest_bytes(tx, excess_bytes)?;
    }
    drop.sweep_streams(tx)?;

    // The file: whatever the rows count, the pages they take.
    let page_size = pragma_u64(tx, "page_size")?;
    let bound = limits.max_bytes.saturating_add(FILE_SLACK);
    loop {
        let used = (page_count(tx)? - free_pages(tx)?) * page_size;
        if used <= bound || !drop.oldest_bytes(tx, used - bound)? {
            break;
        }
        drop.sweep_streams(tx)?;
    }
    log_settings(tx, limits)?;

    meta::add_dropped(tx, drop.count)?;
    Ok(drop.count)
}

/// Whether `rows` can be appended with every bound still holding and nothing to expire
/// or drop: the check that lets a small append skip [`enforce`] (and the indexes it
/// needs) and go to the inbox. Reads only the edges of the tally, the inbox and the
/// time index, so it costs the same with ten events queued as with a million.
pub(super) fn room_for(
    tx: &Transaction,
    limits: &Limits,
    now: Millis,
    rows: &[Row],
) -> Result<bool> {
    let (events, bytes): (i64, i64) = tx
        .prepare_cached("SELECT COALESCE(SUM(events), 0), COALESCE(SUM(bytes), 0) FROM tally")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let waiting = inbox::totals(tx)?;
    let new_bytes: u64 = rows.iter().map(|r| r.bytes.max(0) as u64).sum();
    let total_events = events.max(0) as u64 + waiting.events + rows.len() as u64;
    let total_bytes = bytes.max(0) as u64 + waiting.bytes + new_bytes;
    if total_events > limits.max_events || total_bytes > limits.max_bytes {
        return Ok(false);
    }
    let cutoff = now.saturating_sub(limits.max_age.as_millis() as i64);
    let oldest_event: Option<Millis> = tx
        .prepare_cached("SELECT ts FROM events ORDER BY ts LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let oldest = rows
        .iter()
        .map(|r| r.ts)
        .chain(oldest_event)
        .chain(waiting.oldest)
        .min();
    if oldest.is_some_and(|t| t < cutoff) {
        return Ok(false);
    }
    let page_size = pragma_u64(tx, "page_size")?;
    let used = (page_count(tx)? - free_pages(tx)?) * page_size;
    Ok(used.saturating_add(new_bytes) <= limits.max_bytes.saturating_add(FILE_SLACK))
}

/// Settings of this connection, for the log of this and later commits. A PRAGMA takes
/// effect when it is prepared, so a cached statement sets each value once per
/// connection and costs nothing on the next write.
pub(super) fn log_settings(tx: &Transaction, limits: &Limits) -> Result<()> {
    let page_size = pragma_u64(tx, "page_size")?;
    let wal = wal_pages(limits, page_size);
    for sql in [
        format!("PRAGMA wal_autocheckpoint = {wal}"),
        format!("PRAGMA journal_size_limit = {}", wal * page_size),
    ] {
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(())
}

fn pragma_u64(tx: &Transaction, name: &str) -> Result<u64> {
    let value: i64 = tx
        .prepare_cached(&format!("PRAGMA {name}"))?
        .query_row([], |r| r.get(0))?;
    Ok(value.max(0) as u64)
}

fn page_count(tx: &Transaction) -> Result<u64> {
    pragma_u64(tx, "page_count")
}

fn free_pages(tx: &Transaction) -> Result<u64> {
    pragma_u64(tx, "freelist_count")
}

/// Events dropped so far in one transaction, and the streams they belonged to.
#[derive(Default)]
struct Dropping {
    count: u64,
    streams: BTreeSet<i64>,
}

impl Dropping {
    /// Runs a `DELETE FROM events ...` (through [`tally::delete_events`]).
    fn run(&mut self, tx: &Transaction, sql: &str, params: impl rusqlite::Params) -> Result<()> {
        let removed = tally::delete_events(tx, sql, params)?;
        self.count += removed.count;
        self.streams.extend(removed.streams);
        Ok(())
    }

    /// Drops the oldest events until their counted bytes reach `bytes`; false if there
    /// was none left to drop.
    fn oldest_bytes(&mut self, tx: &Transaction, mut bytes: u64) -> Result<bool> {
        let mut any = false;
        while bytes > 0 {
            // Oldest first, a page at a time, until enough bytes are freed.
            let mut stmt =
                tx.prepare_cached("SELECT id, bytes FROM events ORDER BY ts, id LIMIT 256")?;
            let rows: Vec<(i64, i64)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            if rows.is_empty() {
                break;
            }
            for (id, size) in rows {
                if bytes == 0 {
                    break;
                }
                self.run(tx, "DELETE FROM events WHERE id = ?1", [id])?;
                any = true;
                bytes = bytes.saturating_sub(size as u64);
            }
        }
        Ok(any)
    }

    /// Deletes the rows of the streams whose last event was dropped.
    fn sweep_streams(&mut self, tx: &Transaction) -> Result<()> {
        let mut orphan = tx.prepare_cached(
            "DELETE FROM streams WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM events WHERE stream = ?1)",
        )?;
        for stream in std::mem::take(&mut self.streams) {
            orphan.execute([stream])?;
        }
        Ok(())
    }
}
