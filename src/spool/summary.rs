//! What `inspect` reads: counts from the tally, times from the indexes, upload state
//! from `meta`, and the events themselves in the order they would leave.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction};

use crate::error::{Error, Result};
use crate::event::{Kind, Status};
use crate::level::Level;
use crate::spool::meta::{self, LastUpload};
use crate::spool::{inbox, tally};
use crate::spool::{Spool, StoredEvent};
use crate::wire::Millis;

/// The state of a spool at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Waiting to be sent, in flight included, rejected excluded.
    pub queued: u64,
    pub in_flight: u64,
    pub rejected: u64,
    pub dropped: u64,
    /// Queued events by kind and status.
    pub by_kind: BTreeMap<Kind, BTreeMap<Status, u64>>,
    pub oldest: Option<Millis>,
    pub newest: Option<Millis>,
    pub last_upload: Option<LastUpload>,
    pub next_attempt: Option<Millis>,
}

impl Summary {
    /// The summary of a spool that does not exist yet.
    pub fn empty() -> Summary {
        let mut s = Summary::default();
        for kind in Kind::ALL {
            s.by_kind
                .insert(kind, Status::ALL.into_iter().map(|st| (st, 0)).collect());
        }
        s
    }
}

impl Summary {
    /// Counts `n` more queued events of this kind and status (codes as stored).
    fn add_queued(&mut self, kind: i64, status: i64, n: u64) {
        self.queued += n;
        if let (Some(kind), Some(status)) = (Kind::from_code(kind), Status::from_code(status)) {
            *self
                .by_kind
                .entry(kind)
                .or_default()
                .entry(status)
                .or_default() += n;
        }
    }
}

impl Spool {
    pub fn summary(&mut self, now: Millis) -> Result<Summary> {
        self.read(|tx| summarize(tx, now))
    }

    /// The summary and, when `listing` is given, the queued events (not rejected),
    /// oldest first, at most `listing`'s limit, each passed to `each` — read in one
    /// transaction, so the list and the counts describe the same moment however many
    /// writers are busy.
    pub fn snapshot(
        &mut self,
        now: Millis,
        listing: Option<Option<u64>>,
        mut each: impl FnMut(StoredEvent) -> Result<()>,
    ) -> Result<Summary> {
        self.read(|tx| {
            let summary = summarize(tx, now)?;
            if let Some(limit) = listing {
                list_queued(tx, limit, &mut each)?;
            }
            Ok(summary)
        })
    }
}

fn list_queued(
    tx: &Transaction,
    limit: Option<u64>,
    each: &mut impl FnMut(StoredEvent) -> Result<()>,
) -> Result<()> {
    // The inbox's events come after those in `events` of the same time: they arrived
    // later. (Their ids count in the inbox's own sequence; nothing here uses them.)
    let mut stmt = tx.prepare(
        "SELECT e.id, e.kind, e.status, e.ts, e.level, e.parameters,
                s.session_id, s.client_ver, s.schema_ver, 0 AS waiting
         FROM events e JOIN streams s ON s.id = e.stream
         WHERE e.rejected = 0
         UNION ALL
         SELECT id, kind, status, ts, level, parameters,
                session_id, client_ver, schema_ver, 1 AS waiting
         FROM inbox
         ORDER BY 4, 10, 1
         LIMIT ?1",
    )?;
    let limit = limit.map_or(-1, |n| n as i64);
    let mut rows = stmt.query([limit])?;
    while let Some(row) = rows.next()? {
        each(stored_event(row)?)?;
    }
    Ok(())
}

/// Reads one row of `events e JOIN streams s` selected as in `list_queued`.
pub(crate) fn stored_event(row: &rusqlite::Row) -> Result<StoredEvent> {
    let kind: i64 = row.get(1)?;
    let status: i64 = row.get(2)?;
    let level: i64 = row.get(4)?;
    let bad = |what: &str| Error::Corrupt(format!("an event row has an invalid {what}"));
    Ok(StoredEvent {
        id: row.get(0)?,
        kind: Kind::from_code(kind).ok_or_else(|| bad("kind"))?,
        status: Status::from_code(status).ok_or_else(|| bad("status"))?,
        ts: row.get(3)?,
        level: Level::from_number(level).ok_or_else(|| bad("level"))?,
        parameters: row.get(5)?,
        session_id: row.get(6)?,
        client_ver: row.get(7)?,
        schema_ver: row.get(8)?,
    })
}

fn summarize(tx: &Transaction, now: Millis) -> Result<Summary> {
    let mut s = Summary::empty();
    let mut stmt = tx.prepare("SELECT kind, status, rejected, events FROM tally")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (kind, status, rejected, n): (i64, i64, i64, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let n = n.max(0) as u64;
        if rejected != 0 {
            s.rejected += n;
            continue;
        }
        s.add_queued(kind, status, n);
    }
    // Events still in the inbox: queued, never in flight or rejected.
    for (kind, status, n) in inbox::counts(tx)? {
        s.add_queued(kind, status, n);
    }
    s.in_flight = tally::in_flight(tx, now)?;
    s.dropped = meta::get_i64(tx, meta::DROPPED)?.unwrap_or(0).max(0) as u64;
    s.oldest = tx
        .query_row(
            "SELECT ts FROM events WHERE rejected = 0 ORDER BY ts LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    s.newest = tx
        .query_row(
            "SELECT ts FROM events WHERE rejected = 0 ORDER BY ts DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let waiting = inbox::totals(tx)?;
    s.oldest = s.oldest.into_iter().chain(waiting.oldest).min();
    s.newest = s.newest.into_iter().chain(waiting.newest).max();
    s.last_upload = meta::last_upload(tx)?;
    s.next_attempt = meta::get_i64(tx, meta::NEXT_ATTEMPT)?.filter(|&t| t > now);
    Ok(s)
}
