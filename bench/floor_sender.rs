//! The floor for telespool's upload benchmark (bench/run): a keep-alive HTTP/1.1
//! sender posting request bodies that are already built, in memory.
//!
//! Standard library only; built by bench/run with `rustc -O` into the bench work
//! directory, never part of the telespool package. It reads a JSON Lines file of
//! request bodies (one body per line, exactly what `telespool export --output -`
//! writes), builds every request (headers + body) in memory first, and only then
//! starts the clock: one TCP connection (TCP_NODELAY), for each request one write and
//! a blocking read of the response, checking for `200`. This is the least any
//! sequential HTTP/1.1 uploader has to do to deliver the same bytes; it reads no
//! database, formats no JSON and deletes nothing.
//!
//! Usage: floor_sender HOST:PORT PATH BODIES.jsonl
//! Prints: {"requests": n, "bytes": n, "seconds": s} (seconds: connect to last answer).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: floor_sender HOST:PORT PATH BODIES.jsonl");
        std::process::exit(64);
    }
    let (addr, path, file) = (&args[1], &args[2], &args[3]);
    let input = BufReader::new(std::fs::File::open(file).expect("open bodies"));
    let mut requests: Vec<Vec<u8>> = Vec::new();
    let mut body_bytes = 0u64;
    for line in input.split(b'\n') {
        let body = line.expect("read bodies");
        if body.is_empty() {
            continue;
        }
        body_bytes += body.len() as u64;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: */*\r\nUser-Agent: floor-sender\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        requests.push(req);
    }

    let start = Instant::now();
    let stream = TcpStream::connect(addr.as_str()).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut input = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    let mut discard = Vec::new();
    for req in &requests {
        out.write_all(req).expect("send");
        line.clear();
        input.read_line(&mut line).expect("read status");
        if !line.starts_with("HTTP/1.1 200") {
            eprintln!("floor_sender: unexpected answer: {}", line.trim_end());
            std::process::exit(1);
        }
        let mut length = 0usize;
        loop {
            line.clear();
            input.read_line(&mut line).expect("read header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        discard.resize(length, 0);
        input.read_exact(&mut discard).expect("read body");
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{{\"requests\": {}, \"bytes\": {}, \"seconds\": {:.6}}}",
        requests.len(),
        body_bytes,
        seconds
    );
}
