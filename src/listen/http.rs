//! Just enough HTTP/1.1 for one request per connection: a head parsed by `httparse`,
//! a `Content-Length` body, a plain-text answer, then the connection is closed.
//!
//! Everything a client controls is bounded here: the head (16 KiB, 64 headers), the
//! body (the caller's limit, checked against `Content-Length` before a byte of it is
//! read), and time — head and body together must arrive before one deadline, so a
//! client that trickles bytes cannot hold a thread longer than that.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// How long an answer may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering, how long unread input is drained so the client sees the answer
/// rather than a connection reset.
const LINGER: Duration = Duration::from_secs(1);

/// What to answer: a status and a one-line text (for an error, its reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn new(status: u16, text: impl Into<String>) -> Answer {
        Answer {
            status,
            text: text.into(),
        }
    }
}

/// A parsed request line and headers.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub path: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The values of every header called `name` (case-insensitive), as lossy text.
    pub fn all(&self, name: &str) -> impl Iterator<Item = String> + '_ {
        let name = name.to_string();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
    }

    /// The value of header `name`, if it is there at least once.
    pub fn get(&self, name: &str) -> Option<String> {
        self.all(name).next()
    }

    /// The declared body length: `None` without a `Content-Length` header; a value too
    /// large for memory counts as `usize::MAX` (it is over any limit anyway).
    pub fn content_length(&self) -> Result<Option<usize>, Answer> {
        let mut found: Option<usize> = None;
        for value in self.all("Content-Length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Answer::new(
                    400,
                    format!("Content-Length `{}` is not a number", printable(&value)),
                ));
            }
            let n = value.parse::<usize>().unwrap_or(usize::MAX);
            if found.is_some_and(|f| f != n) {
                return Err(Answer::new(400, "conflicting Content-Length headers"));
            }
            found = Some(n);
        }
        Ok(found)
    }

    /// Whether the client waits for `100 Continue` before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.all("Expect")
            .any(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// One client connection, serving one request.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read past the head: the start of the body.
    pending: Vec<u8>,
    deadline: Instant,
    /// Whether every byte the client announced has been read.
    drained: bool,
}

impl Conn {
    /// Takes a freshly accepted connection; its head and body must arrive within
    /// `timeout` from now.
    pub fn new(stream: TcpStream, timeout: Duration) -> Conn {
        // An accepted socket inherits non-blocking mode from the listener on some
        // systems; this code wants blocking reads with timeouts.
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        Conn {
            stream,
            pending: Vec::new(),
            deadline: Instant::now() + timeout,
            drained: false,
        }
    }

    /// Reads and parses the request head. `Ok(None)`: the client closed the connection
    /// without sending anything (a port probe, a connection flood).
    pub fn read_head(&mut self) -> Result<Option<Head>, Answer> {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = Head {
                        method: req.method.unwrap_or_default().to_string(),
                        path: req.path.unwrap_or_default().to_string(),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_vec()))
                            .collect(),
                    };
                    self.pending = buf.split_off(len);
                    return Ok(Some(head));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Answer::new(431, format!("more than {MAX_HEADERS} headers")))
                }
                Err(e) => return Err(Answer::new(400, format!("malformed request: {e}"))),
            }
            if buf.len() >= MAX_HEAD {
                return Err(Answer::new(
                    431,
                    format!("request head over {} KiB", MAX_HEAD >> 10),
                ));
            }
            let mut chunk = [0u8; 4096];
            let room = (MAX_HEAD - buf.len()).min(chunk.len());
            match self.read_some(&mut chunk[..room])? {
                0 if buf.is_empty() => return Ok(None),
                0 => {
                    return Err(Answer::new(
                        400,
                        "connection closed inside the request head",
                    ))
                }
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Tells a client that sent `Expect: 100-continue` to go ahead with its body.
    pub fn send_continue(&mut self) -> Result<(), Answer> {
        self.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|e| Answer::new(400, format!("cannot write: {e}")))
    }

    /// Reads a body of exactly `len` bytes (the caller has checked `len` against its
    /// limit, so the buffer is bounded).
    pub fn read_body(&mut self, len: usize) -> Result<Vec<u8>, Answer> {
        let mut body = std::mem::take(&mut self.pending);
        // Bytes past the body would be a pipelined request; we answer one per
        // connection and close, so they are dropped.
        body.truncate(len);
        let mut chunk = vec![0u8; 64 << 10];
        while body.len() < len {
            let room = (len - body.len()).min(chunk.len());
            match self.read_some(&mut chunk[..room])? {
                0 => {
                    return Err(Answer::new(
                        400,
                        format!("body ended after {} of {len} bytes", body.len()),
                    ))
                }
                n => body.extend_from_slice(&chunk[..n]),
            }
        }
        self.drained = true;
        Ok(body)
    }

    /// One `read`, bounded by what is left of the deadline; running out is a 408.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Answer> {
        let timed_out = || Answer::new(408, "request not received in time");
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(timed_out())
                }
                // A reset or other failure: there is nobody left to answer.
                Err(e) => return Err(Answer::new(400, format!("cannot read: {e}"))),
            }
        }
    }

    /// Answers `status` with `text` as a one-line plain-text body, then closes the
    /// connection. Errors writing are ignored: the client has gone.
    pub fn respond(mut self, status: u16, text: &str, extra_headers: &[(&str, &str)]) {
        let body = format!("{}\n", text.replace(['\r', '\n'], " "));
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            reason_phrase(status),
            body.len()
        );
        for (name, value) in extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut answer = head.into_bytes();
        answer.extend_from_slice(body.as_bytes());
        if self.stream.write_all(&answer).is_err() {
            return;
        }
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
        self.linger();
    }

    /// Closing a socket with unread input makes the kernel send a reset, which can
    /// destroy our answer before the client reads it. So read and discard what the
    /// client still sends, for a moment and at most `MAX_DISCARD` bytes, until it closes.
    fn linger(&mut self) {
        const MAX_DISCARD: usize = 1 << 20;
        let until = Instant::now() + LINGER;
        let mut discarded = if self.drained { 0 } else { self.pending.len() };
        let mut chunk = [0u8; 16 << 10];
        while discarded < MAX_DISCARD {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

/// Answers a connection that will not be served (too many open), without reading it.
pub fn refuse_now(mut stream: TcpStream, status: u16, text: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let body = format!("{text}\n");
    let answer = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// At most 64 characters of `s`, control characters escaped, for messages.
pub fn printable(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> Head {
        Head {
            method: "POST".into(),
            path: "/".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(head(&[]).content_length(), Ok(None));
        assert_eq!(
            head(&[("content-length", " 12 ")]).content_length(),
            Ok(Some(12))
        );
        assert_eq!(
            head(&[("Content-Length", "99999999999999999999999")]).content_length(),
            Ok(Some(usize::MAX))
        );
        assert_eq!(
            head(&[("Content-Length", "-1")])
                .content_length()
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head(&[("Content-Length", "1e3")])
                .content_length()
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head(&[("Content-Length", "3"), ("Content-Length", "4")])
                .content_length()
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head(&[("Content-Length", "3"), ("content-length", "3")]).content_length(),
            Ok(Some(3))
        );
    }

    #[test]
    fn expect_continue_is_case_insensitive() {
        assert!(head(&[("expect", "100-Continue")]).expects_continue());
        assert!(!head(&[]).expects_continue());
    }
}
