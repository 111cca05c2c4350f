//! The spool's bounds (SPEC §6): events, bytes and age. Applied inside every write
//! transaction, so no writer — however many run at once — can leave the spool over
//! them; the oldest events go first and every drop is counted.

use std::time::Duration;

use rusqlite::Transaction;

use crate::error::Result;
use crate::spool::meta;
use crate::wire::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: u64,
    /// Bytes of event data, as each row's `bytes` counts it.
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

/// Drops expired events, then the oldest until both bounds hold; returns how many.
pub fn enforce(tx: &Transaction, limits: &Limits, now: Millis) -> Result<u64> {
    let cutoff = now.saturating_sub(limits.max_age.as_millis() as i64);
    let mut dropped = tx.execute("DELETE FROM events WHERE ts < ?1", [cutoff])? as u64;

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
        dropped += tx.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts, id LIMIT ?1)",
            [excess_events as i64],
        )? as u64;
        excess_bytes = excess_bytes.saturating_sub(freed as u64);
    }

    while excess_bytes > 0 {
        // Oldest first, a page at a time, until enough bytes are freed.
        let mut stmt =
            tx.prepare_cached("SELECT id, bytes FROM events ORDER BY ts, id LIMIT 256")?;
        let rows: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            break;
        }
        let mut delete = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
        for (id, size) in rows {
            if excess_bytes == 0 {
                break;
            }
            delete.execute([id])?;
            dropped += 1;
            excess_bytes = excess_bytes.saturating_sub(size as u64);
        }
    }

    meta::add_dropped(tx, dropped)?;
    Ok(dropped)
}
