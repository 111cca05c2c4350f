//! `telespool listen` (SPEC §4): what an unmodified client POSTs is spooled exactly,
//! everything else is refused with the right status and a one-line reason, nothing
//! partial is ever stored, and no client — slow, hostile or one of many — stops the
//! listener from answering the others well within upstream's 5 s timeout.

mod common;
mod listen_support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::sandbox::*;
use listen_support::*;
use rustix::process::Signal;
use serde_json::{json, Value};

/// Upstream's client gives up after this long.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn a_real_upstream_body_is_spooled_exactly_with_its_times_session_and_version() {
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[]);
    let reply = post(listener.addr, &upstream_body_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "stored 2 events\n");
    assert_eq!(reply.header("Connection").as_deref(), Some("close"));

    let sent = upstream_body();
    let doc = sb.inspect_env(&[KEEP_OLD_EVENTS]);
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    for (got, want) in events.iter().zip(sent["events"].as_array().unwrap()) {
        assert_eq!(got["name"], want["name"]);
        assert_eq!(got["ts"], want["ts"]);
        assert_eq!(got["parameters"], want["parameters"]);
        assert_eq!(got["sessionId"], sent["sessionId"]);
        assert_eq!(got["clientVer"], sent["clientVer"]);
    }
}

#[test]
fn compact_bodies_any_path_and_a_charset_are_accepted_too() {
    // httpx 0.28 sends compact JSON without ASCII escapes; the path does not matter.
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[]);
    let ts = now_ts();
    let body = body_for(
        "s-compact",
        "0.2.8",
        json!([task_event(
            &ts,
            "tâche-ü",
            "org/modèle",
            "success",
            1234.5678901234567
        )]),
    );
    let raw = [
        format!(
            "POST /somewhere/else?x=1 HTTP/1.1\r\nHost: x\r\ncontent-type: Application/JSON; charset=utf-8\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat();
    let reply = exchange(listener.addr, &raw);
    assert_eq!(reply.status, 200, "{reply:?}");
    let doc = sb.inspect();
    let event = &doc["events"][0];
    assert_eq!(event["ts"], ts.as_str());
    assert_eq!(event["sessionId"], "s-compact");
    assert_eq!(event["parameters"]["task"], "tâche-ü");
    assert_eq!(event["parameters"]["model"], "org/modèle");
    assert_eq!(
        event["parameters"]["executionDurationSeconds"].as_f64(),
        Some(1234.5678901234567)
    );
}

/// Applies one case of fixtures/listen/bad-bodies.json to the upstream body.
fn bad_body(case: &Value) -> Vec<u8> {
    if let Some(text) = case.get("text") {
        return text.as_str().unwrap().as_bytes().to_vec();
    }
    let mut body = upstream_body();
    for key in case
        .get("remove")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        body.as_object_mut()
            .unwrap()
            .shift_remove(key.as_str().unwrap());
    }
    for (k, v) in case
        .get("set")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        body[k] = v.clone();
    }
    if let Some(change) = case.get("event") {
        let index = change[0].as_u64().unwrap() as usize;
        let path: Vec<&str> = change[1].as_str().unwrap().split('.').collect();
        let (last, parents) = path.split_last().unwrap();
        let mut target = &mut body["events"][index];
        for p in parents {
            target = &mut target[*p];
        }
        let target = target.as_object_mut().unwrap();
        if change[2].is_null() {
            target.shift_remove(*last);
        } else {
            target.insert(last.to_string(), change[2].clone());
        }
    }
    serde_json::to_vec(&body).unwrap()
}

#[test]
fn every_bad_body_is_refused_with_its_status_and_reason_and_nothing_is_stored() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/listen/bad-bodies.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);

    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let content_type = match case.get("content_type") {
            None => Some("application/json"),
            Some(Value::Null) => None,
            Some(ct) => Some(ct.as_str().unwrap()),
        };
        let reply = post_as(listener.addr, content_type, &bad_body(case));
        assert_eq!(
            reply.status,
            case["status"].as_u64().unwrap() as u16,
            "case {name:?}: {reply:?}"
        );
        let reason = &reply.body;
        assert!(
            reason.ends_with('\n') && reason.lines().count() == 1,
            "case {name:?}: one line: {reason:?}"
        );
        let mention = case["mentions"].as_str().unwrap();
        assert!(reason.contains(mention), "case {name:?}: {reason:?}");
        assert!(reply
            .header("Content-Type")
            .unwrap()
            .starts_with("text/plain"));
    }
    assert!(listener.is_running());
    assert_eq!(sb.queued(), 0, "a refused body stored something");

    // The listener is unharmed: the original body still goes in.
    assert_eq!(post(listener.addr, &upstream_body_bytes()).status, 200);
    assert_eq!(sb.inspect_env(&[KEEP_OLD_EVENTS])["queued"], 2);
}

#[test]
fn http_level_mistakes_get_their_own_statuses() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    let addr = listener.addr;

    let get = exchange(addr, b"GET /v1.1/events/json HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(get.status, 405, "{get:?}");
    assert_eq!(get.header("Allow").as_deref(), Some("POST"));
    let put = exchange(addr, b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(put.status, 405);

    let chunked = exchange(
        addr,
        b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 411, "{chunked:?}");
    let no_length = exchange(
        addr,
        b"POST / HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
    );
    assert_eq!(no_length.status, 411);
    let bad_length = exchange(
        addr,
        b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 12abc\r\n\r\n",
    );
    assert_eq!(bad_length.status, 400);

    let garbage = exchange(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
    assert_eq!(garbage.status, 400, "{garbage:?}");
    let many_headers: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = exchange(
        addr,
        format!("POST / HTTP/1.1\r\n{many_headers}\r\n").as_bytes(),
    );
    assert_eq!(reply.status, 431);
    let long_header = format!("POST / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(exchange(addr, long_header.as_bytes()).status, 431);

    // The body ends before its Content-Length: refused, nothing stored.
    let body = upstream_body_bytes();
    let stream = start_slow_post(addr, &body, body.len() / 2);
    half_close(&stream);
    let mut stream = stream;
    let reply = parse_reply(&read_all(&mut stream));
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("body ended after"), "{reply:?}");

    assert!(listener.is_running());
    assert_eq!(sb.queued(), 0);
}

#[test]
fn bodies_over_one_mib_get_413_before_they_are_read() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    let addr = listener.addr;

    // Announced too large, waiting for 100 Continue: 413 at once, no Continue.
    let mut stream = connect(addr);
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1048577\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let bytes = read_all(&mut stream);
    assert!(
        bytes.starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(parse_reply(&bytes).body.contains("1024 KiB"));

    // A length no memory holds (tiny_http 0.12 would try to allocate it): 413.
    let huge = exchange(
        addr,
        b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 18446744073709551615\r\n\r\n{}",
    );
    assert_eq!(huge.status, 413);

    // A client that sends 2 MiB without waiting still reads its 413.
    let mut stream = connect(addr);
    let mut reader = stream.try_clone().unwrap();
    let answer = thread::spawn(move || read_all(&mut reader));
    let size = 2 << 20;
    let head = format!(
        "POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&vec![b' '; size]);
    let bytes = answer.join().unwrap();
    assert_eq!(parse_reply(&bytes).status, 413);

    // Exactly at the limit is not over it: a valid body padded to 1 MiB is stored.
    let mut body = upstream_body_bytes();
    body.resize(1 << 20, b' ');
    let reply = post(addr, &body);
    assert_eq!(reply.status, 200, "{reply:?}");

    // And 100-continue is honoured for a body under the limit.
    let body = upstream_body_bytes();
    let mut stream = connect(addr);
    let head = format!(
        "POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut first = [0u8; 25];
    std::io::Read::read_exact(&mut stream, &mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&body).unwrap();
    assert_eq!(parse_reply(&read_all(&mut stream)).status, 200);

    assert!(listener.is_running());
    assert_eq!(sb.inspect_env(&[KEEP_OLD_EVENTS])["queued"], 4);
}

#[test]
fn a_client_that_never_finishes_its_body_times_out_without_holding_up_others() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    let addr = listener.addr;
    let started = Instant::now();
    let body = upstream_body_bytes();
    let mut slow = start_slow_post(addr, &body, 100);
    // A second one that sends nothing at all after connecting.
    let mut silent = connect(addr);

    // Meanwhile another client is served at once.
    let ts = now_ts();
    let other = body_for(
        "s-other",
        "0.2.8",
        json!([task_event(&ts, "mmlu", "m", "success", 1.0)]),
    );
    let t = Instant::now();
    let reply = post(addr, &other);
    assert_eq!(reply.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );

    // The slow ones are cut off after the 10 s request timeout, with a 408.
    let reply = parse_reply(&read_all(&mut slow));
    let waited = started.elapsed();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(25),
        "timed out after {waited:?}"
    );
    assert_eq!(parse_reply(&read_all(&mut silent)).status, 408);

    assert!(listener.is_running());
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 1, "only the finished request is stored");
    assert_eq!(doc["events"][0]["sessionId"], "s-other");
}

#[test]
fn a_flood_of_connections_does_not_take_the_listener_down() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    let addr = listener.addr;
    for i in 0..200 {
        let mut s = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => panic!("connection {i} refused: {e}"),
        };
        let sent = match i % 5 {
            // Connect and close.
            0 => Ok(()),
            // Half a head.
            1 => s.write_all(b"POST / HTTP/1.1\r\n"),
            2 => s.write_all(b"\x00\xff garbage \r\n\r\n"),
            // Half a body.
            3 => s.write_all(
                b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"ev",
            ),
            // Reset instead of close.
            _ => socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)),
        };
        sent.unwrap();
        drop(s);
    }
    let t = Instant::now();
    let reply = post(addr, &upstream_body_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(t.elapsed() < UPSTREAM_TIMEOUT, "took {:?}", t.elapsed());
    assert!(listener.is_running());
    assert_eq!(sb.inspect_env(&[KEEP_OLD_EVENTS])["queued"], 2);
}

#[test]
fn connections_over_the_cap_get_503_at_once_and_the_listener_recovers() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    let addr = listener.addr;
    // 256 idle connections fill every place (once the listener has taken them all).
    let idle: Vec<TcpStream> = (0..256).map(|_| connect(addr)).collect();
    let until = Instant::now() + Duration::from_secs(8);
    let reply = loop {
        let t = Instant::now();
        let reply = post(addr, &upstream_body_bytes());
        if reply.status == 503 {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "took {:?}",
                t.elapsed()
            );
            break reply;
        }
        assert!(Instant::now() < until, "never refused: {reply:?}");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(reply.body.contains("too many connections"), "{reply:?}");
    assert_eq!(reply.header("Retry-After").as_deref(), Some("1"));
    drop(idle);
    // Closed connections free their places within moments.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = post(addr, &upstream_body_bytes());
        if reply.status == 200 {
            break;
        }
        assert!(Instant::now() < until, "still {reply:?}");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(listener.is_running());
}

#[test]
fn sixty_four_clients_posting_at_once_are_all_answered_in_time_and_stored_once() {
    const CLIENTS: usize = 64;
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[]);
    let addr = listener.addr;
    let gate = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let gate = Arc::clone(&gate);
            thread::spawn(move || {
                let ts = now_ts();
                let body = body_for(
                    &format!("client-{i:02}"),
                    "0.2.8",
                    json!([
                        task_event(&ts, "mmlu", "m", "started", 0.0),
                        task_event(&ts, "mmlu", "m", "success", i as f64),
                    ]),
                );
                gate.wait();
                let t = Instant::now();
                let reply = post(addr, &body);
                (reply.status, t.elapsed())
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let slowest = results.iter().map(|r| r.1).max().unwrap();
    let mut sorted: Vec<Duration> = results.iter().map(|r| r.1).collect();
    sorted.sort();
    let _ = writeln!(
        std::io::stderr(),
        "64 concurrent clients: median {:?}, slowest {slowest:?}",
        sorted[CLIENTS / 2]
    );
    for (i, (status, took)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "client {i}");
        assert!(*took < UPSTREAM_TIMEOUT, "client {i} took {took:?}");
    }
    let doc = sb.inspect();
    assert_eq!(doc["queued"], (2 * CLIENTS) as u64);
    let mut per_session = std::collections::BTreeMap::new();
    for e in doc["events"].as_array().unwrap() {
        *per_session
            .entry(e["sessionId"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_session.len(), CLIENTS);
    assert!(per_session.values().all(|n| *n == 2), "{per_session:?}");
}

#[test]
fn level_1_stores_the_model_as_redacted_and_never_writes_the_name() {
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")]);
    let ts = now_ts();
    let body = body_for(
        "s-1",
        "0.2.8",
        json!([task_event(
            &ts,
            "mmlu",
            "secret-org/secret-model",
            "success",
            2.0
        )]),
    );
    assert_eq!(post(listener.addr, &body).status, 200);
    let doc = sb.inspect();
    assert_eq!(doc["events"][0]["parameters"]["model"], "redacted");
    assert_eq!(doc["events"][0]["parameters"]["task"], "mmlu");
    assert!(!contains(&sb.spool_bytes(), "secret-model"));
}

#[test]
fn level_0_answers_200_and_stores_nothing() {
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "0")]);
    let log = listener.log_when(Duration::from_secs(5), |l| l.contains("nothing is stored"));
    assert!(log.contains("level is 0 (OFF)"), "{log}");
    let reply = post(listener.addr, &upstream_body_bytes());
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("none stored"), "{reply:?}");
    // Still validated: a bad body is a 400 even when nothing would be stored.
    assert_eq!(post(listener.addr, b"{}").status, 400);
    assert!(!sb.spool.exists() || sb.queued() == 0);
}

#[test]
fn the_level_is_read_once_at_start() {
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[]);
    assert_ok(&sb.run(&["config", "set", "telemetry.level", "1"]));
    let ts = now_ts();
    let body = body_for(
        "s",
        "v",
        json!([task_event(&ts, "t", "real-model", "started", 0.0)]),
    );
    assert_eq!(post(listener.addr, &body).status, 200);
    // Stored at the level in force when the listener started (2); inspect now runs
    // at level 1 and shows it redacted, as upload would send it.
    let stored = sb.stored::<String>("parameters").join("\n");
    assert!(stored.contains("real-model"), "{stored}");
}

#[test]
fn sigterm_and_sigint_finish_requests_in_flight_then_exit_0() {
    for signal in [Signal::TERM, Signal::INT] {
        let sb = Sandbox::new();
        let mut listener = start_listen(&sb, &["-v"], &[]);
        let addr = listener.addr;
        let body = upstream_body_bytes();
        // Connected (so in flight, whether or not the listener took it yet), half sent.
        let mut in_flight = start_slow_post(addr, &body, 200);
        listener.signal(signal);
        // It stops accepting...
        let until = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < until, "still accepting after {signal:?}");
            thread::sleep(Duration::from_millis(50));
        }
        // ...but the request in flight is finished, stored and answered.
        in_flight.write_all(&body[200..]).unwrap();
        let reply = parse_reply(&read_all(&mut in_flight));
        assert_eq!(reply.status, 200, "{signal:?}: {reply:?}");
        let status = listener.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{signal:?}: {}", listener.log());
        assert_eq!(sb.inspect_env(&[KEEP_OLD_EVENTS])["queued"], 2);
    }
}

#[test]
fn verbose_logs_one_line_per_request() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &["-v"], &[]);
    assert_eq!(post(listener.addr, &upstream_body_bytes()).status, 200);
    assert_eq!(post(listener.addr, b"nope").status, 400);
    listener.signal(Signal::TERM);
    listener.wait_exit(Duration::from_secs(10));
    let log = listener.log_when(Duration::from_secs(5), |l| l.contains("stopped:"));
    let requests: Vec<&str> = log.lines().filter(|l| l.contains(" POST /")).collect();
    assert_eq!(requests.len(), 2, "{log}");
    assert!(requests[0].contains(": 200 stored 2 events"), "{log}");
    assert!(
        requests[1].contains(": 400 not a JSON request body"),
        "{log}"
    );
    assert!(log.lines().all(|l| l.starts_with("telespool: ")), "{log}");
}

#[test]
fn a_spool_that_cannot_be_written_answers_503_with_the_reason_and_recovers() {
    let sb = Sandbox::new();
    let mut listener = start_listen(&sb, &[], &[]);
    // A newer telespool took the spool over: this one must not write to it.
    let version: i64 = sb
        .db()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    sb.db().pragma_update(None, "user_version", 99).unwrap();
    let reply = post(listener.addr, &upstream_body_bytes());
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("newer telespool"), "{reply:?}");
    let log = listener.log_when(Duration::from_secs(5), |l| l.contains(" 503 "));
    assert!(log.contains(" 503 "), "logged even without -v: {log}");
    assert!(listener.is_running());
    sb.db()
        .pragma_update(None, "user_version", version)
        .unwrap();
    assert_eq!(post(listener.addr, &upstream_body_bytes()).status, 200);
    assert_eq!(sb.inspect_env(&[KEEP_OLD_EVENTS])["queued"], 2);
}

#[test]
fn binding_an_address_other_hosts_reach_needs_allow_remote() {
    let sb = Sandbox::new();
    let out = sb.run(&["listen", "--bind", "0.0.0.0:0"]);
    assert_exit(&out, 64);
    let err = stderr(&out);
    assert!(err.contains("--allow-remote"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!sb.spool.exists(), "refused before touching the spool");

    let listener = start_listen(&sb, &["--bind", "0.0.0.0:0", "--allow-remote"], &[]);
    assert!(
        listener
            .banner
            .contains("anyone who can reach this port can add events to this spool"),
        "{}",
        listener.banner
    );
    assert_eq!(post(listener.addr, &upstream_body_bytes()).status, 200);
}

#[test]
fn a_bad_bind_address_is_a_usage_error_and_a_taken_port_is_69() {
    let sb = Sandbox::new();
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "[::1"] {
        let out = sb.run(&["listen", "--bind", bad]);
        assert_exit(&out, 64);
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = sb.run(&["listen", "--bind", &format!("127.0.0.1:{port}")]);
    assert_exit(&out, 69);
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_says_which_paths_and_statuses() {
    let sb = Sandbox::new();
    let out = sb.run(&["listen", "--help"]);
    assert_ok(&out);
    let help = stdout(&out);
    for needle in [
        "any path",
        "/v1.1/events/json",
        "415",
        "413",
        "503",
        "read once",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}
