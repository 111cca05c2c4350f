//! Adding events: the one write `record`, `listen` and imports all make.

use rusqlite::{OptionalExtension, Transaction};

use crate::error::Result;
use crate::event::Event;
use crate::level::Level;
use crate::session::SessionSource;
use crate::spool::{inbox, limits, meta, Limits, Spool};
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

/// The most events an append may put in the inbox; larger ones (`record --json -` of
/// many lines, imports) go straight into `events`, where their pages are shared by many
/// rows anyway and `inspect` finds them without a scan.
const INBOX_MAX_APPEND: usize = 64;

impl Spool {
    /// Appends every event of every stream in one transaction: all are stored, or
    /// none. Returns the session ids the streams resolved to.
    ///
    /// A small append that leaves every bound holding goes to the inbox (one page
    /// written; see [`super::inbox`]). Anything else folds the inbox in, inserts into
    /// `events` and applies the limits, dropping the oldest as needed.
    pub fn append(
        &mut self,
        groups: &[(NewStream, Vec<NewEvent>)],
        limits: &Limits,
    ) -> Result<Vec<String>> {
        let count: usize = groups.iter().map(|(_, events)| events.len()).sum();
        self.write_append(|tx| {
            let now = crate::wire::now_millis();
            let mut sessions = Vec::with_capacity(groups.len());
            for (stream, _) in groups {
                sessions.push(stream.session.resolve(|| meta::slurm_key(tx))?);
            }
            let rows: Vec<Row> = groups
                .iter()
                .zip(&sessions)
                .flat_map(|((stream, events), session_id)| rows(session_id, stream, events))
                .collect();
            if count <= INBOX_MAX_APPEND && limits::room_for(tx, limits, now, &rows)? {
                inbox::push(tx, &rows)?;
                limits::log_settings(tx, limits)?;
                return Ok(sessions);
            }
            inbox::fold(tx)?;
            let mut current: Option<(&Row, i64)> = None;
            for row in &rows {
                let stream = match current {
                    Some((first, id)) if first.same_stream(row) => id,
                    _ => {
                        let id = stream_id(tx, row.session_id, row.client_ver, row.schema_ver)?;
                        current = Some((row, id));
                        id
                    }
                };
                insert_row(tx, stream, row)?;
            }
            limits::enforce(tx, limits, now)?;
            Ok(sessions)
        })
    }
}

/// One event ready to store, in `events` or in the inbox: validated, redacted if its
/// level says so, its size counted, with the envelope fields of its stream.
pub(super) struct Row<'a> {
    pub session_id: &'a str,
    pub client_ver: &'a str,
    pub schema_ver: &'a str,
    pub kind: i64,
    pub status: i64,
    pub ts: Millis,
    pub level: i64,
    pub parameters: String,
    pub bytes: i64,
}

impl Row<'_> {
    fn same_stream(&self, other: &Row) -> bool {
        (self.session_id, self.client_ver, self.schema_ver)
            == (other.session_id, other.client_ver, other.schema_ver)
    }
}

/// The rows of `events`, recorded under `session_id` in `stream`.
pub(super) fn rows<'a>(
    session_id: &'a str,
    stream: &'a NewStream,
    events: &'a [NewEvent],
) -> impl Iterator<Item = Row<'a>> + 'a {
    events.iter().map(move |new| {
        // The spool, not only its callers, guarantees a level-1 event never carries its
        // model name to disk.
        let parameters = if new.level.keeps_model() {
            new.event.parameters_json()
        } else {
            let mut redacted = new.event.clone();
            redacted.redact_model();
            redacted.parameters_json()
        };
        Row {
            session_id,
            client_ver: &stream.client_ver,
            schema_ver: &stream.schema_ver,
            kind: new.event.kind().code(),
            status: new.event.status().code(),
            ts: new.ts,
            level: i64::from(new.level.number()),
            bytes: (parameters.len() + ROW_OVERHEAD) as i64,
            parameters,
        }
    })
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

/// Inserts `row` into `events`, in the stream whose `streams` id is `stream`.
pub(super) fn insert_row(tx: &Transaction, stream: i64, row: &Row) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (stream, kind, status, ts, level, parameters, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(rusqlite::params![
        stream,
        row.kind,
        row.status,
        row.ts,
        row.level,
        row.parameters,
        row.bytes
    ])?;
    Ok(())
}
