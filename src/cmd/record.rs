//! `telespool record`: validate, apply the level, append. Runs inside every
//! evaluation job, so it does only that: no network, one transaction, and a second
//! thread only while it has to wait for the spool lock (see `spool::FileLock`).

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use crate::cli::{RecordArgs, RecordKind};
use crate::cmd::Context;
use crate::error::{Error, Result};
use crate::event::{Event, Kind};
use crate::level::Level;
use crate::session::{SessionSource, CLIENT_VERSION_ENV};
use crate::spool::{NewEvent, NewStream, Spool};
use crate::wire::{self, SCHEMA_VERSION};

/// Longest line `record --json -` accepts; longer ones are refused without reading
/// them whole. A maximal valid event is well under 300 KiB.
pub const MAX_LINE: usize = 1 << 20;

pub fn run(args: RecordArgs, ctx: &Context) -> Result<i32> {
    let level = ctx.level().level;
    if level == Level::Off {
        ctx.ui
            .detail("telemetry level is 0 (OFF): nothing recorded");
        return Ok(0);
    }
    let events = match (args.kind, args.json.as_deref()) {
        (Some(kind), None) => vec![from_flags(kind)?],
        (None, Some("-")) => read_lines(std::io::stdin().lock())?,
        (None, Some(text)) => vec![parse_json(text).map_err(Error::bad_event)?],
        (None, None) | (Some(_), Some(_)) => {
            return Err(Error::usage(
                "record needs an event: `evaluation-task ...`, `launcher-job ...` or --json; \
                 see `telespool record --help`",
            ))
        }
    };
    let client_ver = match args.client_version {
        Some(v) => {
            wire::validate_client_version(&v)
                .map_err(|e| Error::bad_event(format!("--client-version: {e}")))?;
            v
        }
        None => match ctx.settings.var(CLIENT_VERSION_ENV) {
            Some(v) => {
                wire::validate_client_version(&v)
                    .map_err(|e| Error::bad_event(format!("{CLIENT_VERSION_ENV}: {e}")))?;
                v
            }
            None => "undefined".to_string(),
        },
    };
    let session = SessionSource::from_env(|name| ctx.settings.var(name))?;
    let limits = ctx.settings.limits()?;
    let dir = ctx.spool_dir()?;

    let ts = wire::now_millis();
    let count = events.len();
    let new_events = events
        .into_iter()
        .map(|mut event| {
            if !level.keeps_model() {
                event.redact_model();
            }
            NewEvent { event, ts, level }
        })
        .collect();
    let stream = NewStream {
        session,
        client_ver,
        schema_ver: SCHEMA_VERSION.to_string(),
    };
    let mut spool = Spool::open(&dir)?;
    spool.append(&[(stream, new_events)], &limits)?;
    ctx.ui.detail(format!(
        "recorded {count} event{} in {}",
        if count == 1 { "" } else { "s" },
        dir.display()
    ));
    Ok(0)
}

/// Builds the event from flags through the same validation as JSON input, so a rule
/// holds however the event arrives.
fn from_flags(kind: RecordKind) -> Result<Event> {
    let mut p = Map::new();
    let (kind, status) = match kind {
        RecordKind::EvaluationTask(a) => {
            p.insert("task".into(), a.task.into());
            p.insert("frameworkName".into(), a.framework.into());
            p.insert("model".into(), a.model.into());
            if let Some(d) = a.duration {
                if !d.is_finite() {
                    return Err(Error::bad_event(format!(
                        "--duration: must be a finite number, got {d}"
                    )));
                }
                p.insert("executionDurationSeconds".into(), Value::from(d));
            }
            (Kind::EvaluationTask, a.status)
        }
        RecordKind::LauncherJob(a) => {
            p.insert("executorType".into(), a.executor.into());
            p.insert("deploymentType".into(), a.deployment.into());
            p.insert("model".into(), a.model.into());
            p.insert("tasks".into(), a.tasks.into());
            p.insert("exporters".into(), a.exporters.into());
            (Kind::LauncherJob, a.status)
        }
    };
    p.insert("status".into(), status.into());
    Event::validate(kind, &p).map_err(|e| Error::bad_event(flag_names(&e)))
}

/// Names the flag rather than the JSON field in errors about flag input.
fn flag_names(message: &str) -> String {
    const FLAGS: [(&str, &str); 9] = [
        ("parameters.task:", "--task:"),
        ("parameters.frameworkName:", "--framework:"),
        ("parameters.model:", "--model:"),
        ("parameters.executionDurationSeconds:", "--duration:"),
        ("parameters.status:", "--status:"),
        ("parameters.executorType:", "--executor:"),
        ("parameters.deploymentType:", "--deployment:"),
        ("parameters.tasks:", "--task:"),
        ("parameters.exporters:", "--exporter:"),
    ];
    FLAGS
        .iter()
        .find_map(|(field, flag)| {
            message
                .strip_prefix(field)
                .map(|rest| format!("{flag}{rest}"))
        })
        .unwrap_or_else(|| message.to_string())
}

pub fn parse_json(text: &str) -> Result<Event, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    Event::from_json(&value)
}

/// Reads one event per line, all or nothing: the first bad line fails the whole input.
fn read_lines(input: impl BufRead) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut lines = BoundedLines::new(input, MAX_LINE);
    let mut number = 0;
    while let Some(line) = lines.next_line() {
        number += 1;
        let line = line.map_err(|e| Error::bad_event(format!("stdin line {number}: {e}")))?;
        let text = std::str::from_utf8(&line)
            .map_err(|_| Error::bad_event(format!("stdin line {number}: not UTF-8")))?;
        if text.trim().is_empty() {
            continue;
        }
        let event =
            parse_json(text).map_err(|e| Error::bad_event(format!("stdin line {number}: {e}")))?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(Error::bad_event("stdin held no events"));
    }
    Ok(events)
}

/// Lines of at most `max` bytes; a longer one is an error, found without buffering it.
pub struct BoundedLines<R> {
    input: R,
    max: usize,
    done: bool,
}

impl<R: BufRead> BoundedLines<R> {
    pub fn new(input: R, max: usize) -> Self {
        BoundedLines {
            input,
            max,
            done: false,
        }
    }

    pub fn next_line(&mut self) -> Option<std::result::Result<Vec<u8>, String>> {
        if self.done {
            return None;
        }
        let mut line = Vec::new();
        let limit = self.max as u64 + 1;
        match (&mut self.input).take(limit).read_until(b'\n', &mut line) {
            Err(e) => {
                self.done = true;
                Some(Err(format!("cannot read: {e}")))
            }
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    Some(Ok(line))
                } else if line.len() > self.max {
                    self.done = true;
                    Some(Err(format!("line is longer than {} bytes", self.max)))
                } else {
                    // The last line, without a newline.
                    self.done = true;
                    Some(Ok(line))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_early() {
        let input = format!("short\n{}\nafter\n", "x".repeat(50));
        let mut lines = BoundedLines::new(input.as_bytes(), 10);
        assert_eq!(lines.next_line().unwrap().unwrap(), b"short");
        assert!(lines.next_line().unwrap().is_err());
        assert!(lines.next_line().is_none());
    }

    #[test]
    fn flag_errors_name_flags() {
        assert_eq!(flag_names("parameters.status: bad"), "--status: bad");
    }
}
