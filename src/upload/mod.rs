//! Sending queued events to the endpoint (SPEC §5): claim batches under the spool lock,
//! send each outside it, settle the outcomes under the lock again — as they come, so that
//! a crash re-sends only the few batches acknowledged since the last commit.
//!
//! Two threads share a run. The sender posts claimed batches one request at a time and
//! reports each outcome on a channel the moment it is known. The main thread commits
//! whatever outcomes have accumulated in one transaction (a group commit: one when the
//! spool is idle, several when a commit had to wait for the lock), and in that same
//! transaction claims as many batches as were finished, so a queue of up to
//! [`MAX_WINDOW`] claimed batches always waits ahead of the sender.
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
use std::sync::{mpsc, Condvar, Mutex, PoisonError};
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

/// A run first keeps this many batches claimed ahead of the sender; each claim doubles it.
const FIRST_WINDOW: usize = 4;
/// The most batches claimed ahead of the sender (and read at once by `export`): enough
/// to keep it busy, few enough that memory stays small and a failure settles promptly.
pub const MAX_WINDOW: usize = 32;
/// The most batch outcomes the sender may have reported that are not yet committed to the
/// spool: the sender waits before its next request while this many are pending. It bounds
/// what a `kill -9` (or a power cut) of an upload can cost whatever holds the lock up: at
/// most this many acknowledged batches, plus the one whose answer was on its way, are
/// sent again by the next run. Against a real endpoint a request takes far longer than a
/// commit and it is one or two; against a loopback collector that answers in a tenth of a
/// millisecond, a commit that waits for the lock or a checkpoint sees it fill up. Measured
/// on a million-event upload to such a collector: 32 cost ~1% against committing a window
/// at a time, 16 ~3–8%, 8 ~10–20% (the sender then waits whenever a commit takes longer
/// than a few requests).
pub const MAX_UNSETTLED: usize = 16;

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
/// The spool work and the network overlap: while one thread sends batches, one request at
/// a time, this one commits their outcomes as they come and keeps a queue of claimed
/// batches ahead of the sender, in short transactions that each settle and claim.
/// `observe` is called from the sending thread.
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
    let credit = Credit::default();

    let (mut settlement, mut report) = std::thread::scope(|scope| {
        let (dispatch, queue) = mpsc::channel::<Batch>();
        let (tell, news) = mpsc::channel::<News>();
        let credit = &credit;
        scope.spawn(move || {
            let mut sender = Uploader {
                transport,
                report: Report::default(),
                pending: Settlement::default(),
                observe,
                tell,
                credit,
                stopped: false,
            };
            for batch in queue {
                if sender.batch(batch, timeout_ms).is_err() {
                    break; // the spool side is gone
                }
            }
        });
        // However the spool side ends, the sender must not wait for credit forever.
        let _close = CloseOnDrop(credit);
        claim_ahead(spool, options, plan, &dispatch, &news, credit)
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

/// The spool side of a run: keeps up to a window of claimed batches queued ahead of the
/// sender, and commits what the sender reports as it comes: each transaction settles
/// every outcome that arrived since the last one (a group commit) and claims as many
/// batches as that freed in the queue. Returns what is left to settle, and the report.
fn claim_ahead(
    spool: &mut Spool,
    options: &Options,
    plan: Plan,
    dispatch: &mpsc::Sender<Batch>,
    news: &mpsc::Receiver<News>,
    credit: &Credit,
) -> Result<(Settlement, Report)> {
    let lease_ms = options.lease.as_millis() as i64;
    let max = options.max_batches.unwrap_or(u64::MAX);
    let mut pending = Settlement::default();
    // Outcomes in `pending`, to give back as credit once they are committed.
    let mut outcomes = 0;
    let mut report = Report::default();
    let mut cursor = Cursor::start();
    let mut window = FIRST_WINDOW;
    let mut last_lease = 0;
    let mut claimed = 0u64;
    let mut drained = false;
    // Batches handed to the sender that it has not finished with.
    let mut out = 0usize;
    loop {
        let room = window.saturating_sub(out);
        let can_claim = report.stop.is_none() && !drained && claimed < max && room > 0;
        let claim = can_claim.then(|| {
            let now = wire::now_millis();
            // Each claim's lease time is its own (see `Span`).
            last_lease = (now + lease_ms).max(last_lease + 1);
            Claim {
                plan,
                now,
                lease_until: last_lease,
                max: (room as u64).min(max - claimed) as usize,
            }
        });
        if claim.is_some() || !pending.is_empty() {
            let settled = std::mem::take(&mut pending);
            let batches =
                spool.settle_and_claim(&settled, claim.as_ref(), &mut cursor, &options.limits)?;
            credit.give_back(std::mem::take(&mut outcomes));
            if let Some(claim) = &claim {
                claimed += batches.len() as u64;
                drained = batches.len() < claim.max;
                window = (window * 2).min(MAX_WINDOW);
                for batch in batches {
                    if dispatch.send(batch).is_err() {
                        break; // the sender is gone; cannot happen short of a panic
                    }
                    out += 1;
                }
            }
        }
        if out == 0 {
            break;
        }
        // Wait for news from the sender, then take all it has said since.
        let Ok(first) = news.recv() else {
            break;
        };
        let mut next = Some(first);
        while let Some(item) = next {
            pending.merge(item.settlement);
            report.merge(item.report);
            outcomes += 1;
            out -= 1;
            if let Some(at) = item.resume {
                // The claim ran out before the batch could be sent: claim it again, with
                // fewer batches ahead. The cursor may have moved past it meanwhile.
                cursor = cursor.min(at);
                drained = false;
                claimed -= 1;
                window = (window / 4).max(1);
            }
            next = news.try_recv().ok();
        }
    }
    credit.give_back(outcomes);
    Ok((pending, report))
}

/// What the sender tells the spool side about one batch it has finished with: sent
/// (delivered, rejected, or kept after a failure), or handed back unsent.
struct News {
    settlement: Settlement,
    report: Report,
    /// Where to claim again, if the batch was handed back because its claim would have
    /// run out during the request.
    resume: Option<Cursor>,
}

/// How many outcomes the sender has reported that are not yet committed, shared by the
/// two threads of a run; see [`MAX_UNSETTLED`].
#[derive(Default)]
struct Credit {
    /// (outcomes not yet committed, whether the spool side has finished)
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Credit {
    /// Waits until another outcome may be reported; false if the spool side has finished,
    /// so nothing more will be committed.
    fn wait(&self) -> bool {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let guard = self
            .changed
            .wait_while(guard, |(unsettled, closed)| {
                *unsettled >= MAX_UNSETTLED && !*closed
            })
            .unwrap_or_else(PoisonError::into_inner);
        !guard.1
    }

    fn taken(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.0 = state.0.saturating_sub(n);
            self.changed.notify_all();
        }
    }
}

/// Marks the spool side finished when dropped, error or not.
struct CloseOnDrop<'a>(&'a Credit);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1 = true;
        self.0.changed.notify_all();
    }
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

/// The sending side of a run.
struct Uploader<'a, 'o> {
    transport: &'a Transport,
    /// What happened since the last news.
    report: Report,
    /// Outcomes not yet told to the spool side.
    pending: Settlement,
    observe: &'a mut (dyn FnMut(&Sent) + Send + 'o),
    tell: mpsc::Sender<News>,
    credit: &'a Credit,
    /// A request failed in a way that ends the run: send nothing more.
    stopped: bool,
}

/// The spool side has gone away; nothing the sender says will be committed.
struct Gone;

impl Uploader<'_, '_> {
    /// Sends one batch and tells the spool side what became of it; after a failure that
    /// stopped the run, hands it back unsent.
    fn batch(&mut self, batch: Batch, timeout_ms: i64) -> std::result::Result<(), Gone> {
        let mut resume = None;
        if self.stopped {
            self.release_all(std::slice::from_ref(&batch));
        } else {
            // Wait until the spool side has committed enough of what it was told.
            if !self.credit.wait() {
                return Err(Gone);
            }
            let lease_until = batch.lease_until.unwrap_or(Millis::MAX);
            if wire::now_millis() + timeout_ms >= lease_until {
                // A request started now could outlive the claim, and the spool side could
                // claim the events again meanwhile: hand the batch back to be claimed afresh.
                // (The lease outlasts the timeout by at least a second, so a batch claimed
                // while the sender is idle, as happens once the window is down to one,
                // always goes: a run never stalls here.)
                self.release_all(std::slice::from_ref(&batch));
                resume = Some(Cursor::before(&batch));
            } else {
                self.pending.streams.push(batch.stream);
                self.report.batches += 1;
                if let Err(stop) = self.deliver(&batch, 0..batch.events.len()) {
                    self.report.stop = Some(stop);
                    self.stopped = true;
                }
            }
        }
        // Free the batch's memory here, before telling, so it is never in two places.
        drop(batch);
        self.credit.taken();
        let news = News {
            settlement: std::mem::take(&mut self.pending),
            report: std::mem::take(&mut self.report),
            resume,
        };
        self.tell.send(news).map_err(|_| Gone)
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
