//! A scriptable stand-in for the telemetry endpoint, for tests that run `telespool upload`.
//!
//! It speaks just enough HTTP/1.1 by hand (keep-alive, `Content-Length` and chunked bodies,
//! `Expect: 100-continue`) because the faults the tests need — hanging up without an answer,
//! a TCP reset, a stall longer than the client's timeout — cannot be produced through a
//! server library's API. Each connection gets its own thread, so a stalled answer never holds
//! up another client. Every request is recorded together with what was done with it, and
//! every POST is checked against the wire format of SPEC §5; the collector answers as
//! scripted whether or not the request was valid, so a test sees exactly what the client did.
//!
//! The HTTPS flavour (`Collector::start_https`) lives in `tls.rs`.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use envelope::validate_envelope;
use http::{find_header, read_body, read_head, write_response, Head};

mod envelope;
mod http;

/// Path of the upstream endpoint; `Collector::url` points at it.
pub const EVENTS_PATH: &str = "/v1.1/events/json";

// ---------------------------------------------------------------------------------------
// Scripting
// ---------------------------------------------------------------------------------------

/// What the collector does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Wait `delay`, then answer `status` with the extra `headers` and `body`.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Wait `after`, then close the connection without answering: with a TCP RST when
    /// `reset`, else with an orderly FIN.
    Hangup { after: Duration, reset: bool },
}

impl Reply {
    /// Answer `code` at once, with an empty body.
    pub fn status(code: u16) -> Reply {
        Reply::Answer {
            status: code,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Answer 200 at once.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// A redirect (`code` 301/302/307/308) to `location`.
    pub fn redirect(code: u16, location: &str) -> Reply {
        Reply::status(code).header("Location", location)
    }

    /// Close the connection at once without answering (FIN).
    pub fn close() -> Reply {
        Reply::Hangup {
            after: Duration::ZERO,
            reset: false,
        }
    }

    /// Reset the connection at once without answering (RST).
    pub fn reset() -> Reply {
        Reply::Hangup {
            after: Duration::ZERO,
            reset: true,
        }
    }

    /// A stalled endpoint: say nothing for `time`, then close without answering.
    pub fn stall(time: Duration) -> Reply {
        Reply::Hangup {
            after: time,
            reset: false,
        }
    }

    /// Adds a response header (ignored by a hang-up).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Answer { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Sets the response body (ignored by a hang-up).
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Reply {
        if let Reply::Answer { body, .. } = &mut self {
            *body = bytes.into();
        }
        self
    }

    /// Waits `time` before answering or hanging up.
    pub fn delay(mut self, time: Duration) -> Reply {
        match &mut self {
            Reply::Answer { delay, .. } => *delay = time,
            Reply::Hangup { after, .. } => *after = time,
        }
        self
    }
}

/// Random failures for chaos tests, reproducible from `seed` for a given order of requests.
#[derive(Clone, Debug)]
pub struct Chaos {
    pub seed: u64,
    /// Chance, 0.0..=1.0, that a request gets one of `faults` instead of the default reply.
    pub probability: f64,
    /// Faults to pick from, evenly.
    pub faults: Vec<Reply>,
}

impl Chaos {
    /// Fails each request with `probability`, evenly by a 500, a stall of `stall` (make it
    /// longer than the client's timeout) and a reset.
    pub fn new(seed: u64, probability: f64, stall: Duration) -> Chaos {
        Chaos {
            seed,
            probability,
            faults: vec![Reply::status(500), Reply::stall(stall), Reply::reset()],
        }
    }
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

/// What finally happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting out a delay or stall.
    Pending,
    /// This status was written to the client.
    Answered(u16),
    /// The collector closed or reset the connection without answering, as scripted.
    HungUp,
    /// The client went away before the (delayed) answer could be given.
    ClientGone,
}

/// One request as the collector received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Headers in the order and spelling the client sent them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The reply that was planned for it.
    pub reply: Reply,
    pub outcome: Outcome,
    /// Why the request breaks SPEC §5, for a POST that does.
    pub invalid: Option<String>,
}

impl Received {
    /// The first header of this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The status the client was given, if it was given one.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Answered(status) => Some(status),
            _ => None,
        }
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Number of entries in the body's `events` list (0 if there is none).
    pub fn event_count(&self) -> usize {
        self.json().as_ref().map_or(0, event_count)
    }
}

/// An event the collector acknowledged with a 2xx, with the envelope fields that identify it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveredEvent {
    pub session_id: String,
    pub client_ver: String,
    pub ts: String,
    pub name: String,
    pub parameters: Value,
}

// ---------------------------------------------------------------------------------------
// The collector
// ---------------------------------------------------------------------------------------

/// Something a connection can be served over: a plain TCP stream or a TLS stream on one.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// Turns an accepted TCP stream into the stream to serve HTTP on (e.g. by a TLS handshake).
pub type Accept = Arc<dyn Fn(TcpStream) -> io::Result<Box<dyn Conn>> + Send + Sync>;

/// A running collector; the server stops when it is dropped.
pub struct Collector {
    shared: Arc<Shared>,
    addr: SocketAddr,
    scheme: &'static str,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a request arrives or settles, for the `wait_*` helpers.
    changed: Condvar,
    stop: AtomicBool,
}

struct State {
    requests: Vec<Received>,
    queue: VecDeque<Reply>,
    default: Reply,
    max_body: Option<usize>,
    max_events: Option<usize>,
    /// The chaos settings and the current state of their random generator.
    chaos: Option<(Chaos, u64)>,
    connections: usize,
    /// Malformed HTTP, which is no request that could be recorded.
    protocol_errors: Vec<String>,
    /// A handle on every open connection, so dropping the collector can shut them down.
    open: HashMap<u64, TcpStream>,
}

impl Collector {
    /// Serves plain HTTP on 127.0.0.1 at a free port, answering 200 to everything.
    pub fn start() -> Collector {
        Collector::start_with("http", Arc::new(|tcp| Ok(Box::new(tcp) as Box<dyn Conn>)))
    }

    /// Serves on 127.0.0.1 at a free port, over whatever `accept` makes of each connection;
    /// `scheme` is what `url` reports. Used by `start_https`.
    pub fn start_with(scheme: &'static str, accept: Accept) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the collector");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                queue: VecDeque::new(),
                default: Reply::ok(),
                max_body: None,
                max_events: None,
                chaos: None,
                connections: 0,
                protocol_errors: Vec::new(),
                open: HashMap::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let acceptor = thread::Builder::new()
            .name(format!("collector-{}", addr.port()))
            .spawn({
                let shared = shared.clone();
                move || accept_loop(&shared, &listener, &accept)
            })
            .expect("spawn the collector thread");
        Collector {
            shared,
            addr,
            scheme,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://`), no trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The endpoint URL to give the client: `base_url()` + `/v1.1/events/json`.
    pub fn url(&self) -> String {
        format!("{}{EVENTS_PATH}", self.base_url())
    }

    // --- scripting; takes effect for requests arriving from now on ---

    /// Plans the reply to the next request that no rule (`set_max_body`, `set_max_events`)
    /// has answered; replies queue up in order.
    pub fn enqueue(&self, reply: Reply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// `enqueue` each of `replies`, in order.
    pub fn enqueue_all(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().queue.extend(replies);
    }

    /// The reply once the queue is empty (initially 200).
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// Answer 413 to any body longer than `bytes`; checked before everything else.
    pub fn set_max_body(&self, bytes: Option<usize>) {
        self.shared.lock().max_body = bytes;
    }

    /// Answer 413 to any body whose `events` list is longer than `events`; checked after the
    /// body size and before the queue.
    pub fn set_max_events(&self, events: Option<usize>) {
        self.shared.lock().max_events = events;
    }

    /// Fail randomly (see `Chaos`) when the queue is empty, instead of always giving the default.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        self.shared.lock().chaos = chaos.map(|c| {
            let seed = c.seed;
            (c, seed)
        });
    }

    // --- observation ---

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// The outcome of each request, in order; handy to assert a sequence like 413, 200, 200.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|r| r.outcome)
            .collect()
    }

    /// TCP connections accepted so far (including ones that never sent a request, such as
    /// failed TLS handshakes).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Every event of every request answered with a 2xx, in order of arrival.
    pub fn delivered(&self) -> Vec<DeliveredEvent> {
        let state = self.shared.lock();
        let acknowledged = state
            .requests
            .iter()
            .filter(|r| matches!(r.status(), Some(200..=299)));
        acknowledged
            .filter_map(|r| r.json())
            .flat_map(|body| flatten(&body))
            .collect()
    }

    /// Number of events in `delivered()`.
    pub fn delivered_count(&self) -> usize {
        self.delivered().len()
    }

    /// One line per request that broke SPEC §5, and per piece of malformed HTTP.
    pub fn validation_errors(&self) -> Vec<String> {
        let state = self.shared.lock();
        let invalid = state.requests.iter().enumerate().filter_map(|(i, r)| {
            let reason = r.invalid.as_ref()?;
            Some(format!("request {i} ({} {}): {reason}", r.method, r.path))
        });
        invalid
            .chain(state.protocol_errors.iter().cloned())
            .collect()
    }

    /// Panics, listing them, if any request broke SPEC §5.
    pub fn assert_valid(&self) {
        let errors = self.validation_errors();
        assert!(
            errors.is_empty(),
            "the collector saw invalid requests:\n{}",
            errors.join("\n")
        );
    }

    /// Waits until at least `n` requests have arrived; false if `timeout` passed first.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.requests.len() >= n)
    }

    /// Waits until no request is `Pending`; false if `timeout` passed first.
    pub fn wait_settled(&self, timeout: Duration) -> bool {
        self.wait(timeout, |s| {
            s.requests.iter().all(|r| r.outcome != Outcome::Pending)
        })
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let guard = self.shared.lock();
        let (guard, _) = self
            .shared
            .changed
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .unwrap_or_else(PoisonError::into_inner);
        done(&guard)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        {
            // Under the lock, so a connection being accepted right now is either shut down
            // here or sees the flag and gives up.
            let state = self.shared.lock();
            self.shared.stop.store(true, Ordering::SeqCst);
            for tcp in state.open.values() {
                let _ = tcp.shutdown(Shutdown::Both);
            }
        }
        // accept() blocks; a connection of our own wakes it up to see the flag. If even that
        // fails, leave the thread behind rather than hang the test in join().
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(acceptor) = self.acceptor.take() {
                let _ = acceptor.join();
            }
        }
    }
}

impl Shared {
    /// The state, even if a thread panicked while holding it: a test must still be able to
    /// read what was recorded.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records a request and decides its reply, in arrival order.
    fn admit(&self, head: &Head, body: Vec<u8>) -> (usize, Reply) {
        let invalid = (head.method == "POST")
            .then(|| check_post(head, &body).err())
            .flatten();
        let events = serde_json::from_slice::<Value>(&body)
            .ok()
            .as_ref()
            .map(event_count);
        let mut state = self.lock();
        let reply = state.plan(body.len(), events);
        state.requests.push(Received {
            method: head.method.clone(),
            path: head.target.clone(),
            headers: head.headers.clone(),
            body,
            reply: reply.clone(),
            outcome: Outcome::Pending,
            invalid,
        });
        self.changed.notify_all();
        (state.requests.len() - 1, reply)
    }

    fn settle(&self, index: usize, outcome: Outcome) {
        if let Some(request) = self.lock().requests.get_mut(index) {
            request.outcome = outcome;
        }
        self.changed.notify_all();
    }

    /// Sleeps `time` unless the collector stops first; false if it stopped.
    fn pause(&self, time: Duration) -> bool {
        let end = Instant::now() + time;
        while !self.stopped() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(10)));
        }
        false
    }
}

impl State {
    /// Rules first, then the queue, then chaos, then the default.
    fn plan(&mut self, body_len: usize, events: Option<usize>) -> Reply {
        if self.max_body.is_some_and(|max| body_len > max)
            || matches!((self.max_events, events), (Some(max), Some(n)) if n > max)
        {
            return Reply::status(413);
        }
        if let Some(reply) = self.queue.pop_front() {
            return reply;
        }
        if let Some((chaos, rng)) = &mut self.chaos {
            let roll = (splitmix64(rng) >> 11) as f64 / (1u64 << 53) as f64;
            if roll < chaos.probability && !chaos.faults.is_empty() {
                let pick = splitmix64(rng) % chaos.faults.len() as u64;
                return chaos.faults[pick as usize].clone();
            }
        }
        self.default.clone()
    }
}

/// splitmix64: a tiny seedable generator, enough to pick faults reproducibly.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, accept: &Accept) {
    for (id, tcp) in (0u64..).zip(listener.incoming()) {
        if shared.stopped() {
            return;
        }
        let Ok(tcp) = tcp else {
            thread::sleep(Duration::from_millis(10)); // e.g. out of file descriptors
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(handle) = tcp.try_clone() else {
            continue;
        };
        {
            let mut state = shared.lock();
            if shared.stopped() {
                return;
            }
            state.connections += 1;
            state.open.insert(id, handle);
        }
        let (ours, accept) = (shared.clone(), accept.clone());
        let spawned = thread::Builder::new()
            .name(format!("collector-conn-{id}"))
            .spawn(move || {
                if let Ok(raw) = tcp.try_clone() {
                    if let Ok(conn) = accept(tcp) {
                        serve(&ours, &raw, conn);
                    }
                }
                ours.lock().open.remove(&id); // the last handle: closes the socket
            });
        if spawned.is_err() {
            shared.lock().open.remove(&id);
        }
    }
}

/// Serves requests on one connection until either side closes it.
fn serve(shared: &Shared, raw: &TcpStream, conn: Box<dyn Conn>) {
    let mut conn = BufReader::new(conn);
    loop {
        let request = read_head(&mut conn).and_then(|head| {
            let Some(head) = head else { return Ok(None) };
            if head
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            {
                conn.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let body = read_body(&mut conn, &head)?;
            Ok(Some((head, body)))
        });
        let (head, body) = match request {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                // InvalidData is the parser's verdict on malformed HTTP; anything else is the
                // client hanging up mid-request, which is its right.
                if e.kind() == ErrorKind::InvalidData {
                    shared
                        .lock()
                        .protocol_errors
                        .push(format!("malformed HTTP: {e}"));
                }
                return;
            }
        };
        let (index, reply) = shared.admit(&head, body);
        match reply {
            Reply::Answer {
                status,
                headers,
                body,
                delay,
            } => {
                if !shared.pause(delay) {
                    return; // stays Pending: the collector was dropped
                }
                if !delay.is_zero() && peer_gone(raw) {
                    return shared.settle(index, Outcome::ClientGone);
                }
                // Settle before writing, so a client that has read the answer always finds
                // it recorded.
                shared.settle(index, Outcome::Answered(status));
                let close = head.wants_close();
                if write_response(conn.get_mut(), status, &headers, &body, close).is_err() {
                    return shared.settle(index, Outcome::ClientGone);
                }
                if close {
                    return;
                }
            }
            Reply::Hangup { after, reset } => {
                if shared.pause(after) {
                    shared.settle(index, Outcome::HungUp);
                }
                if reset {
                    // Linger 0 turns the close into an RST; the socket closes when the last
                    // handle (in the open list) goes.
                    let _ = socket2::SockRef::from(raw).set_linger(Some(Duration::ZERO));
                } else {
                    let _ = raw.shutdown(Shutdown::Both);
                }
                return;
            }
        }
    }
}

/// Whether the client has closed its end, checked without consuming anything.
fn peer_gone(raw: &TcpStream) -> bool {
    if raw.set_nonblocking(true).is_err() {
        return true;
    }
    let gone = match raw.peek(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = raw.set_nonblocking(false);
    gone
}

// ---------------------------------------------------------------------------------------
// Validation and flattening
// ---------------------------------------------------------------------------------------

/// The HTTP-level rules of SPEC §5 for a POST, then the envelope.
fn check_post(head: &Head, body: &[u8]) -> Result<(), String> {
    let media_type = head
        .header("content-type")
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    if !media_type.is_some_and(|t| t.eq_ignore_ascii_case("application/json")) {
        return Err(format!(
            "Content-Type: expected application/json, got {media_type:?}"
        ));
    }
    if let Some(encoding) = head
        .header("content-encoding")
        .filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(format!(
            "body must be sent uncompressed, got Content-Encoding {encoding:?}"
        ));
    }
    let json = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    validate_envelope(&json)
}

fn event_count(body: &Value) -> usize {
    body.get("events")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The events of one body, each with the envelope fields that identify it.
fn flatten(body: &Value) -> Vec<DeliveredEvent> {
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    events
        .iter()
        .map(|event| DeliveredEvent {
            session_id: text(body, "sessionId"),
            client_ver: text(body, "clientVer"),
            ts: text(event, "ts"),
            name: text(event, "name"),
            parameters: event.get("parameters").cloned().unwrap_or(Value::Null),
        })
        .collect()
}
