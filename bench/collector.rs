//! A fast loopback collector for telespool's upload benchmark (bench/run).
//!
//! Standard library only; built by bench/run with `rustc -O` into the bench work
//! directory, never part of the telespool package. One thread per connection,
//! HTTP/1.1 keep-alive. Every POST is answered `200 OK` with an empty body as soon as
//! its body has been read; then the collector counts the request, its bytes and its
//! events (occurrences of `"name"`, which only the event objects of a request body
//! carry) so the benchmark can check that every event arrived.
//!
//! `GET /stats` answers `{"requests": n, "events": n, "bytes": n}`; `GET /stats?reset`
//! answers the same and sets the counters back to zero.
//!
//! Usage: collector [PORT [DELAY_MS]]   (default 0: any free port; no delay). Prints the
//! port on stdout. With DELAY_MS, every POST is answered that many milliseconds after its
//! body arrived, like an endpoint across a network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
}

fn main() {
    let port: u16 = std::env::args().nth(1).map_or(0, |p| p.parse().expect("port"));
    let delay_ms: u64 = std::env::args().nth(2).map_or(0, |d| d.parse().expect("delay"));
    let delay = std::time::Duration::from_millis(delay_ms);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let counters = Arc::new(Counters::default());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let counters = Arc::clone(&counters);
        std::thread::spawn(move || {
            let _ = serve(conn, &counters, delay);
        });
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    let first = needle[0];
    while i + needle.len() <= haystack.len() {
        match haystack[i..].iter().position(|&b| b == first) {
            None => break,
            Some(p) => {
                i += p;
                if haystack[i..].starts_with(needle) {
                    n += 1;
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
        }
    }
    n
}

fn serve(conn: TcpStream, counters: &Counters, delay: std::time::Duration) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut input = BufReader::with_capacity(256 * 1024, conn);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        // Request line.
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_string();
        if request_line.is_empty() {
            continue;
        }
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        // Headers.
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    // Not used by any sender the benchmark runs.
                    let msg = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    out.write_all(msg)?;
                    return Ok(());
                }
            }
        }
        body.resize(length, 0);
        input.read_exact(&mut body)?;
        if method == "GET" && target.starts_with("/stats") {
            let reset = target.ends_with("?reset");
            let load = |c: &AtomicU64| {
                if reset {
                    c.swap(0, Ordering::SeqCst)
                } else {
                    c.load(Ordering::SeqCst)
                }
            };
            let text = format!(
                "{{\"requests\": {}, \"events\": {}, \"bytes\": {}}}",
                load(&counters.requests),
                load(&counters.events),
                load(&counters.bytes)
            );
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                text.len(),
                text
            )?;
        } else {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
            // Count after answering, so the sender is not kept waiting for it.
            counters.events.fetch_add(count(&body, b"\"name\""), Ordering::Relaxed);
            counters.bytes.fetch_add(length as u64, Ordering::Relaxed);
            counters.requests.fetch_add(1, Ordering::SeqCst);
        }
        if close {
            return Ok(());
        }
    }
}
