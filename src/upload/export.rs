//! Request bodies written out instead of sent: `export` (to a file, for a machine with
//! egress) and `upload --dry-run` (to stdout). Both take the batches an upload would
//! claim now, from the same pass over the spool, and the same [`super::body`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::spool::{Batch, Cursor, Plan, Spool};
use crate::upload::MAX_WINDOW;
use crate::wire::{self, Millis};

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Ids of the events written, so exactly these can be removed afterwards.
    pub ids: Vec<i64>,
    /// Lines (request bodies) written.
    pub bodies: u64,
}

/// Calls `each` with every batch an upload would send now, in order, at most
/// `max_batches`. Reads a window at a time, each in its own short read transaction, so
/// writers are never held up however large the spool.
pub fn for_each_batch(
    spool: &mut Spool,
    plan: &Plan,
    max_batches: Option<u64>,
    mut each: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    let mut cursor = Cursor::start();
    let mut seen = 0u64;
    loop {
        let left = max_batches.map_or(u64::MAX, |m| m.saturating_sub(seen));
        if left == 0 {
            return Ok(());
        }
        let want = (MAX_WINDOW as u64).min(left) as usize;
        let batches = spool.batches(plan, &mut cursor, wire::now_millis(), want)?;
        if batches.is_empty() {
            return Ok(());
        }
        for batch in &batches {
            each(batch)?;
            seen += 1;
        }
    }
}

/// Writes each body as one line of `out`, stamped `sent_ts`.
pub fn write_bodies(
    spool: &mut Spool,
    plan: &Plan,
    max_batches: Option<u64>,
    sent_ts: Millis,
    out: &mut dyn Write,
) -> Result<Written> {
    let mut written = Written::default();
    for_each_batch(spool, plan, max_batches, |batch| {
        let mut line = super::body(batch, 0..batch.events.len(), sent_ts);
        line.push(b'\n');
        out.write_all(&line).map_err(write_error)?;
        written.ids.extend(batch.ids());
        written.bodies += 1;
        Ok(())
    })?;
    Ok(written)
}

/// An error writing to stdout or the export file; [`Error::Io`] until the caller knows
/// which file it was.
fn write_error(e: std::io::Error) -> Error {
    Error::io(e.to_string())
}

/// Writes the bodies to `path` durably: a temporary file in the same directory, synced,
/// renamed over `path`, and the directory synced, so that once this returns the file is
/// whole on disk — and never half-written under its name.
pub fn write_file(path: &Path, spool: &mut Spool, plan: &Plan, sent_ts: Millis) -> Result<Written> {
    let cant = |e: &dyn std::fmt::Display| Error::cant_write(path, e.to_string());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".telespool-export-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| cant(&e))?;
    let written = {
        let mut out = BufWriter::new(temp.as_file());
        let written = write_bodies(spool, plan, None, sent_ts, &mut out).map_err(|e| match e {
            Error::Io(msg) => cant(&msg),
            other => other,
        })?;
        out.flush().map_err(|e| cant(&e))?;
        written
    };
    temp.as_file().sync_all().map_err(|e| cant(&e))?;
    temp.persist(path).map_err(|e| cant(&e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| cant(&e))?;
    Ok(written)
}
