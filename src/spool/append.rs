//! Adding events: the one write `record`, `listen` and imports all make.

use rusqlite::{OptionalExtension, Transaction};

use crate::error::Result;
use crate::event::Event;
use crate::level::Level;
use crate::session::SessionSource;
use crate::spool::{meta, Limits, Spool};
use crate::wire::Millis;

/// The envelope fields shared by a group of new events.
#[derive(Debug, Clone)]
pub struct NewStream {
    pub session: SessionSource,
    pub client_ver: String,
    pub schema_ver: String,
}

/// One event to add: already validated, and already redacted if the level says so.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub ts: Millis,
    pub level: Level,
}

/// Fixed cost of a row beyond its parameters: ids, times, index entries.
const ROW_OVERHEAD: usize = 48;

impl Spool {
    /// Appends every event of every stream in one transaction: all are stored, or
    /// none. Returns the session ids the streams resolved to.
    pub fn append(
        &mut self,
        groups: &[(NewStream, Vec<NewEvent>)],
        limits: &Limits,
    ) -> Result<Vec<String>> {
        self.write(Some(limits), |tx| {
            let mut sessions = Vec::with_capacity(groups.len());
            for (stream, events) in groups {
                let session_id = stream.session.resolve(|| meta::slurm_key(tx))?;
                let stream_id = stream_id(tx, &session_id, &stream.client_ver, &stream.schema_ver)?;
                insert_events(tx, stream_id, events)?;
                sessions.push(session_id);
            }
            Ok(sessions)
        })
    }
}

pub(super) fn stream_id(
    tx: &Transaction,
    session: &str,
    client_ver: &str,
    schema_ver: &str,
) -> Result<i64> {
    let found = tx
        .prepare_cached(
            "SELECT id FROM streams WHERE session_id = ?1 AND client_ver = ?2 AND schema_ver = ?3",
        )?
        .query_row([session, client_ver, schema_ver], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    tx.prepare_cached(
        "INSERT INTO streams (session_id, client_ver, schema_ver) VALUES (?1, ?2, ?3)",
    )?
    .execute([session, client_ver, schema_ver])?;
    Ok(tx.last_insert_rowid())
}

pub(super) fn insert_events(tx: &Transaction, stream: i64, events: &[NewEvent]) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (stream, kind, status, ts, level, parameters, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for new in events {
        // The spool, not only its callers, guarantees a level-1 event never carries
        // its model name to disk.
        let parameters = if new.level.keeps_model() {
            new.event.parameters_json()
        } else {
            let mut redacted = new.event.clone();
            redacted.redact_model();
            redacted.parameters_json()
        };
        let bytes = (parameters.len() + ROW_OVERHEAD) as i64;
        insert.execute(rusqlite::params![
            stream,
            new.event.kind().code(),
            new.event.status().code(),
            new.ts,
            new.level.number(),
            parameters,
            bytes
        ])?;
    }
    Ok(())
}
