//! Helpers for the tests of `telespool listen` and `telespool run`: start the built
//! binary in a sandbox, talk raw HTTP to it, build request bodies.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::sandbox::Sandbox;

/// Event times in fixtures are real upstream captures from the past: keep them.
pub const KEEP_OLD_EVENTS: (&str, &str) = ("TELESPOOL_MAX_AGE", "3650d");

/// A running `telespool listen`.
pub struct Running {
    pub child: Child,
    /// Where to connect (loopback, even when it listens on every address).
    pub addr: SocketAddr,
    /// The first lines it printed, up to and including the listening line.
    pub banner: String,
    log: Arc<Mutex<String>>,
}

/// Starts `telespool [global] listen --bind 127.0.0.1:0 [args]` and waits for its
/// listening line. `args` may override `--bind`.
pub fn start_listen(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = sb.cmd();
    cmd.arg("listen");
    if !args.contains(&"--bind") {
        cmd.args(["--bind", "127.0.0.1:0"]);
    }
    cmd.args(args)
        .env(KEEP_OLD_EVENTS.0, KEEP_OLD_EVENTS.1)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn telespool listen");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = String::new();
            let mut tx = Some(tx);
            loop {
                line.clear();
                match std::io::BufRead::read_line(&mut reader, &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                log.lock().unwrap().push_str(&line);
                if line.contains("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
            }
        });
    }
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "telespool listen printed no listening line; stderr:\n{}",
                log.lock().unwrap()
            );
        }
    };
    let port: u16 = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|hostport| hostport.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let banner = log.lock().unwrap().clone();
    Running {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        banner,
        log,
    }
}

impl Running {
    /// Everything it printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its stderr once `done` holds for it (the reader may lag behind the process);
    /// what there is after `limit`.
    pub fn log_when(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + limit;
        loop {
            let log = self.log();
            if done(&log) || Instant::now() >= until {
                return log;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1.1/events/json", self.addr)
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        send_signal(&self.child, signal);
    }

    /// Waits at most `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_exit(&mut self.child, limit)
            .unwrap_or_else(|| panic!("still running after {limit:?}; stderr:\n{}", self.log()))
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn send_signal(child: &Child, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
        .expect("send signal");
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Parses everything a server sent on one connection, skipping `100 Continue`.
pub fn parse_reply(bytes: &[u8]) -> Reply {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    while text.starts_with("HTTP/1.1 100") {
        text = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection.
pub fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// Sends `raw` bytes, then reads the answer.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = connect(addr);
    stream.write_all(raw).expect("send request");
    parse_reply(&read_all(&mut stream))
}

/// POSTs `body` with the given Content-Type (`None`: no such header).
pub fn post_as(addr: SocketAddr, content_type: Option<&str>, body: &[u8]) -> Reply {
    let mut raw = format!(
        "POST /v1.1/events/json HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        raw.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    exchange(addr, &bytes)
}

pub fn post(addr: SocketAddr, body: &[u8]) -> Reply {
    post_as(addr, Some("application/json"), body)
}

/// Sends the head and part of the body, and leaves the connection open.
pub fn start_slow_post(addr: SocketAddr, body: &[u8], sent: usize) -> TcpStream {
    let mut stream = connect(addr);
    let head = format!(
        "POST /v1.1/events/json HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..sent]).unwrap();
    stream.flush().unwrap();
    stream
}

pub fn half_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

/// The body upstream's client sent in a real capture (nemo-evaluator 0.2.8 with httpx
/// 0.27.2), byte for byte.
pub fn upstream_body_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/listen/upstream-body.json"
    ))
    .unwrap()
}

pub fn upstream_body() -> Value {
    serde_json::from_slice(&upstream_body_bytes()).unwrap()
}

/// Upstream's envelope around `events`, for session `session`.
pub fn body_for(session: &str, client_ver: &str, events: Value) -> Vec<u8> {
    let mut body = upstream_body();
    body["sessionId"] = json!(session);
    body["clientVer"] = json!(client_ver);
    body["events"] = events;
    serde_json::to_vec(&body).unwrap()
}

/// An EvaluationTaskEvent as upstream writes it, at `ts`.
pub fn task_event(ts: &str, task: &str, model: &str, status: &str, duration: f64) -> Value {
    json!({"ts": ts, "parameters": {"task": task, "frameworkName": "lm-evaluation-harness",
        "model": model, "executionDurationSeconds": duration, "status": status},
        "name": "EvaluationTaskEvent"})
}

/// Now, in upstream's timestamp format.
pub fn now_ts() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}
