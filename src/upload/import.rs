//! Reading a file written by `export` back (`upload --from`): one request body per line,
//! each parsed and validated by [`wire::parse_body`] exactly like a body POSTed to
//! `listen`.
//!
//! The file is read twice, a line at a time, so memory stays bounded by the longest
//! line: first to check every line and hash the whole file without touching the spool,
//! then inside the import transaction to add the events. Should the file change in
//! between, the hashes differ and nothing is imported.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::cmd::record::BoundedLines;
use crate::error::{Error, Result};
use crate::level::Level;
use crate::session::SessionSource;
use crate::spool::{Imported, Limits, NewEvent, NewStream, Spool};
use crate::wire::{self, Millis, ParsedBody};

/// The longest line accepted: the largest body `export` can write (16 MiB, the upper
/// bound of `telespool.batch_bytes`) with room to spare; longer is not our format.
pub const MAX_LINE: usize = 17 << 20;

/// A checked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// blake3 of the file's bytes, hex.
    pub hash: String,
    pub bodies: u64,
    pub events: u64,
}

/// Reads every line of `path` and validates it; an error names the line.
pub fn check(path: &Path) -> Result<Checked> {
    let mut bodies = 0;
    let mut events = 0;
    let hash = each_body(path, |parsed| {
        bodies += 1;
        events += parsed.events.len() as u64;
        Ok(())
    })?;
    Ok(Checked {
        hash,
        bodies,
        events,
    })
}

/// Imports the checked file into `spool` in one transaction, as events recorded now at
/// `level` (so level 1 stores no model name), keeping their times, session ids and
/// client versions.
pub fn import(
    spool: &mut Spool,
    path: &Path,
    checked: &Checked,
    level: Level,
    limits: &Limits,
    now: Millis,
) -> Result<Imported> {
    spool.import(&checked.hash, now, limits, |sink| {
        let hash = each_body(path, |parsed| {
            let stream = NewStream {
                session: SessionSource::Given(parsed.session_id),
                client_ver: parsed.client_ver,
                schema_ver: parsed.schema_ver,
            };
            let events: Vec<NewEvent> = parsed
                .events
                .into_iter()
                .map(|(ts, event)| NewEvent { event, ts, level })
                .collect();
            sink(&stream, &events)
        })?;
        if hash != checked.hash {
            return Err(Error::io(format!(
                "{} changed while it was being imported; nothing was imported, try again",
                path.display()
            )));
        }
        Ok(())
    })
}

/// Whether a file with this hash was imported into `spool` before: when, and how many
/// events it held.
pub fn imported_before(spool: &mut Spool, checked: &Checked) -> Result<Option<(Millis, u64)>> {
    spool.imported(&checked.hash)
}

/// Calls `each` with every body of the file in order; returns the file's hash.
fn each_body(path: &Path, mut each: impl FnMut(ParsedBody) -> Result<()>) -> Result<String> {
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = Hashing {
        inner: file,
        hasher: blake3::Hasher::new(),
    };
    {
        let mut lines = BoundedLines::new(BufReader::new(&mut reader), MAX_LINE);
        let mut number = 0u64;
        let at = |number: u64, why: &str| {
            Error::bad_event(format!(
                "{} line {number}: {why}; nothing was imported",
                path.display()
            ))
        };
        while let Some(line) = lines.next_line() {
            number += 1;
            let line = line.map_err(|e| {
                if e.starts_with("cannot read") {
                    Error::io(format!("{} line {number}: {e}", path.display()))
                } else {
                    at(number, &e)
                }
            })?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = wire::parse_body(&line).map_err(|e| at(number, &e))?;
            each(parsed)?;
        }
    }
    Ok(reader.hasher.finalize().to_hex().to_string())
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
