//! `telespool export`: move queued events into a JSON Lines file of request bodies, for
//! a machine with egress to `upload --from` (SPEC §4).

use std::io::Write;
use std::path::Path;

use crate::cli::ExportArgs;
use crate::cmd::upload::batch_limits;
use crate::cmd::Context;
use crate::error::{exit, Error, Result};
use crate::level::Level;
use crate::spool::{FileLock, Plan, Spool, UPLOAD_LOCK_FILE};
use crate::upload::export::{self, Written};
use crate::wire;

pub fn run(args: ExportArgs, ctx: &Context) -> Result<i32> {
    let level = ctx.level().level;
    if level == Level::Off {
        ctx.ui.info("telemetry level is 0 (OFF): nothing exported");
        return Ok(exit::OK);
    }
    let to_stdout = args.output.as_os_str() == "-";
    let keep = args.keep || to_stdout;
    let dir = ctx.spool_dir()?;
    let batch = batch_limits(ctx)?;
    let limits = ctx.settings.limits()?;
    let mut spool = Spool::open_existing(&dir)?;

    // Moving events out must not race an upload sending the same ones.
    let _lock = match (&spool, keep) {
        (Some(_), false) => Some(FileLock::try_acquire(&dir, UPLOAD_LOCK_FILE)?.ok_or_else(
            || {
                Error::temp_fail(format!(
                    "an upload is running on {}; nothing exported, try again when it has \
                     finished (or add --keep)",
                    dir.display()
                ))
            },
        )?),
        _ => None,
    };

    let now = wire::now_millis();
    let written = match spool.as_mut() {
        None => {
            if !to_stdout {
                // An empty spool exports an empty file, as asked.
                write_empty(&args.output)?;
            }
            Written::default()
        }
        Some(spool) => {
            let plan = Plan {
                level,
                limits: batch,
                horizon: spool.horizon()?,
            };
            if to_stdout {
                let mut out = std::io::stdout().lock();
                match export::write_bodies(spool, &plan, None, now, &mut out).and_then(|w| {
                    out.flush()
                        .map(|()| w)
                        .map_err(|e| Error::io(e.to_string()))
                }) {
                    Ok(w) => w,
                    Err(Error::Io(msg)) if msg.contains("Broken pipe") => return Ok(exit::OK),
                    Err(Error::Io(msg)) => {
                        return Err(Error::io(format!("cannot write to stdout: {msg}")))
                    }
                    Err(e) => return Err(e),
                }
            } else {
                export::write_file(&args.output, spool, &plan, now)?
            }
        }
    };

    let events = written.ids.len() as u64;
    let target = if to_stdout {
        "stdout".to_string()
    } else {
        args.output.display().to_string()
    };
    let mut message = format!(
        "exported {events} event{} in {} request bod{} to {target}",
        plural(events),
        written.bodies,
        if written.bodies == 1 { "y" } else { "ies" }
    );
    match spool.as_mut() {
        Some(spool) if !keep && events > 0 => {
            let removed = spool.remove(&written.ids, &limits)?;
            message.push_str(&format!(
                "; {removed} removed from the spool (`telespool upload --from` sends them)"
            ));
        }
        _ if events > 0 => message.push_str("; they stay queued"),
        _ => {}
    }
    ctx.ui.info(message);
    if let Some(spool) = spool.as_mut() {
        let summary = spool.summary(wire::now_millis())?;
        if summary.in_flight > 0 {
            ctx.ui.info(format!(
                "{} event{} claimed by an upload in progress were not exported",
                summary.in_flight,
                plural(summary.in_flight)
            ));
        }
        if summary.rejected > 0 {
            ctx.ui.info(format!(
                "{} rejected event{} were not exported (see `telespool inspect`)",
                summary.rejected,
                plural(summary.rejected)
            ));
        }
    }
    Ok(exit::OK)
}

fn write_empty(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let cant = |e: std::io::Error| Error::cant_write(path, e);
    let temp = tempfile::Builder::new()
        .prefix(".telespool-export-")
        .tempfile_in(dir)
        .map_err(cant)?;
    temp.as_file().sync_all().map_err(cant)?;
    temp.persist(path).map_err(|e| cant(e.error))?;
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
