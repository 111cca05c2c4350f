//! `telespool upload`: send queued events (SPEC §5), after importing an exported file
//! with `--from`; `--dry-run` prints the bodies instead.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::UploadArgs;
use crate::cmd::Context;
use crate::error::{exit, Error, Result};
use crate::level::Level;
use crate::settings::Key;
use crate::spool::{BatchLimits, FileLock, Imported, Plan, Spool, UPLOAD_LOCK_FILE};
use crate::units::{format_duration, human_size};
use crate::upload::transport::{Endpoint, Transport, TransportOptions};
use crate::upload::{self, export, import, Options, Report, Run, Sent, Stop};
use crate::wire::{self, format_ts, Millis};

pub fn run(args: UploadArgs, ctx: &Context) -> Result<i32> {
    let level = ctx.level().level;
    if level == Level::Off {
        let what = match &args.from {
            Some(file) => format!("nothing imported from {} or uploaded", file.display()),
            None => "nothing uploaded".to_string(),
        };
        ctx.ui.info(format!("telemetry level is 0 (OFF): {what}"));
        return Ok(exit::OK);
    }
    let dir = ctx.spool_dir()?;
    let batch = batch_limits(ctx)?;
    let limits = ctx.settings.limits()?;
    if args.dry_run {
        return dry_run(&args, ctx, level, batch, &dir);
    }

    let (url, _) = ctx.settings.endpoint(args.endpoint.clone())?;
    let endpoint = Endpoint::parse(&url)?;
    endpoint.check_secure(args.allow_insecure)?;
    let timeout = timeout(ctx, args.timeout)?;
    let (lease, lengthened) =
        upload::effective_lease(ctx.settings.duration(Key::Lease, None)?, timeout);
    if lengthened {
        ctx.ui.detail(format!(
            "telespool.lease is not longer than the timeout ({}); using a lease of {}",
            format_duration(timeout),
            format_duration(lease)
        ));
    }

    let mut spool = match &args.from {
        Some(file) => {
            // The whole file is checked before the spool is so much as created.
            let checked = import::check(file)?;
            let mut spool = Spool::open(&dir)?;
            import_file(ctx, &mut spool, file, &checked, level, &limits)?;
            Some(spool)
        }
        None => Spool::open_existing(&dir)?,
    };
    let Some(spool) = spool.as_mut() else {
        ctx.ui.info(format!(
            "nothing to upload (no spool at {} yet)",
            dir.display()
        ));
        return Ok(exit::OK);
    };
    if args.max_batches == Some(0) {
        ctx.ui.info("--max-batches 0: nothing sent");
        return Ok(exit::OK);
    }
    // Held until the run ends: a second upload (cron overlap) leaves at once.
    let Some(_lock) = FileLock::try_acquire(&dir, UPLOAD_LOCK_FILE)? else {
        ctx.ui.info(format!(
            "another upload is running on {}; leaving the work to it",
            dir.display()
        ));
        return Ok(exit::OK);
    };

    let env = |name: &str| ctx.settings.var(name);
    let transport = Transport::new(
        endpoint,
        &TransportOptions {
            timeout,
            ca_bundle: args.ca_bundle.as_deref(),
            env: &env,
        },
    )?;
    for note in &transport.notes {
        ctx.ui.detail(note);
    }
    let options = Options {
        level,
        batch,
        limits,
        lease,
        timeout,
        max_batches: args.max_batches,
        ignore_backoff: args.now,
    };

    let progress = progress_bar(ctx, spool)?;
    let ui = ctx.ui;
    let mut observe = |sent: &Sent| {
        let status = match sent.result {
            Ok(answer) => format!("HTTP {}", answer.status),
            Err(failure) => failure.message.clone(),
        };
        let line = format!(
            "POST {}: {status} in {} ms ({} event{}, {})",
            transport.endpoint().shown(),
            sent.elapsed.as_millis(),
            sent.events,
            if sent.events == 1 { "" } else { "s" },
            human_size(sent.bytes as u64)
        );
        match &progress {
            Some(bar) => {
                bar.inc(sent.settled as u64);
                if ui.verbose {
                    bar.println(format!("telespool: {line}"));
                }
            }
            None => ui.detail(line),
        }
    };
    let outcome = upload::run(spool, &transport, &options, &mut observe);
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    match outcome? {
        Run::NotDue { next_attempt } => {
            ctx.ui.info(format!(
                "the endpoint failed recently; the next attempt is due at {} (in {}); \
                 nothing sent (`telespool upload --now` tries at once)",
                format_ts(next_attempt),
                until(next_attempt)
            ));
            Ok(exit::TEMP_FAIL)
        }
        Run::Done(report) => finish(ctx, spool, &transport, &report),
    }
}

/// Tells how the run went, and picks the exit code: a configuration problem (69) over a
/// temporary failure (75) over rejected events (65).
fn finish(ctx: &Context, spool: &mut Spool, transport: &Transport, report: &Report) -> Result<i32> {
    let shown = transport.endpoint().shown();
    if report.batches == 0 {
        let in_flight = spool.summary(wire::now_millis())?.in_flight;
        if in_flight > 0 {
            ctx.ui.info(format!(
                "nothing to upload now: {in_flight} event{} claimed by another upload (perhaps \
                 one that died); they are sent once its claim runs out",
                plural(in_flight)
            ));
        } else {
            ctx.ui.info("nothing to upload");
        }
        return Ok(exit::OK);
    }
    if report.delivered > 0 || report.stop.is_none() {
        ctx.ui.info(format!(
            "uploaded {} event{} in {} request{} to {shown}",
            report.delivered,
            plural(report.delivered),
            report.requests,
            plural(report.requests)
        ));
    }
    if report.rejected > 0 {
        ctx.ui.error(format!(
            "the endpoint {shown} rejected {} event{} ({}); they are kept for review \
             (`telespool inspect`) and never sent again; `telespool purge --rejected` removes them",
            report.rejected,
            plural(report.rejected),
            report.rejection.as_deref().unwrap_or("no reason given")
        ));
    }
    match &report.stop {
        Some(Stop::Retry {
            reason,
            next_attempt,
            ..
        }) => {
            let queued = spool.summary(wire::now_millis())?.queued;
            Err(Error::temp_fail(format!(
                "{reason}; {} queued; the next attempt is due after {} \
                 (`telespool upload --now` ignores this)",
                events_stay(queued),
                format_ts(*next_attempt)
            )))
        }
        Some(Stop::Refused { reason }) => {
            let queued = spool.summary(wire::now_millis())?.queued;
            Err(Error::Unavailable(format!(
                "{reason} (the endpoint comes from --endpoint, NEMO_EVALUATOR_TELEMETRY_ENDPOINT \
                 or telespool.endpoint); {} queued",
                events_stay(queued)
            )))
        }
        None if report.rejected > 0 => Ok(exit::DATA),
        None => Ok(exit::OK),
    }
}

/// `--from FILE`: check the whole file, then import it in one transaction, once.
fn import_file(
    ctx: &Context,
    spool: &mut Spool,
    file: &Path,
    checked: &import::Checked,
    level: Level,
    limits: &crate::spool::Limits,
) -> Result<()> {
    if checked.events > limits.max_events {
        ctx.ui.warn(format!(
            "{} holds {} events, more than the spool keeps (telespool.max_events = {}); the \
             oldest will be dropped — raise TELESPOOL_MAX_EVENTS to keep them all",
            file.display(),
            checked.events,
            limits.max_events
        ));
    }
    match import::import(spool, file, checked, level, limits, wire::now_millis())? {
        Imported::New { events, dropped } => {
            ctx.ui.info(format!(
                "imported {events} event{} from {}{}",
                plural(events),
                file.display(),
                if dropped > 0 {
                    format!(" ({dropped} dropped at once by the spool's limits or age)")
                } else {
                    String::new()
                }
            ));
        }
        Imported::Already { at, events } => {
            ctx.ui.info(format!(
                "{} was already imported into this spool at {} ({events} event{}); nothing \
                 imported again",
                file.display(),
                format_ts(at),
                plural(events)
            ));
        }
    }
    Ok(())
}

/// `--dry-run`: the bodies an upload would send now, one per line on stdout; no lock,
/// no claim, nothing written.
fn dry_run(
    args: &UploadArgs,
    ctx: &Context,
    level: Level,
    batch: BatchLimits,
    dir: &Path,
) -> Result<i32> {
    let mut spool = Spool::open_existing(dir)?;
    if let Some(file) = &args.from {
        let checked = import::check(file)?;
        let before = match spool.as_mut() {
            Some(spool) => import::imported_before(spool, &checked)?,
            None => None,
        };
        match before {
            Some((at, _)) => ctx.ui.info(format!(
                "{} was already imported at {}; it would add nothing",
                file.display(),
                format_ts(at)
            )),
            None => ctx.ui.info(format!(
                "{} holds {} valid event{}; they would be imported, then sent (not shown below)",
                file.display(),
                checked.events,
                plural(checked.events)
            )),
        }
    }
    let Some(spool) = spool.as_mut() else {
        ctx.ui.info("nothing to upload");
        return Ok(exit::OK);
    };
    let now = wire::now_millis();
    if let Some(next) = spool.upload_state()?.next_attempt.filter(|&t| t > now) {
        if !args.now {
            ctx.ui.info(format!(
                "note: a real upload now would wait until {} (backoff after a failure)",
                format_ts(next)
            ));
        }
    }
    let plan = Plan {
        level,
        limits: batch,
        // Everything queued: `horizon()` would move the inbox into `events`, a write.
        horizon: i64::MAX,
    };
    let mut out = std::io::stdout().lock();
    let written =
        export::write_bodies(spool, &plan, args.max_batches, now, &mut out).and_then(|w| {
            out.flush()
                .map(|()| w)
                .map_err(|e| Error::io(e.to_string()))
        });
    match written {
        Ok(w) => {
            ctx.ui.info(format!(
                "dry run: {} event{} in {} request{} would be sent; nothing was sent or changed",
                w.ids.len(),
                plural(w.ids.len() as u64),
                w.bodies,
                plural(w.bodies)
            ));
            Ok(exit::OK)
        }
        Err(Error::Io(msg)) if msg.contains("Broken pipe") => Ok(exit::OK),
        Err(Error::Io(msg)) => Err(Error::io(format!("cannot write to stdout: {msg}"))),
        Err(e) => Err(e),
    }
}

/// `telespool.batch_events` and `telespool.batch_bytes`.
pub fn batch_limits(ctx: &Context) -> Result<BatchLimits> {
    Ok(BatchLimits {
        events: ctx.settings.count(Key::BatchEvents)? as usize,
        bytes: ctx.settings.count(Key::BatchBytes)? as usize,
    })
}

/// `--timeout` > TELESPOOL_TIMEOUT > telespool.timeout > 30 s, within the key's range.
fn timeout(ctx: &Context, flag: Option<Duration>) -> Result<Duration> {
    if let Some(t) = flag {
        Key::Timeout
            .parse(&format_duration(t))
            .map_err(|e| Error::usage(format!("--timeout: {e}")))?;
    }
    ctx.settings.duration(Key::Timeout, flag)
}

/// A progress bar on a terminal, for runs long enough to want one.
fn progress_bar(ctx: &Context, spool: &mut Spool) -> Result<Option<ProgressBar>> {
    if ctx.ui.quiet || !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    let summary = spool.summary(wire::now_millis())?;
    let total = summary.queued.saturating_sub(summary.in_flight);
    if total < 1000 {
        return Ok(None);
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "telespool: uploading [{bar:30}] {human_pos}/{human_len} events, {eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Ok(Some(bar))
}

/// `2m 30s` from now until `at`.
fn until(at: Millis) -> String {
    let secs = ((at - wire::now_millis()).max(0) + 999) / 1000;
    let (m, s) = (secs / 60, secs % 60);
    match (m / 60, m % 60) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m {s}s"),
        (h, m) => format!("{h}h {m}m"),
    }
}

/// `1 event stays` / `5 events stay`.
fn events_stay(n: u64) -> String {
    if n == 1 {
        "1 event stays".to_string()
    } else {
        format!("{n} events stay")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
