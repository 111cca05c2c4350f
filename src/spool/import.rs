//! Adding the events of an exported file (`upload --from`): all in one transaction, and
//! only once per file, remembered by the file's hash in the `imports` table.

use rusqlite::OptionalExtension;

use crate::error::Result;
use crate::spool::append::{insert_row, rows, stream_id};
use crate::spool::{limits, meta, Limits, NewEvent, NewStream, Spool};
use crate::wire::Millis;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The events were added; `dropped` of them (or of older ones) went at once to the
    /// spool's limits, e.g. because they were older than `max_age`.
    New { events: u64, dropped: u64 },
    /// A file with this hash was imported before, at `at`, with `events` events; nothing
    /// was added.
    Already { at: Millis, events: u64 },
}

/// Receives the events of one request body of the file.
pub type Sink<'a> = dyn FnMut(&NewStream, &[NewEvent]) -> Result<()> + 'a;

impl Spool {
    /// When a file with this hash was imported, and how many events it held.
    pub fn imported(&mut self, hash: &str) -> Result<Option<(Millis, u64)>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT at, events FROM imports WHERE hash = ?1",
                    [hash],
                    |r| Ok((r.get::<_, Millis>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
                )
                .optional()?)
        })
    }

    /// Imports a file whose content hashes to `hash`: `read` is called once (or twice,
    /// should a corrupt database be moved aside) and must hand every body of the file to
    /// the sink; an error from it leaves the spool untouched.
    pub fn import(
        &mut self,
        hash: &str,
        now: Millis,
        limits: &Limits,
        mut read: impl FnMut(&mut Sink) -> Result<()>,
    ) -> Result<Imported> {
        self.write(Some(limits), |tx| {
            let before: Option<(Millis, i64)> = tx
                .query_row(
                    "SELECT at, events FROM imports WHERE hash = ?1",
                    [hash],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((at, events)) = before {
                return Ok(Imported::Already {
                    at,
                    events: events.max(0) as u64,
                });
            }
            let mut count = 0u64;
            read(&mut |stream: &NewStream, events: &[NewEvent]| {
                let session = stream.session.resolve(|| meta::slurm_key(tx))?;
                let id = stream_id(tx, &session, &stream.client_ver, &stream.schema_ver)?;
                for row in rows(&session, stream, events) {
                    insert_row(tx, id, &row)?;
                }
                count += events.len() as u64;
                Ok(())
            })?;
            tx.execute(
                "INSERT INTO imports (hash, at, events) VALUES (?1, ?2, ?3)",
                rusqlite::params![hash, now, count as i64],
            )?;
            // Applied here rather than at commit only to learn how many went.
            let dropped = limits::enforce(tx, limits, now)?;
            Ok(Imported::New {
                events: count,
                dropped,
            })
        })
    }
}
