//! Just enough HTTP/1.1 for the collector: request heads, `Content-Length` and chunked
//! bodies, and plain responses. Errors of kind `InvalidData` mean the client sent malformed
//! HTTP; any other error is the connection ending.

use std::fmt::Write as _;
use std::io::{self, BufRead, ErrorKind, Read, Write};

/// Request heads larger than this are refused, so a broken client cannot exhaust memory.
const MAX_HEAD: u64 = 64 * 1024;
/// Bodies larger than this are refused for the same reason (the spec's batches are 256 KiB).
const MAX_BODY: usize = 64 << 20;

pub(super) struct Head {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the client asked for the connection to end after this exchange.
    pub(super) fn wants_close(&self) -> bool {
        let has = |token: &str| {
            self.header("connection")
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        has("close") || (self.version == "HTTP/1.0" && !has("keep-alive"))
    }
}

pub(super) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn malformed(what: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.into())
}

/// Reads one line without its CRLF, spending `budget`; `None` at end of stream.
fn read_line(r: &mut impl BufRead, budget: &mut u64) -> io::Result<Option<String>> {
    if *budget == 0 {
        return Err(malformed("request head too large"));
    }
    let mut line = Vec::new();
    let n = r.take(*budget).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    *budget -= n as u64;
    if line.pop() != Some(b'\n') {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "line cut short"));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| malformed("non-UTF-8 line"))
}

/// `read_line`, where the end of the stream means the client hung up mid-request.
fn required_line(r: &mut impl BufRead, budget: &mut u64) -> io::Result<String> {
    read_line(r, budget)?
        .ok_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "request cut short"))
}

/// Reads a request line and headers; `None` if the client closed between requests.
pub(super) fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut budget = MAX_HEAD;
    let request_line = loop {
        match read_line(r, &mut budget)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue, // stray CRLF between requests is allowed
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(format!("bad request line {request_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(format!("unsupported version {version:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let line = required_line(r, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let head = Head {
        method: method.into(),
        target: target.into(),
        version: version.into(),
        headers,
    };
    Ok(Some(head))
}

pub(super) fn read_body(r: &mut impl BufRead, head: &Head) -> io::Result<Vec<u8>> {
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return read_chunked(r);
    }
    let len = match head.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| malformed(format!("bad Content-Length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err(malformed(format!("body of {len} bytes is too large")));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut budget = MAX_HEAD; // for the size lines and trailers
    let mut body = Vec::new();
    loop {
        let line = required_line(r, &mut budget)?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| malformed(format!("bad chunk size {hex:?}")))?;
        if size == 0 {
            while !required_line(r, &mut budget)?.is_empty() {} // trailers
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(malformed("chunked body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        if !required_line(r, &mut budget)?.is_empty() {
            return Err(malformed("chunk not followed by CRLF"));
        }
    }
}

pub(super) fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n", body.len());
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    w.write_all(&bytes)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
