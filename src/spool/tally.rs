//! The counts kept beside `events` so that nothing has to count rows: `tally` (events
//! and bytes by kind, status and rejection), for the limits and `inspect`, and `leases`
//! (claimed events by lease time), for `inspect`'s "in flight".
//!
//! Inserts and rejections keep `tally` by trigger. Deletes keep both here instead, from
//! what each `DELETE` returns, once per statement: an upload deletes events by the
//! hundred, and a trigger per row — an `UPDATE` of `tally` for each, with a statement
//! journal for the whole — was a tenth of its time, and an index over every event's
//! lease (what counting in-flight events needed) nearly another. See BENCHMARKS.md.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Params, Transaction};

use crate::error::Result;
use crate::wire::Millis;

/// What one or more deletes removed.
#[derive(Debug, Default)]
pub(super) struct Removed {
    pub count: u64,
    /// The streams the removed events belonged to, whose rows may now be empty.
    pub streams: BTreeSet<i64>,
}

/// Runs `delete`, a `DELETE FROM events ...` without a `RETURNING` clause, and takes what
/// it removed off `tally` and `leases`. Every delete of events goes through here.
pub(super) fn delete_events(
    tx: &Transaction,
    delete: &str,
    params: impl Params,
) -> Result<Removed> {
    let mut removed = Removed::default();
    let mut by_kind: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
    let mut by_lease: BTreeMap<Millis, i64> = BTreeMap::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "{delete} RETURNING kind, status, rejected, bytes, stream, lease_until"
        ))?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            let key = (row.get(0)?, row.get(1)?, row.get(2)?);
            let entry = by_kind.entry(key).or_default();
            entry.0 += 1;
            entry.1 += row.get::<_, i64>(3)?;
            removed.streams.insert(row.get(4)?);
            if let Some(lease) = row.get::<_, Option<Millis>>(5)? {
                *by_lease.entry(lease).or_default() += 1;
            }
            removed.count += 1;
        }
    }
    let mut take = tx.prepare_cached(
        "UPDATE tally SET events = events - ?4, bytes = bytes - ?5
         WHERE kind = ?1 AND status = ?2 AND rejected = ?3",
    )?;
    for ((kind, status, rejected), (events, bytes)) in by_kind {
        take.execute(rusqlite::params![kind, status, rejected, events, bytes])?;
    }
    for (lease, events) in by_lease {
        unlease(tx, lease, events as u64)?;
    }
    Ok(removed)
}

/// Counts `events` more events as claimed until `lease`.
pub(super) fn lease(tx: &Transaction, lease: Millis, events: u64) -> Result<()> {
    if events == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO leases (lease_until, events) VALUES (?1, ?2)
         ON CONFLICT (lease_until) DO UPDATE SET events = events + excluded.events",
    )?
    .execute(rusqlite::params![lease, events as i64])?;
    Ok(())
}

/// Counts `events` fewer events as claimed until `lease` (settled, released, dropped).
pub(super) fn unlease(tx: &Transaction, lease: Millis, events: u64) -> Result<()> {
    if events == 0 {
        return Ok(());
    }
    tx.prepare_cached("UPDATE leases SET events = events - ?2 WHERE lease_until = ?1")?
        .execute(rusqlite::params![lease, events as i64])?;
    tx.prepare_cached("DELETE FROM leases WHERE lease_until = ?1 AND events <= 0")?
        .execute([lease])?;
    Ok(())
}

/// Forgets leases that ran out before `now`: their events are claimable again, whatever
/// `lease_until` they still carry.
pub(super) fn forget_expired(tx: &Transaction, now: Millis) -> Result<()> {
    tx.prepare_cached("DELETE FROM leases WHERE lease_until <= ?1")?
        .execute([now])?;
    Ok(())
}

/// Events claimed by a lease that has not run out at `now`.
pub(super) fn in_flight(tx: &Transaction, now: Millis) -> Result<u64> {
    let n: i64 = tx
        .prepare_cached("SELECT COALESCE(SUM(events), 0) FROM leases WHERE lease_until > ?1")?
        .query_row([now], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}
