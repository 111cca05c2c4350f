//! The database schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migration `n` takes a spool from version `n` to `n + 1`; each runs in the write
//! transaction that found the old version, so a spool is never half-migrated. A spool
//! from a newer telespool is refused, never rewritten: an older binary cannot know
//! what the newer one stored.

use rusqlite::Transaction;

use crate::error::{Error, Result};

/// The version this binary writes.
pub const CURRENT: i64 = 2;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    r#"
    -- Small facts shared by every host using the spool: drop counter, backoff,
    -- last upload, the Slurm session key.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value ANY
    ) WITHOUT ROWID;

    -- One row per (session, client version, schema version): the events of one
    -- stream go in the same requests, and events refer to it by a small integer.
    CREATE TABLE streams (
        id         INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        client_ver TEXT NOT NULL,
        schema_ver TEXT NOT NULL,
        UNIQUE (session_id, client_ver, schema_ver)
    );

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,  -- arrival order
        stream      INTEGER NOT NULL REFERENCES streams(id),
        kind        INTEGER NOT NULL,     -- 1 EvaluationTaskEvent, 2 LauncherJobEvent
        status      INTEGER NOT NULL,     -- 0 started, 1 success, 2 failure
        ts          INTEGER NOT NULL,     -- event time, ms since the epoch, UTC
        level       INTEGER NOT NULL,     -- the level it was recorded at
        parameters  TEXT NOT NULL,        -- canonical JSON of the allowlisted fields
        bytes       INTEGER NOT NULL,     -- what it counts against max_bytes
        rejected    INTEGER NOT NULL DEFAULT 0, -- 1: the endpoint refused it (400/422)
        lease_until INTEGER               -- ms; claimed by an upload until then
    );
    CREATE INDEX events_by_stream ON events (stream, id);
    CREATE INDEX events_by_ts ON events (ts);
    CREATE INDEX events_leased ON events (lease_until) WHERE lease_until IS NOT NULL;

    -- Running counts kept by triggers, so limits and `inspect` never count rows.
    CREATE TABLE tally (
        kind     INTEGER NOT NULL,
        status   INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        events   INTEGER NOT NULL DEFAULT 0,
        bytes    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (kind, status, rejected)
    ) WITHOUT ROWID;
    INSERT INTO tally (kind, status, rejected)
        SELECT k.value, s.value, r.value
        FROM (SELECT 1 AS value UNION ALL SELECT 2) AS k,
             (SELECT 0 AS value UNION ALL SELECT 1 UNION ALL SELECT 2) AS s,
             (SELECT 0 AS value UNION ALL SELECT 1) AS r;

    CREATE TRIGGER events_tally_insert AFTER INSERT ON events BEGIN
        UPDATE tally SET events = events + 1, bytes = bytes + new.bytes
        WHERE kind = new.kind AND status = new.status AND rejected = new.rejected;
    END;
    CREATE TRIGGER events_tally_delete AFTER DELETE ON events BEGIN
        UPDATE tally SET events = events - 1, bytes = bytes - old.bytes
        WHERE kind = old.kind AND status = old.status AND rejected = old.rejected;
    END;
    CREATE TRIGGER events_tally_reject AFTER UPDATE OF rejected ON events
    WHEN old.rejected != new.rejected BEGIN
        UPDATE tally SET events = events - 1, bytes = bytes - old.bytes
        WHERE kind = old.kind AND status = old.status AND rejected = old.rejected;
        UPDATE tally SET events = events + 1, bytes = bytes + new.bytes
        WHERE kind = new.kind AND status = new.status AND rejected = new.rejected;
    END;

    -- Hashes of files imported with `upload --from`, so a second import adds nothing.
    CREATE TABLE imports (
        hash   TEXT PRIMARY KEY,
        at     INTEGER NOT NULL,
        events INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 1 -> 2: the inbox, where a small `record` appends with one page written; deletes
    // keep the counts in code; in-flight events counted by lease, not by index.
    r#"
    -- Deletes take their events off `tally` in code, once per statement (spool/tally.rs).
    DROP TRIGGER events_tally_delete;

    -- Claimed events by lease time, kept by the claims and settles, so `inspect` counts
    -- what is in flight without an index over every event's lease.
    DROP INDEX events_leased;
    CREATE TABLE leases (
        lease_until INTEGER PRIMARY KEY,
        events      INTEGER NOT NULL
    );
    INSERT INTO leases (lease_until, events)
        SELECT lease_until, count(*) FROM events
        WHERE lease_until IS NOT NULL AND rejected = 0 GROUP BY lease_until;

    -- Events as `record` hands them over, each row complete in itself (the envelope
    -- fields inline, no index, no trigger), so a small append writes one page: what a
    -- plain SQLite insert costs. Every other write folds the inbox into `streams` and
    -- `events` first (see spool/inbox.rs), and only ever all of it, so its row ids stay
    -- contiguous and the running totals of the last row describe the whole inbox.
    CREATE TABLE inbox (
        id          INTEGER PRIMARY KEY,  -- arrival order
        session_id  TEXT NOT NULL,
        client_ver  TEXT NOT NULL,
        schema_ver  TEXT NOT NULL,
        kind        INTEGER NOT NULL,
        status      INTEGER NOT NULL,
        ts          INTEGER NOT NULL,
        level       INTEGER NOT NULL,
        parameters  TEXT NOT NULL,
        bytes       INTEGER NOT NULL,
        -- Over the inbox up to and including this row: events, bytes, oldest and
        -- newest event time. The limits read them from the last row alone.
        run_events  INTEGER NOT NULL,
        run_bytes   INTEGER NOT NULL,
        run_min_ts  INTEGER NOT NULL,
        run_max_ts  INTEGER NOT NULL
    );
    "#,
];

/// Brings the schema to [`CURRENT`] inside `tx`, or refuses a newer one.
pub fn migrate(tx: &Transaction, dir_hint: &std::path::Path) -> Result<()> {
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    check_not_newer(version, dir_hint)?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
    }
    Ok(())
}

pub fn check_not_newer(version: i64, dir_hint: &std::path::Path) -> Result<()> {
    if version > CURRENT {
        return Err(Error::io(format!(
            "the spool at {} was written by a newer telespool (schema {version}, this one \
             knows {CURRENT}); upgrade telespool, or use another --spool",
            dir_hint.display()
        )));
    }
    Ok(())
}
