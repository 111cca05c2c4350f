//! The receiver behind `telespool listen` and `telespool run -- CMD` (SPEC §4): an HTTP
//! endpoint that takes exactly the request bodies NeMo Evaluator's own telemetry client
//! POSTs (SPEC §5) and spools their events, so an unmodified client captures its
//! telemetry by pointing `NEMO_EVALUATOR_TELEMETRY_ENDPOINT` here.
//!
//! ```text
//! HTTP body ─▶ wire::parse_body ─▶ level (skip or redact) ─▶ spool writer ─▶ 200 | 4xx | 503
//! ```
//!
//! Shape, and why:
//! - One thread accepts; each connection gets its own short-lived thread (at most
//!   [`MAX_CONNECTIONS`] at once), so a client that stalls holds up nobody else, and each
//!   must deliver its whole request within [`REQUEST_TIMEOUT`].
//! - One connection, one request: every answer says `Connection: close`. Upstream's
//!   client opens a fresh connection for each flush anyway.
//! - One writer thread owns the [`Spool`] (a SQLite connection, which is not `Sync`)
//!   and appends the events of every request waiting at that moment in one transaction
//!   (group commit): 64 clients posting at once cost a few fsyncs, not 64. A request
//!   is answered 200 only after the transaction holding its events has committed.
//! - The HTTP is a hundred lines over `httparse` rather than a server crate: tiny_http
//!   0.12 keeps no timeouts, gives up accepting for good after one `accept` error (a
//!   connection flood that runs out of file descriptors), and, to skip an unread body,
//!   allocates a buffer of whatever size `Content-Length` claims — one crafted header
//!   aborts the process.
//!
//! The telemetry level is read once, when the listener starts, and applies like at
//! `record`: level 0 stores nothing (and still answers 200, so clients do not retry),
//! level 1 stores every `model` as `redacted`.

mod http;
mod run;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::level::Level;
use crate::output::Ui;
use crate::session::SessionSource;
use crate::spool::{Limits, NewEvent, NewStream, Spool};
use crate::wire;

use http::{Answer, Conn, Head};
pub use run::{run_command, ENDPOINT_ENV, NOT_EXECUTABLE, NOT_FOUND, RUN_DRAIN};

/// The path upstream's client posts to; any path is accepted.
pub const EVENTS_PATH: &str = "/v1.1/events/json";
/// Where `listen` listens unless told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8765";
/// Largest request body accepted; larger ones get 413 before any of the body is read.
pub const MAX_BODY: usize = 1 << 20;
/// Time a client has to deliver one whole request, head and body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; beyond this a new one is answered 503 at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How often the accept loop looks at its stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Most requests, and events, that one spool transaction takes.
const MAX_GROUP_REQUESTS: usize = 64;
const MAX_GROUP_EVENTS: usize = 20_000;

/// A bound listening socket with its spool, ready to serve.
pub struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    dir: PathBuf,
    /// `None` at level 0, where nothing is ever written.
    spool: Option<Spool>,
    limits: Limits,
    shared: Arc<Shared>,
}

/// What every connection thread reads.
struct Shared {
    level: Level,
    ui: Ui,
    requests: AtomicU64,
    events: AtomicU64,
    refused: AtomicU64,
}

/// What a listener did, for a closing message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered.
    pub requests: u64,
    /// Events stored in the spool.
    pub events: u64,
    /// Requests answered with an error status.
    pub refused: u64,
    /// Connections still being served when the drain time ran out.
    pub unfinished: usize,
}

impl Listener {
    /// Opens the spool at `dir` (creating or migrating it now, so a spool that cannot be
    /// written fails here with its own exit code instead of a 503 for every client)
    /// and binds `addr`. A bind failure (address in use, not allowed) is exit 69.
    pub fn bind(
        addr: SocketAddr,
        dir: &Path,
        level: Level,
        limits: Limits,
        ui: Ui,
    ) -> Result<Listener> {
        let spool = if level == Level::Off {
            None
        } else {
            let mut spool = Spool::open(dir)?;
            spool.write(None, |_| Ok(()))?;
            Some(spool)
        };
        let socket = TcpListener::bind(addr)
            .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
        let addr = socket
            .local_addr()
            .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io(format!("cannot configure the listening socket: {e}")))?;
        Ok(Listener {
            socket,
            addr,
            dir: dir.to_path_buf(),
            spool,
            limits,
            shared: Arc::new(Shared {
                level,
                ui,
                requests: AtomicU64::new(0),
                events: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        })
    }

    /// The address actually bound (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give clients: `http://ADDR:PORT/v1.1/events/json`.
    pub fn url(&self) -> String {
        format!("http://{}{EVENTS_PATH}", self.addr)
    }

    pub fn spool_dir(&self) -> &Path {
        &self.dir
    }

    pub fn level(&self) -> Level {
        self.shared.level
    }

    /// Serves until `stop` is set, then stops accepting (new connections are refused
    /// by the kernel), lets the requests in flight finish for at most `drain`, and
    /// returns what was done. Never fails: per-request errors become HTTP answers, and
    /// trouble accepting (out of file descriptors) is retried.
    pub fn serve_until(self, stop: &AtomicBool, drain: Duration) -> Stats {
        let Listener {
            socket,
            spool,
            limits,
            shared,
            ..
        } = self;
        let (jobs, writer) = match spool {
            Some(spool) => {
                let (tx, rx) = mpsc::channel();
                let writer = thread::Builder::new()
                    .name("telespool-spool".into())
                    .spawn(move || write_loop(spool, rx, limits));
                match writer {
                    Ok(handle) => (Some(tx), Some(handle)),
                    Err(e) => {
                        shared
                            .ui
                            .error(format!("cannot start the spool writer: {e}; answering 503"));
                        (None, None)
                    }
                }
            }
            None => (None, None),
        };
        let open = Arc::new(OpenConnections::default());
        let mut quiet_until: Option<Instant> = None;
        let take = |(stream, peer), quiet_until: &mut Option<Instant>| {
            accept(stream, peer, &open, &shared, jobs.as_ref(), quiet_until)
        };
        while !stop.load(Ordering::SeqCst) {
            wait_readable(&socket, POLL_INTERVAL);
            match socket.accept() {
                Ok(connection) => take(connection, &mut quiet_until),
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    // Out of file descriptors or memory: say so now and then, back off,
                    // and keep going; connections finishing will free what is needed.
                    warn_sometimes(&shared.ui, &mut quiet_until, || {
                        format!("cannot accept connections: {e} (retrying)")
                    });
                    thread::sleep(POLL_INTERVAL);
                }
            }
        }
        // Connections the kernel completed before the stop are requests in flight as
        // far as their clients know: take them too, then close the socket.
        for _ in 0..MAX_CONNECTIONS {
            match socket.accept() {
                Ok(connection) => take(connection, &mut quiet_until),
                Err(_) => break,
            }
        }
        drop(socket);
        let unfinished = open.wait_idle(drain);
        drop(jobs);
        if unfinished == 0 {
            if let Some(writer) = writer {
                let _ = writer.join();
            }
        }
        Stats {
            requests: shared.requests.load(Ordering::SeqCst),
            events: shared.events.load(Ordering::SeqCst),
            refused: shared.refused.load(Ordering::SeqCst),
            unfinished,
        }
    }
}

/// Hands a new connection to a thread of its own, or refuses it when too many are open.
fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    open: &Arc<OpenConnections>,
    shared: &Arc<Shared>,
    jobs: Option<&Sender<Job>>,
    quiet_until: &mut Option<Instant>,
) {
    let Some(slot) = open.take(MAX_CONNECTIONS) else {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        shared
            .ui
            .detail(format!("{peer}: 503 too many connections"));
        http::refuse_now(
            stream,
            503,
            &format!("too many connections (over {MAX_CONNECTIONS}); retry later"),
        );
        return;
    };
    let shared_for_thread = Arc::clone(shared);
    let jobs = jobs.cloned();
    let spawned = thread::Builder::new()
        .name("telespool-conn".into())
        .spawn(move || {
            let _slot = slot;
            serve_connection(stream, peer, &shared_for_thread, jobs.as_ref());
        });
    if let Err(e) = spawned {
        // The closure, with the connection and its slot, is dropped: the client sees
        // the connection close and may retry.
        warn_sometimes(&shared.ui, quiet_until, || {
            format!("cannot start a thread for a connection: {e}")
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        WouldBlock | Interrupted | ConnectionAborted | ConnectionReset
    )
}

/// Prints a warning at most every ten seconds, so a flood cannot flood stderr.
fn warn_sometimes(ui: &Ui, quiet_until: &mut Option<Instant>, msg: impl FnOnce() -> String) {
    let now = Instant::now();
    if quiet_until.is_none_or(|t| now >= t) {
        ui.warn(msg());
        *quiet_until = Some(now + Duration::from_secs(10));
    }
}

/// Sleeps until the socket has a connection to accept, or `timeout` passes.
fn wait_readable(socket: &TcpListener, timeout: Duration) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(socket, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).ok();
    // An error (EINTR from a signal) just means looking at the stop flag sooner.
    let _ = poll(&mut fds, timeout.as_ref());
}

/// Reads one request, answers it, closes the connection.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    jobs: Option<&Sender<Job>>,
) {
    let started = Instant::now();
    let mut conn = Conn::new(stream, REQUEST_TIMEOUT);
    let (head, answer) = match conn.read_head() {
        Ok(None) => return,
        Ok(Some(head)) => {
            let answer = take_request(&mut conn, &head, shared, jobs).unwrap_or_else(|a| a);
            (Some(head), answer)
        }
        Err(answer) => (None, answer),
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if answer.status >= 400 {
        shared.refused.fetch_add(1, Ordering::SeqCst);
    }
    let request = head
        .as_ref()
        .map(|h| {
            format!(
                " {} {}",
                http::printable(&h.method),
                http::printable(&h.path)
            )
        })
        .unwrap_or_default();
    let line = format!(
        "{peer}{request}: {} {} ({} ms)",
        answer.status,
        answer.text,
        started.elapsed().as_millis()
    );
    if answer.status >= 500 {
        shared.ui.error(line);
    } else {
        shared.ui.detail(line);
    }
    let allow: &[(&str, &str)] = if answer.status == 405 {
        &[("Allow", "POST")]
    } else {
        &[]
    };
    conn.respond(answer.status, &answer.text, allow);
}

/// Checks the head, reads and validates the body, and has its events stored.
/// Checks that need no body come first, so a refused body is never read.
fn take_request(
    conn: &mut Conn,
    head: &Head,
    shared: &Shared,
    jobs: Option<&Sender<Job>>,
) -> Result<Answer, Answer> {
    if head.method != "POST" {
        return Err(Answer::new(
            405,
            format!(
                "only POST is accepted: a telemetry request body to {EVENTS_PATH} (or any path)"
            ),
        ));
    }
    if head.get("Transfer-Encoding").is_some() {
        return Err(Answer::new(
            411,
            "send the body with Content-Length (Transfer-Encoding is not accepted)",
        ));
    }
    match head.get("Content-Type") {
        Some(ct) if is_json(&ct) => {}
        Some(ct) => {
            return Err(Answer::new(
                415,
                format!(
                    "Content-Type must be application/json, not `{}`",
                    http::printable(&ct)
                ),
            ))
        }
        None => {
            return Err(Answer::new(
                415,
                "Content-Type must be application/json (none given)",
            ))
        }
    }
    let len = head
        .content_length()?
        .ok_or_else(|| Answer::new(411, "Content-Length is required"))?;
    if len > MAX_BODY {
        return Err(Answer::new(
            413,
            format!("body over the limit of {} KiB", MAX_BODY >> 10),
        ));
    }
    if head.expects_continue() {
        conn.send_continue()?;
    }
    let body = conn.read_body(len)?;
    let parsed = wire::parse_body(&body).map_err(|e| Answer::new(400, e))?;
    let count = parsed.events.len();
    let plural = if count == 1 { "" } else { "s" };
    let level = shared.level;
    if level == Level::Off {
        return Ok(Answer::new(
            200,
            format!("telemetry level is 0 (OFF): {count} event{plural} accepted, none stored"),
        ));
    }
    let events = parsed
        .events
        .into_iter()
        .map(|(ts, mut event)| {
            if !level.keeps_model() {
                event.redact_model();
            }
            NewEvent { event, ts, level }
        })
        .collect();
    let stream = NewStream {
        session: SessionSource::Given(parsed.session_id),
        client_ver: parsed.client_ver,
        schema_ver: parsed.schema_ver,
    };
    let writer_gone = || Answer::new(503, "the spool writer has stopped");
    let jobs = jobs.ok_or_else(writer_gone)?;
    let (reply, answer) = mpsc::sync_channel(1);
    jobs.send(Job {
        group: (stream, events),
        reply,
    })
    .map_err(|_| writer_gone())?;
    match answer.recv() {
        Ok(Ok(())) => {
            shared.events.fetch_add(count as u64, Ordering::SeqCst);
            Ok(Answer::new(200, format!("stored {count} event{plural}")))
        }
        Ok(Err(reason)) => Err(Answer::new(503, reason)),
        Err(_) => Err(writer_gone()),
    }
}

/// `application/json`, in any case, with or without parameters such as a charset.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// One request's events on their way to the spool, and where to say how it went.
struct Job {
    group: (NewStream, Vec<NewEvent>),
    reply: SyncSender<std::result::Result<(), String>>,
}

/// Appends what the connection threads hand over: every request waiting when the
/// previous transaction ended goes into the next one, all or nothing, and each is told
/// the outcome only after the commit.
fn write_loop(mut spool: Spool, jobs: Receiver<Job>, limits: Limits) {
    while let Ok(first) = jobs.recv() {
        let mut events = first.group.1.len();
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
            match jobs.try_recv() {
                Ok(job) => {
                    events += job.group.1.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let (groups, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|job| (job.group, job.reply)).unzip();
        let result = spool
            .append(&groups, &limits)
            .map(|_| ())
            .map_err(|e| e.to_string());
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

/// Counts the connections being served, for the cap and for draining at the end.
#[derive(Default)]
struct OpenConnections {
    count: Mutex<usize>,
    changed: Condvar,
}

/// One open connection; dropping it frees the place.
struct Slot(Arc<OpenConnections>);

impl OpenConnections {
    fn take(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// Waits until no connection is open or `limit` has passed; returns how many are
    /// still open.
    fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            count = self
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *count
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json(" application/json ;charset=UTF-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonl"));
        assert!(!is_json(""));
    }

    #[test]
    fn connection_slots_cap_and_drain() {
        let open = Arc::new(OpenConnections::default());
        let a = open.take(2).unwrap();
        let _b = open.take(2).unwrap();
        assert!(open.take(2).is_none());
        drop(a);
        assert!(open.take(2).is_some());
        assert_eq!(open.wait_idle(Duration::from_millis(10)), 1);
    }
}
