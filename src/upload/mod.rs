//! Sending queued events to the endpoint (SPEC §5): claim a window of batches under the
//! spool lock, send each outside it, settle the outcomes under the lock again.
//!
//! The run loop knows no SQL and no HTTP: it talks to the spool through
//! [`Spool::settle_and_claim`], to the network through [`transport::Transport`], and asks
//! [`policy::verdict`] what each answer means. `export` and `upload --dry-run` use the
//! same batches ([`Spool::batches`]) and the same [`body`] function, so a file or a
//! preview holds exactly what an upload would send.

pub mod export;
pub mod import;
pub mod policy;
pub mod transport;

use std::ops::Range;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::Result;
use crate::level::Level;
use crate::spool::{
    Backoff, Batch, BatchLimits, Claim, Cursor, LastUpload, Limits, Plan, RunRecord, Settlement,
    Spool,
};
use crate::wire::{self, Millis};

use policy::Verdict;
use transport::{Answer, Failure, Transport};

/// The first window claims this many batches; each window that goes through doubles it.
const FIRST_WINDOW: usize = 4;
/// The most batches claimed at once: enough that a large spool costs one commit per few
/// thousand events, few enough that memory stays small and a failure settles promptly.
pub const MAX_WINDOW: usize = 32;

/// The request body of the events `part` of `batch` (all of them, or a half after a
/// 413), exactly as it leaves at `sent_ts`.
pub fn body(batch: &Batch, part: Range<usize>, sent_ts: Millis) -> Vec<u8> {
    wire::body(
        &batch.session_id,
        &batch.client_ver,
        &batch.schema_ver,
        sent_ts,
        &batch.wire[part],
    )
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The level in force here and now.
    pub level: Level,
    pub batch: BatchLimits,
    /// The spool's bounds, applied in every transaction of the run.
    pub limits: Limits,
    /// How long a claim lasts; longer than `timeout`.
    pub lease: Duration,
    /// The transport's timeout for one request.
    pub timeout: Duration,
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
    /// Send even before the backoff of earlier failures has run out (`--now`).
    pub ignore_backoff: bool,
}

/// The lease to use: the configured one, unless it would end before a request can time
/// out; then the timeout plus a margin. The flag says whether it was lengthened.
pub fn effective_lease(lease: Duration, timeout: Duration) -> (Duration, bool) {
    if lease > timeout {
        (lease, false)
    } else {
        (timeout + Duration::from_secs(10), true)
    }
}

/// One request, as `-v` and the progress bar see it.
pub struct Sent<'a> {
    pub result: &'a std::result::Result<Answer, Failure>,
    pub events: usize,
    pub bytes: usize,
    pub elapsed: Duration,
    /// The events now settled for good (delivered or rejected) by this request.
    pub settled: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// An earlier failure asked for a pause that has not run out; nothing was sent.
    NotDue {
        next_attempt: Millis,
    },
    Done(Report),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Batches taken from the spool and attempted.
    pub batches: u64,
    /// HTTP requests made (a 413 split makes more than one per batch).
    pub requests: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub rejected: u64,
    /// Why the first rejected events were rejected.
    pub rejection: Option<String>,
    /// Why the run stopped early, if it did.
    pub stop: Option<Stop>,
}

/// Why a run stopped before the spool was drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A temporary failure: the events stay, the next run waits until `next_attempt`
    /// (at least `retry_after`, if the endpoint asked for that).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        next_attempt: Millis,
    },
    /// A configuration problem: the events stay, a person has to act.
    Refused { reason: String },
}

/// Runs one upload: sends every batch queued when it starts (up to `max_batches`),
/// settling as it goes, and records the outcome for `inspect` and the next run. The
/// caller holds the upload lock.
///
/// The spool work and the network overlap: while one thread sends a window of batches,
/// this one settles the window before and claims the window after, each in one short
/// transaction. `observe` is called from the sending thread.
pub fn run(
    spool: &mut Spool,
    transport: &Transport,
    options: &Options,
    observe: &mut (dyn FnMut(&Sent) + Send),
) -> Result<Run> {
    let state = spool.upload_state()?;
    let plan = Plan {
        level: options.level,
        limits: options.batch,
        horizon: spool.horizon()?,
    };
    if let Some(next) = state.next_attempt {
        if next > wire::now_millis() && !options.ignore_backoff {
            // Waiting matters only if there is something to send.
            let now = wire::now_millis();
            if spool
                .batches(&plan, &mut Cursor::start(), now, 1)?
                .is_empty()
            {
                return Ok(Run::Done(Report::default()));
            }
            return Ok(Run::NotDue { next_attempt: next });
        }
    }
    let timeout_ms = options.timeout.as_millis() as i64;

    let (mut settlement, mut report) = std::thread::scope(|scope| {
        let (dispatch, windows) = mpsc::sync_channel::<Vec<Batch>>(1);
        let (finished, results) = mpsc::channel::<Window>();
        scope.spawn(move || {
            let mut sender = Uploader {
                transport,
                report: Report::default(),
                pending: Settlement::default(),
                observe,
            };
            for batches in windows {
                if finished.send(sender.window(batches, timeout_ms)).is_err() {
                    break;
                }
            }
        });
        claim_ahead(spool, options, plan, &dispatch, &results)
    })?;

    if report.batches > 0 {
        settlement.run = Some(record(&report, transport, &state));
    }
    if let (
        Some(Stop::Retry { next_attempt, .. }),
        Some(RunRecord {
            backoff: Backoff::Set {
                next_attempt: at, ..
            },
            ..
        }),
    ) = (&mut report.stop, &settlement.run)
    {
        *next_attempt = *at;
    }
    spool.settle(&settlement, &options.limits)?;
    Ok(Run::Done(report))
}

/// The spool side of a run: claims windows, one ahead of the sender, and settles what
/// comes back in the transaction that claims the next. Returns what is left to settle,
/// and the run's report.
fn claim_ahead(
    spool: &mut Spool,
    options: &Options,
    plan: Plan,
    dispatch: &mpsc::SyncSender<Vec<Batch>>,
    results: &mpsc::Receiver<Window>,
) -> Result<(Settlement, Report)> {
    let lease_ms = options.lease.as_millis() as i64;
    let max = options.max_batches.unwrap_or(u64::MAX);
    let mut pending = Settlement::default();
    let mut report = Report::default();
    let mut cursor = Cursor::start();
    let mut window = FIRST_WINDOW;
    let mut last_lease = 0;
    let mut claimed = 0u64;
    let mut drained = false;
    let mut ahead: Option<Vec<Batch>> = None;
    let mut sending = false;
    loop {
        if ahead.is_none() && report.stop.is_none() && !drained && claimed < max {
            let want = (window as u64).min(max - claimed) as usize;
            let now = wire::now_millis();
            // Each claim's lease time is its own (see `Span`).
            last_lease = (now + lease_ms).max(last_lease + 1);
            let claim = Claim {
                plan,
                now,
                lease_until: last_lease,
                max: want,
            };
            let settled = std::mem::take(&mut pending);
            let batches =
                spool.settle_and_claim(&settled, Some(&claim), &mut cursor, &options.limits)?;
            claimed += batches.len() as u64;
            drained = batches.len() < want;
            if !batches.is_empty() {
                ahead = Some(batches);
            }
            window = (window * 2).min(MAX_WINDOW);
        }
        if !sending {
            match ahead.take() {
                Some(batches) => {
                    if dispatch.send(batches).is_err() {
                        break; // the sender is gone; cannot happen short of a panic
                    }
                    sending = true;
                    continue;
                }
                None => break,
            }
        }
        let Ok(done) = results.recv() else {
            break;
        };
        sending = false;
        pending.merge(done.settlement);
        report.merge(done.report);
        if let Some((at, unsent)) = done.resume {
            // Claims ran out before their batches could be sent: claim those again,
            // in smaller windows.
            cursor = at;
            drained = false;
            claimed -= unsent;
            window = (window / 4).max(1);
        }
        if report.stop.is_some() {
            if let Some(batches) = ahead.take() {
                for batch in &batches {
                    pending.streams.push(batch.stream);
                    pending.released.push(batch.span(&batch.events));
                }
            }
        }
    }
    Ok((pending, report))
}

/// What the sender made of one window.
struct Window {
    settlement: Settlement,
    report: Report,
    /// Where to claim again, and how many batches were handed back unsent because their
    /// claim would have run out during the request.
    resume: Option<(Cursor, u64)>,
}

impl Settlement {
    fn merge(&mut self, other: Settlement) {
        self.delivered.extend(other.delivered);
        self.rejected.extend(other.rejected);
        self.released.extend(other.released);
        self.streams.extend(other.streams);
    }
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.batches += other.batches;
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.delivered += other.delivered;
        self.rejected += other.rejected;
        if self.rejection.is_none() {
            self.rejection = other.rejection;
        }
        if self.stop.is_none() {
            self.stop = other.stop;
        }
    }
}

/// What `inspect` shows of this run, and the backoff it leaves.
fn record(report: &Report, transport: &Transport, state: &crate::spool::UploadState) -> RunRecord {
    let now = wire::now_millis();
    let sent = format!(
        "{} event{} delivered in {} request{}",
        report.delivered,
        plural(report.delivered),
        report.requests,
        plural(report.requests),
    );
    let (result, detail, backoff) = match &report.stop {
        Some(Stop::Retry {
            reason,
            retry_after,
            ..
        }) => {
            let failures = state.failures.saturating_add(1);
            let wait = policy::backoff(failures).max(retry_after.unwrap_or_default());
            let next_attempt = now + wait.as_millis() as i64;
            (
                "retry",
                format!("{reason}; {sent} before that"),
                Backoff::Set {
                    next_attempt,
                    failures,
                },
            )
        }
        Some(Stop::Refused { reason }) => (
            "refused",
            format!("{reason}; {sent} before that"),
            Backoff::Keep,
        ),
        None if report.rejected > 0 => (
            "rejected",
            format!(
                "{} event{} rejected ({}); {sent} to {}",
                report.rejected,
                plural(report.rejected),
                report.rejection.as_deref().unwrap_or(""),
                transport.endpoint().shown()
            ),
            Backoff::Clear,
        ),
        None => (
            "ok",
            format!("{sent} to {}", transport.endpoint().shown()),
            Backoff::Clear,
        ),
    };
    RunRecord {
        last: LastUpload {
            at: now,
            result: result.to_string(),
            detail,
        },
        backoff,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The state of a run between windows.
struct Uploader<'a, 'o> {
    transport: &'a Transport,
    report: Report,
    /// Outcomes not yet written to the spool.
    pending: Settlement,
    observe: &'a mut (dyn FnMut(&Sent) + Send + 'o),
}

impl Uploader<'_, '_> {
    /// Sends a window of batches in order, stopping at the first failure.
    fn window(&mut self, batches: Vec<Batch>, timeout_ms: i64) -> Window {
        let mut resume = None;
        for (i, batch) in batches.iter().enumerate() {
            let lease_until = batch.lease_until.unwrap_or(Millis::MAX);
            if i > 0 && wire::now_millis() + timeout_ms >= lease_until {
                // A request started now could outlive the claim: hand the rest back to
                // be claimed afresh.
                self.release_all(&batches[i..]);
                resume = Some((Cursor::before(batch), (batches.len() - i) as u64));
                break;
            }
            self.pending.streams.push(batch.stream);
            self.report.batches += 1;
            if let Err(stop) = self.deliver(batch, 0..batch.events.len()) {
                self.release_all(&batches[i + 1..]);
                self.report.stop = Some(stop);
                break;
            }
        }
        Window {
            settlement: std::mem::take(&mut self.pending),
            report: std::mem::take(&mut self.report),
            resume,
        }
    }

    /// Sends the events `part` of `batch`, splitting on 413; on a stop, whatever of them
    /// was not settled is released.
    fn deliver(&mut self, batch: &Batch, part: Range<usize>) -> std::result::Result<(), Stop> {
        let n = part.len();
        let body = body(batch, part.clone(), wire::now_millis());
        let started = Instant::now();
        let result = self.transport.post(&body);
        let elapsed = started.elapsed();
        let bytes = body.len();
        drop(body);
        self.report.requests += 1;
        self.report.bytes += bytes as u64;
        let verdict = policy::verdict(&result, SystemTime::now());
        let settled = match &verdict {
            Verdict::Delivered | Verdict::Rejected { .. } => n,
            Verdict::Split if n == 1 => 1,
            _ => 0,
        };
        (self.observe)(&Sent {
            result: &result,
            events: n,
            bytes,
            elapsed,
            settled,
        });
        let shown = self.transport.endpoint().shown();
        let what = |reason: &str| match &result {
            Ok(_) => format!("the endpoint {shown} answered {reason}"),
            Err(_) => format!("cannot reach {shown}: {reason}"),
        };
        match verdict {
            Verdict::Delivered => {
                self.pending.delivered.push(batch.span(&batch.events[part]));
                self.report.delivered += n as u64;
                Ok(())
            }
            Verdict::Rejected { reason } => {
                self.reject(batch, part, reason);
                Ok(())
            }
            Verdict::Split if n > 1 => {
                let mid = part.start + n / 2;
                if let Err(stop) = self.deliver(batch, part.start..mid) {
                    self.release(batch, mid..part.end);
                    return Err(stop);
                }
                self.deliver(batch, mid..part.end)
            }
            Verdict::Split => {
                self.reject(
                    batch,
                    part,
                    "HTTP 413 Content Too Large for a single event".to_string(),
                );
                Ok(())
            }
            Verdict::Retry {
                reason,
                retry_after,
            } => {
                self.release(batch, part);
                let mut reason = what(&reason);
                if let Some(wait) = retry_after {
                    reason.push_str(&format!(" asking to wait {} s", wait.as_secs()));
                }
                Err(Stop::Retry {
                    reason,
                    retry_after,
                    next_attempt: 0,
                })
            }
            Verdict::Refused { reason } => {
                self.release(batch, part);
                Err(Stop::Refused {
                    reason: what(&reason),
                })
            }
        }
    }

    fn reject(&mut self, batch: &Batch, part: Range<usize>, reason: String) {
        self.report.rejected += part.len() as u64;
        self.pending.rejected.push(batch.span(&batch.events[part]));
        self.report.rejection.get_or_insert(reason);
    }

    /// Hands `part` of `batch` back unsent.
    fn release(&mut self, batch: &Batch, part: Range<usize>) {
        if !part.is_empty() {
            self.pending.released.push(batch.span(&batch.events[part]));
        }
    }

    fn release_all(&mut self, batches: &[Batch]) {
        for batch in batches {
            self.pending.streams.push(batch.stream);
            self.release(batch, 0..batch.events.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_outlasts_the_timeout() {
        let s = Duration::from_secs;
        assert_eq!(effective_lease(s(60), s(30)), (s(60), false));
        assert_eq!(effective_lease(s(3), s(2)), (s(3), false));
        assert_eq!(effective_lease(s(30), s(30)), (s(40), true));
        assert_eq!(effective_lease(s(5), s(30)), (s(40), true));
    }
}
