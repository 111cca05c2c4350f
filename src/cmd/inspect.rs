//! `telespool inspect`: what is queued, and exactly what would leave the machine.

use std::io::Write;

use serde_json::{json, Value};

use crate::cli::InspectArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};
use crate::event::{Kind, Status};
use crate::level::Level;
use crate::spool::{self, Spool, StoredEvent, Summary};
use crate::units::human_size;
use crate::wire::{self, format_ts, InspectEvent, WireEvent};

pub fn run(args: InspectArgs, ctx: &Context) -> Result<i32> {
    let level = ctx.level().clone();
    let dir = ctx.spool_dir()?;
    let now = wire::now_millis();
    let mut spool = Spool::open_existing(&dir)?;
    let limit = (args.limit > 0).then_some(args.limit);

    // Events as upload would send them now: none at all at level 0.
    let listing = (args.events && level.level != Level::Off).then_some(limit);
    let mut events: Vec<(StoredEvent, WireEvent)> = Vec::new();
    let summary = match spool.as_mut() {
        Some(s) => s.snapshot(now, listing, |stored| {
            let wire = WireEvent::from_stored(&stored, level.level);
            events.push((stored, wire));
            Ok(())
        })?,
        None => Summary::empty(),
    };
    let quarantined = spool::quarantined_in(&dir);
    let size = spool::size_on_disk(&dir);
    let storage = spool.as_ref().map(|s| {
        let fs = match s.filesystem() {
            spool::FsKind::Local => "local disk".to_string(),
            spool::FsKind::Network(name) => format!("network filesystem: {name}"),
        };
        format!("{fs}, {} journal", s.journal_mode())
    });

    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let mut doc = json!({
            "level": level.level.number(),
            "level_name": level.level.name(),
            "level_source": level.source.key(),
            "spool": dir.display().to_string(),
            "size_bytes": size,
            "queued": summary.queued,
            "in_flight": summary.in_flight,
            "rejected": summary.rejected,
            "dropped": summary.dropped,
            "by_kind": by_kind_json(&summary),
            "oldest": summary.oldest.map(format_ts),
            "newest": summary.newest.map(format_ts),
            "last_upload": summary.last_upload.as_ref().map(|u| json!({
                "at": format_ts(u.at), "result": u.result, "detail": u.detail,
            })),
            "next_attempt": summary.next_attempt.map(format_ts),
            "quarantined": quarantined,
        });
        if args.events {
            doc["events"] = Value::Array(
                events
                    .iter()
                    .map(|(s, w)| serde_json::to_value(InspectEvent::new(s, w)))
                    .collect::<serde_json::Result<_>>()
                    .map_err(|e| Error::io(format!("cannot render events: {e}")))?,
            );
        }
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let report = Report {
            level: &level,
            dir: &dir,
            size,
            storage,
            summary: &summary,
            quarantined: &quarantined,
            events: &events,
        };
        report.write(&mut out, ctx, &args)
    };
    match written {
        Ok(()) => Ok(0),
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::io(format!("cannot write to stdout: {e}"))),
    }
}

fn by_kind_json(summary: &Summary) -> Value {
    let mut by_kind = serde_json::Map::new();
    for kind in Kind::ALL {
        let mut counts = serde_json::Map::new();
        for status in Status::ALL {
            let n = summary
                .by_kind
                .get(&kind)
                .and_then(|m| m.get(&status))
                .copied()
                .unwrap_or(0);
            counts.insert(status.as_str().into(), n.into());
        }
        by_kind.insert(kind.name().into(), Value::Object(counts));
    }
    Value::Object(by_kind)
}

/// Everything the human summary shows.
struct Report<'a> {
    level: &'a crate::level::EffectiveLevel,
    dir: &'a std::path::Path,
    size: u64,
    storage: Option<String>,
    summary: &'a Summary,
    quarantined: &'a [String],
    events: &'a [(StoredEvent, WireEvent)],
}

impl Report<'_> {
    fn write(
        &self,
        out: &mut impl Write,
        ctx: &Context,
        args: &InspectArgs,
    ) -> std::io::Result<()> {
        let Report {
            level,
            dir,
            size,
            storage,
            summary,
            quarantined,
            events,
        } = self;
        let size = *size;
        let source = match level.source {
            crate::level::LevelSource::Env => "from NEMO_EVALUATOR_TELEMETRY_LEVEL".to_string(),
            crate::level::LevelSource::Config => {
                format!("from {}", ctx.settings.file.path.display())
            }
            crate::level::LevelSource::Default => "default".to_string(),
        };
        let effect = match level.level {
            Level::Off => "nothing is recorded or sent",
            Level::Minimal => "model names leave as `redacted`",
            Level::Default => "full events are sent",
        };
        writeln!(out, "telemetry level  {} {source}; {effect}", level.level)?;
        writeln!(
            out,
            "spool            {} ({}{})",
            dir.display(),
            human_size(size),
            storage
                .as_ref()
                .map(|s| format!(", {s}"))
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "queued           {} event{} ({} in flight)",
            summary.queued,
            plural(summary.queued),
            summary.in_flight
        )?;
        for kind in Kind::ALL {
            let counts = summary.by_kind.get(&kind);
            let n = |s: Status| counts.and_then(|m| m.get(&s)).copied().unwrap_or(0);
            writeln!(
                out,
                "  {:<21} started {}, success {}, failure {}",
                kind.name(),
                n(Status::Started),
                n(Status::Success),
                n(Status::Failure)
            )?;
        }
        let time = |t: Option<i64>| t.map_or_else(|| "-".to_string(), format_ts);
        writeln!(out, "oldest           {}", time(summary.oldest))?;
        writeln!(out, "newest           {}", time(summary.newest))?;
        writeln!(
            out,
            "rejected         {} (kept for review; `telespool purge --rejected` removes them)",
            summary.rejected
        )?;
        let limits = ctx
            .settings
            .limits()
            .map(|l| {
                format!(
                    " (limits: {} events, {}, {})",
                    l.max_events,
                    crate::units::format_size(l.max_bytes),
                    crate::units::format_duration(l.max_age)
                )
            })
            .unwrap_or_default();
        writeln!(out, "dropped          {}{limits}", summary.dropped)?;
        match &summary.last_upload {
            None => writeln!(out, "last upload      never")?,
            Some(u) => writeln!(
                out,
                "last upload      {} {}{}",
                format_ts(u.at),
                u.result,
                if u.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", u.detail)
                }
            )?,
        }
        match summary.next_attempt {
            None => writeln!(out, "next attempt     any time")?,
            Some(t) => writeln!(
                out,
                "next attempt     {} (backing off; `upload --now` ignores it)",
                format_ts(t)
            )?,
        }
        if quarantined.is_empty() {
            writeln!(out, "quarantined      none")?;
        } else {
            writeln!(
                out,
                "quarantined      {} (damaged spools moved aside, kept in the spool directory)",
                quarantined.join(", ")
            )?;
        }
        if args.events {
            writeln!(out)?;
            if level.level == Level::Off {
                writeln!(out, "Level 0 (OFF): nothing would be sent.")?;
            } else {
                writeln!(
                    out,
                    "Events, oldest first, exactly as upload would send them now{}:",
                    if args.limit > 0 && summary.queued > args.limit {
                        format!(
                            " (first {} of {}; --limit 0 lists all)",
                            args.limit, summary.queued
                        )
                    } else {
                        String::new()
                    }
                )?;
                for (stored, wire) in events.iter() {
                    serde_json::to_writer(&mut *out, &InspectEvent::new(stored, wire))?;
                    writeln!(out)?;
                }
            }
        }
        Ok(())
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
