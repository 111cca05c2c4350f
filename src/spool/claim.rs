//! Handing queued events out in request-sized batches, and settling them afterwards.
//!
//! A pass over the spool visits streams (one per session, client version and schema) in
//! the order they were created — the oldest stream first — and the events of each in
//! arrival order, cutting them into batches of at most `events` events and `bytes` body
//! bytes. The position of a pass is a [`Cursor`] of two integers, so a pass reads in short
//! transactions, holds no state that grows with the spool, and every query is a range
//! scan of an index (`streams` by id, `events_by_stream`): the cost of a batch is the
//! batch, whatever the spool holds.
//!
//! `upload` claims batches: the same pass, but each batch is leased (`lease_until`) in
//! the write transaction that picks it, so a crashed uploader's batches come back once
//! the lease runs out. `export` and `upload --dry-run` read the very same batches without
//! claiming them. After the requests, [`Spool::settle`] deletes what was acknowledged,
//! sets aside what was rejected, releases what is to be kept, and records the run — and
//! may claim the next window in the same transaction, so a long upload costs one commit
//! per window of batches rather than two per request.

use rusqlite::{OptionalExtension, Transaction};

use crate::error::Result;
use crate::level::Level;
use crate::spool::meta::{self, LastUpload};
use crate::spool::summary::stored_event;
use crate::spool::{tally, Limits, Spool, StoredEvent};
use crate::wire::{self, Millis, WireEvent};

/// How events are cut into request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many events per body (at least 1).
    pub events: usize,
    /// At most this many bytes per body, unless a single event is larger on its own.
    pub bytes: usize,
}

/// What a pass hands out: batches as they would leave under `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The level in force now: it decides redaction, and so the size of each event.
    pub level: Level,
    pub limits: BatchLimits,
    /// Only events with an id up to this, i.e. those queued when the run began (see
    /// [`Spool::horizon`]), so a run ends even while writers keep appending.
    pub horizon: i64,
}

/// Where a pass over the spool stands. Positions are ordered as a pass visits them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The stream being read; 0 before the first.
    stream: i64,
    /// The last event id of `stream` already handed out.
    after: i64,
}

impl Cursor {
    /// The beginning of a pass.
    pub fn start() -> Cursor {
        Cursor::default()
    }

    /// The position just before `batch`, so that it is handed out again (after its
    /// claim was released).
    pub fn before(batch: &Batch) -> Cursor {
        Cursor {
            stream: batch.stream,
            after: batch.events.first().map_or(0, |e| e.id - 1),
        }
    }
}

/// Events of one stream that go in one request body.
#[derive(Debug)]
pub struct Batch {
    /// The `streams` row the events belong to.
    pub stream: i64,
    pub session_id: String,
    pub client_ver: String,
    pub schema_ver: String,
    /// In arrival order; never empty.
    pub events: Vec<StoredEvent>,
    /// `events` as they leave under the plan's level (redacted if need be), one for
    /// one: what the batch was sized by, and what its body is made of.
    pub wire: Vec<WireEvent>,
    /// The size of the body these events make, in bytes.
    pub bytes: usize,
    /// Until when the batch is claimed (ms), for a claimed batch.
    pub lease_until: Option<Millis>,
}

impl Batch {
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.events.iter().map(|e| e.id)
    }

    /// The span of `events`, a run of this claimed batch's events (all of them, or a
    /// half after a 413).
    pub fn span(&self, events: &[StoredEvent]) -> Span {
        Span {
            stream: self.stream,
            first: events.first().map_or(0, |e| e.id),
            last: events.last().map_or(-1, |e| e.id),
            lease_until: self.lease_until.unwrap_or_default(),
        }
    }
}

/// Claimed events named by their stream, id range and lease: the events of that stream
/// with ids in `first..=last` that carry this lease are exactly the ones one claim put
/// in one batch, because a claim takes every claimable event of a range and each claim
/// of a run has its own lease time. Settling by span costs one statement per batch
/// instead of one per event. Should the lease have been lost (it ran out and another
/// upload took the events), nothing matches, and those events are sent again later:
/// at least once, never lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub stream: i64,
    pub first: i64,
    pub last: i64,
    pub lease_until: Millis,
}

/// A request to claim up to `max` batches.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub plan: Plan,
    /// Now, in ms: leases that ended before this are free again.
    pub now: Millis,
    /// The lease given to the claimed events.
    pub lease_until: Millis,
    pub max: usize,
}

/// What became of claimed events, and of the run, to be written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    /// Acknowledged by the endpoint: deleted.
    pub delivered: Vec<Span>,
    /// Refused by the endpoint (400, 422, or 413 on its own): kept aside, never resent.
    pub rejected: Vec<Span>,
    /// Not sent, or to be retried: the lease is dropped so a later claim takes them.
    pub released: Vec<Span>,
    /// Streams of the settled events, whose rows go once they have no event left.
    pub streams: Vec<i64>,
    /// How the run ended, written only by the last settlement of a run.
    pub run: Option<RunRecord>,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty()
            && self.rejected.is_empty()
            && self.released.is_empty()
            && self.run.is_none()
    }
}

/// The outcome of an upload run, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub last: LastUpload,
    pub backoff: Backoff,
}

/// What a run does to the backoff between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Leave it as it is (a configuration problem is neither a success nor a retry).
    Keep,
    /// The endpoint answered: no more waiting.
    Clear,
    /// A temporary failure: no run sends before `next_attempt`; `failures` counts the
    /// consecutive failed runs, for the doubling.
    Set { next_attempt: Millis, failures: u32 },
}

/// The backoff state a run starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadState {
    /// No run sends before this (ms), unless told to ignore it.
    pub next_attempt: Option<Millis>,
    /// Consecutive runs that ended in a temporary failure.
    pub failures: u32,
}

impl Spool {
    /// The newest event id now (0 if none): the horizon of a run that starts now. What
    /// waits in the inbox is moved into `events` first, so that it is inside it.
    pub fn horizon(&mut self) -> Result<i64> {
        self.fold_inbox()?;
        self.read(max_event_id)
    }

    /// The backoff state left by earlier runs.
    pub fn upload_state(&mut self) -> Result<UploadState> {
        self.read(|tx| {
            Ok(UploadState {
                next_attempt: meta::get_i64(tx, meta::NEXT_ATTEMPT)?,
                failures: meta::get_i64(tx, meta::UPLOAD_FAILURES)?
                    .unwrap_or(0)
                    .clamp(0, u32::MAX as i64) as u32,
            })
        })
    }

    /// Reads up to `max` batches after `cursor` without claiming them, as `claim` would
    /// hand them out at `now`; advances `cursor`. An empty list means the pass is over.
    pub fn batches(
        &mut self,
        plan: &Plan,
        cursor: &mut Cursor,
        now: Millis,
        max: usize,
    ) -> Result<Vec<Batch>> {
        let read = |tx: &Transaction| {
            let mut at = *cursor;
            let mut out = Vec::new();
            while out.len() < max {
                match next_batch(tx, plan, now, &mut at)? {
                    Some(batch) => out.push(batch),
                    None => break,
                }
            }
            Ok((out, at))
        };
        // Events still in the inbox would be folded in by the next write, with ids after
        // every id now in `events`: they count when the horizon reaches past those (a dry
        // run's does; an export's, taken after its own fold, does not).
        let inbox_counts =
            self.read(|tx| Ok(!super::inbox::is_empty(tx)? && max_event_id(tx)? < plan.horizon))?;
        let (batches, next) = if inbox_counts {
            self.read_folded(read)?
        } else {
            self.read(read)?
        };
        *cursor = next;
        Ok(batches)
    }

    /// Claims up to `claim.max` batches after `cursor`, in one write transaction that
    /// also applies `limits`; advances `cursor`.
    pub fn claim(
        &mut self,
        claim: &Claim,
        cursor: &mut Cursor,
        limits: &Limits,
    ) -> Result<Vec<Batch>> {
        self.settle_and_claim(&Settlement::default(), Some(claim), cursor, limits)
    }

    /// Writes `settlement` in one transaction.
    pub fn settle(&mut self, settlement: &Settlement, limits: &Limits) -> Result<()> {
        if settlement.is_empty() {
            return Ok(());
        }
        self.settle_and_claim(settlement, None, &mut Cursor::start(), limits)
            .map(|_| ())
    }

    /// Writes `settlement` and then, in the same transaction, claims the next batches
    /// if `claim` is given. Limits and expiry are applied before the claim, so an event
    /// that has just expired is dropped, never sent.
    ///
    /// On a local disk (WAL mode) these transactions commit with `synchronous=NORMAL`,
    /// without waiting for the disk; see [`Spool::relaxed`].
    pub fn settle_and_claim(
        &mut self,
        settlement: &Settlement,
        claim: Option<&Claim>,
        cursor: &mut Cursor,
        limits: &Limits,
    ) -> Result<Vec<Batch>> {
        // A settle alone only removes or releases events, so it cannot break a bound: the
        // limits are applied by the transactions that claim, before they claim.
        let (batches, next) = self.relaxed(|spool| {
            spool.write(None, |tx| {
                settle_and_claim_in(tx, settlement, claim, cursor, limits)
            })
        })?;
        *cursor = next;
        Ok(batches)
    }

    /// Runs `work` (settles and claims of an upload) with `synchronous=NORMAL` when the
    /// spool is in WAL mode on a local disk, and with the spool's durable setting otherwise.
    ///
    /// Why this is safe: in WAL mode, NORMAL still writes every commit to the log before
    /// it returns; it only skips the `fsync`. A `kill -9` loses nothing (the log is in
    /// the kernel's page cache, and the next opener recovers it), and the database stays
    /// consistent after a power cut, which can at worst lose the last few commits made
    /// this way. What such a commit records is the fate of claimed batches — deletions of
    /// acknowledged events, claims, releases — so losing it re-sends those events, which
    /// at-least-once delivery allows; it can never lose an event. The next commit made
    /// with FULL (any `record`) syncs the log, these frames included.
    ///
    /// Everything else stays durable: `record`, imports, purges and export's removal
    /// commit with FULL (EXTRA on network filesystems), and on a network filesystem,
    /// where the spool uses a rollback journal that NORMAL could leave corrupt after a
    /// power cut, uploads keep it too.
    ///
    /// The connection also keeps SQLite's statement journals in memory from then on
    /// (`temp_store=MEMORY`): an upload commits often, and each of its transactions would
    /// otherwise create and delete a temporary file.
    fn relaxed<T>(&mut self, work: impl FnOnce(&mut Spool) -> Result<T>) -> Result<T> {
        if self.fs != super::FsKind::Local {
            return work(self);
        }
        self.connection()?
            .pragma_update(None, "synchronous", "NORMAL")?;
        self.connection()?
            .pragma_update(None, "temp_store", "MEMORY")?;
        let out = work(self);
        // Back to FULL for whatever this connection writes next (a fresh connection made
        // after a quarantine already has it).
        let restored = match self.conn.as_ref() {
            Some(conn) => conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(crate::error::Error::from),
            None => Ok(()),
        };
        let out = out?;
        restored?;
        Ok(out)
    }

    /// Deletes exactly these events, in one transaction (after `export` wrote them to
    /// disk); returns how many were still there.
    pub fn remove(&mut self, ids: &[i64], limits: &Limits) -> Result<u64> {
        self.write(Some(limits), |tx| {
            let mut removed = 0;
            for id in ids {
                removed +=
                    tally::delete_events(tx, "DELETE FROM events WHERE id = ?1", [id])?.count;
            }
            sweep_streams(tx)?;
            Ok(removed)
        })
    }
}

/// The transaction of [`Spool::settle_and_claim`]: returns the batches and where the pass
/// stands after them.
fn settle_and_claim_in(
    tx: &Transaction,
    settlement: &Settlement,
    claim: Option<&Claim>,
    cursor: &Cursor,
    limits: &Limits,
) -> Result<(Vec<Batch>, Cursor)> {
    settle_in(tx, settlement)?;
    let mut at = *cursor;
    let mut out = Vec::new();
    let Some(claim) = claim else {
        return Ok((out, at));
    };
    // Expired events go before anything is handed out.
    super::limits::enforce(tx, limits, claim.now)?;
    tally::forget_expired(tx, claim.now)?;
    // The same condition `next_batch` selected with, in the same transaction: exactly
    // the batch's events.
    let mut lease = tx.prepare_cached(
        "UPDATE events SET lease_until = ?1
         WHERE stream = ?2 AND id BETWEEN ?3 AND ?4
           AND rejected = 0 AND (lease_until IS NULL OR lease_until <= ?5)",
    )?;
    while out.len() < claim.max {
        let Some(mut batch) = next_batch(tx, &claim.plan, claim.now, &mut at)? else {
            break;
        };
        let span = batch.span(&batch.events);
        let leased = lease.execute(rusqlite::params![
            claim.lease_until,
            span.stream,
            span.first,
            span.last,
            claim.now
        ])?;
        debug_assert_eq!(leased, batch.events.len());
        tally::lease(tx, claim.lease_until, leased as u64)?;
        batch.lease_until = Some(claim.lease_until);
        out.push(batch);
    }
    Ok((out, at))
}

fn settle_in(tx: &Transaction, s: &Settlement) -> Result<()> {
    for span in &s.delivered {
        tally::delete_events(
            tx,
            "DELETE FROM events
             WHERE stream = ?1 AND id BETWEEN ?2 AND ?3 AND lease_until = ?4",
            rusqlite::params![span.stream, span.first, span.last, span.lease_until],
        )?;
    }
    let unlease = |sql: &str, spans: &[Span]| -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let mut stmt = tx.prepare_cached(sql)?;
        for span in spans {
            let n = stmt.execute(rusqlite::params![
                span.stream,
                span.first,
                span.last,
                span.lease_until
            ])?;
            tally::unlease(tx, span.lease_until, n as u64)?;
        }
        Ok(())
    };
    unlease(
        "UPDATE events SET rejected = 1, lease_until = NULL
         WHERE stream = ?1 AND id BETWEEN ?2 AND ?3 AND lease_until = ?4",
        &s.rejected,
    )?;
    unlease(
        "UPDATE events SET lease_until = NULL
         WHERE stream = ?1 AND id BETWEEN ?2 AND ?3 AND lease_until = ?4",
        &s.released,
    )?;
    if !s.streams.is_empty() {
        let mut orphan = tx.prepare_cached(
            "DELETE FROM streams WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM events WHERE stream = ?1)",
        )?;
        for stream in &s.streams {
            orphan.execute([stream])?;
        }
    }
    if let Some(run) = &s.run {
        meta::set(tx, meta::LAST_UPLOAD_AT, run.last.at)?;
        meta::set(tx, meta::LAST_UPLOAD_RESULT, &run.last.result)?;
        meta::set(tx, meta::LAST_UPLOAD_DETAIL, &run.last.detail)?;
        match run.backoff {
            Backoff::Keep => {}
            Backoff::Clear => {
                meta::remove(tx, meta::NEXT_ATTEMPT)?;
                meta::remove(tx, meta::UPLOAD_FAILURES)?;
            }
            Backoff::Set {
                next_attempt,
                failures,
            } => {
                meta::set(tx, meta::NEXT_ATTEMPT, next_attempt)?;
                meta::set(tx, meta::UPLOAD_FAILURES, failures as i64)?;
            }
        }
        // Streams emptied by limits, expiry or purges: once per run is enough.
        sweep_streams(tx)?;
    }
    Ok(())
}

fn max_event_id(tx: &Transaction) -> Result<i64> {
    Ok(tx.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
}

/// Deletes `streams` rows no event refers to any more: one index probe per stream.
fn sweep_streams(tx: &Transaction) -> Result<()> {
    tx.execute(
        "DELETE FROM streams
         WHERE NOT EXISTS (SELECT 1 FROM events WHERE events.stream = streams.id)",
        [],
    )?;
    Ok(())
}

/// The next batch of the pass at `cursor`, moving it past the batch; `None` at the end.
fn next_batch(
    tx: &Transaction,
    plan: &Plan,
    now: Millis,
    cursor: &mut Cursor,
) -> Result<Option<Batch>> {
    let limit = plan.limits.events.max(1);
    // The limit is written into the text, not bound: SQLite re-prepares a statement each
    // time a bound LIMIT changes value, which was every batch. It is fixed for a run, so
    // the cached statement is reused.
    let mut events_of = tx.prepare_cached(&format!(
        "SELECT e.id, e.kind, e.status, e.ts, e.level, e.parameters,
                s.session_id, s.client_ver, s.schema_ver
         FROM events e JOIN streams s ON s.id = e.stream
         WHERE e.stream = ?1 AND e.id > ?2 AND e.id <= ?3
           AND e.rejected = 0 AND (e.lease_until IS NULL OR e.lease_until <= ?4)
         ORDER BY e.id
         LIMIT {limit}"
    ))?;
    let mut next_stream =
        tx.prepare_cached("SELECT id FROM streams WHERE id > ?1 ORDER BY id LIMIT 1")?;
    loop {
        if cursor.stream > 0 {
            let mut rows = events_of.query(rusqlite::params![
                cursor.stream,
                cursor.after,
                plan.horizon,
                now
            ])?;
            let mut batch: Option<Batch> = None;
            while let Some(row) = rows.next()? {
                let event = stored_event(row)?;
                let wire_event = WireEvent::from_stored(&event, plan.level);
                let size = wire::event_size(&wire_event);
                let batch = batch.get_or_insert_with(|| Batch {
                    stream: cursor.stream,
                    // The body's size with no event: the overhead less the comma that the
                    // first event's size counts but does not need.
                    bytes: wire::envelope_overhead(
                        &event.session_id,
                        &event.client_ver,
                        &event.schema_ver,
                    )
                    .saturating_sub(1),
                    session_id: event.session_id.clone(),
                    client_ver: event.client_ver.clone(),
                    schema_ver: event.schema_ver.clone(),
                    events: Vec::with_capacity(limit),
                    wire: Vec::with_capacity(limit),
                    lease_until: None,
                });
                if !batch.events.is_empty() && batch.bytes + size > plan.limits.bytes {
                    break;
                }
                batch.bytes += size;
                cursor.after = event.id;
                batch.events.push(event);
                batch.wire.push(wire_event);
            }
            if batch.is_some() {
                return Ok(batch);
            }
        }
        let next: Option<i64> = next_stream
            .query_row([cursor.stream], |r| r.get(0))
            .optional()?;
        match next {
            Some(stream) => {
                *cursor = Cursor { stream, after: 0 };
            }
            None => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::session::SessionSource;
    use crate::spool::{NewEvent, NewStream};
    use serde_json::json;

    fn event(model: &str) -> Event {
        Event::from_json(&json!({"name": "EvaluationTaskEvent", "parameters": {
            "task": "t", "frameworkName": "f", "model": model, "status": "success"}}))
        .unwrap()
    }

    fn fill(spool: &mut Spool, session: &str, n: usize) {
        let stream = NewStream {
            session: SessionSource::Given(session.into()),
            client_ver: "1".into(),
            schema_ver: "1.0".into(),
        };
        let events = (0..n)
            .map(|_| NewEvent {
                event: event("some/model"),
                ts: wire::now_millis(),
                level: Level::Default,
            })
            .collect();
        spool
            .append(&[(stream, events)], &Limits::default())
            .unwrap();
    }

    fn plan(horizon: i64, events: usize, bytes: usize) -> Plan {
        Plan {
            level: Level::Default,
            limits: BatchLimits { events, bytes },
            horizon,
        }
    }

    #[test]
    fn batches_follow_streams_in_order_and_respect_both_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&dir.path().join("s")).unwrap();
        fill(&mut spool, "a", 5);
        fill(&mut spool, "b", 3);
        fill(&mut spool, "a", 2);
        let horizon = spool.horizon().unwrap();
        let now = wire::now_millis();

        let mut cursor = Cursor::start();
        let all = spool
            .batches(&plan(horizon, 3, 1 << 20), &mut cursor, now, 100)
            .unwrap();
        let shape: Vec<(String, usize)> = all
            .iter()
            .map(|b| (b.session_id.clone(), b.events.len()))
            .collect();
        assert_eq!(
            shape,
            [("a", 3), ("a", 3), ("a", 1), ("b", 3)].map(|(s, n)| (s.to_string(), n))
        );
        for b in &all {
            let body = wire::body(&b.session_id, &b.client_ver, &b.schema_ver, now, &b.wire);
            assert_eq!(body.len(), b.bytes, "the computed size is the body's");
        }

        // A byte limit one short of a three-event body allows two events per body.
        let limit = all[3].bytes - 1;
        let mut cursor = Cursor::start();
        let small = spool
            .batches(&plan(horizon, 100, limit), &mut cursor, now, 100)
            .unwrap();
        let sizes: Vec<usize> = small.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 1, 2, 1]);
        assert!(small.iter().all(|b| b.bytes <= limit));
        assert_eq!(small.iter().map(|b| b.events.len()).sum::<usize>(), 10);
    }

    #[test]
    fn claims_lease_and_settle_deletes_rejects_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&dir.path().join("s")).unwrap();
        fill(&mut spool, "a", 6);
        let horizon = spool.horizon().unwrap();
        let limits = Limits::default();
        let now = wire::now_millis();
        let claim = Claim {
            plan: plan(horizon, 2, 1 << 20),
            now,
            lease_until: now + 60_000,
            max: 10,
        };
        let mut cursor = Cursor::start();
        let got = spool.claim(&claim, &mut cursor, &limits).unwrap();
        assert_eq!(got.len(), 3);
        // Everything is leased: a second claim finds nothing.
        let again = spool.claim(&claim, &mut Cursor::start(), &limits).unwrap();
        assert!(again.is_empty());
        assert_eq!(spool.summary(now).unwrap().in_flight, 6);

        let ids: Vec<Vec<i64>> = got.iter().map(|b| b.ids().collect()).collect();
        let spans: Vec<Span> = got.iter().map(|b| b.span(&b.events)).collect();
        let settlement = Settlement {
            delivered: vec![spans[0]],
            rejected: vec![spans[1]],
            released: vec![spans[2]],
            streams: vec![got[0].stream],
            run: None,
        };
        spool.settle(&settlement, &limits).unwrap();
        let s = spool.summary(now).unwrap();
        assert_eq!((s.queued, s.rejected, s.in_flight), (2, 2, 0));

        // The released ones come back; the rejected ones never do.
        let back = spool.claim(&claim, &mut Cursor::start(), &limits).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].ids().collect::<Vec<_>>(), ids[2]);
        // An expired lease frees them too.
        let later = Claim {
            now: now + 61_000,
            lease_until: now + 120_000,
            ..claim
        };
        let expired = spool.claim(&later, &mut Cursor::start(), &limits).unwrap();
        assert_eq!(expired.len(), 1);
    }

    #[test]
    fn run_records_and_orphan_streams() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&dir.path().join("s")).unwrap();
        fill(&mut spool, "a", 1);
        let limits = Limits::default();
        let now = wire::now_millis();
        let horizon = spool.horizon().unwrap();
        let claim = Claim {
            plan: plan(horizon, 10, 1 << 20),
            now,
            lease_until: now + 1000,
            max: 1,
        };
        let got = spool.claim(&claim, &mut Cursor::start(), &limits).unwrap();
        let run = RunRecord {
            last: LastUpload {
                at: now,
                result: "retry".into(),
                detail: "HTTP 503".into(),
            },
            backoff: Backoff::Set {
                next_attempt: now + 30_000,
                failures: 1,
            },
        };
        let settlement = Settlement {
            delivered: vec![got[0].span(&got[0].events)],
            streams: vec![got[0].stream],
            run: Some(run.clone()),
            ..Settlement::default()
        };
        spool.settle(&settlement, &limits).unwrap();
        let state = spool.upload_state().unwrap();
        assert_eq!(state.next_attempt, Some(now + 30_000));
        assert_eq!(state.failures, 1);
        let s = spool.summary(now).unwrap();
        assert_eq!(s.last_upload, Some(run.last));
        let streams: i64 = spool
            .read(|tx| Ok(tx.query_row("SELECT count(*) FROM streams", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(streams, 0);
    }
}
