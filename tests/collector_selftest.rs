//! Proves that the test collector (tests/common) does what it says, with ureq and raw TCP
//! clients, before the upload tests rely on it.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::collector::{validate_envelope, Chaos, Collector, Outcome, Reply};
use common::spec_body::{spec_body, spec_task_event};
use common::tls::{ServerCert, TestCa};
use serde_json::{json, Value};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

const SECOND: Duration = Duration::from_secs(1);

fn task_event() -> Value {
    spec_task_event("redacted")
}

fn job_event() -> Value {
    json!({"ts": "2026-11-20T01:02:04.000Z", "name": "LauncherJobEvent",
           "parameters": {"executorType": "slurm", "deploymentType": "vllm", "model": "m",
                          "tasks": ["mmlu", "gsm8k"], "exporters": [], "status": "started"}})
}

/// The example body of SPEC §5, with the given events.
fn envelope(events: Vec<Value>) -> Value {
    spec_body("session-1", "25.11", Value::Array(events))
}

fn agent(timeout: Duration, ca: Option<&TestCa>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false);
    if let Some(ca) = ca {
        let cert = Certificate::from_pem(ca.pem().as_bytes()).unwrap();
        let roots = RootCerts::new_with_certs(&[cert]);
        config = config.tls_config(TlsConfig::builder().root_certs(roots).build());
    }
    config.build().new_agent()
}

/// POSTs `body` as JSON; the status, or the transport error.
fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<u16, ureq::Error> {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(&bytes[..])?;
    response.body_mut().read_to_vec()?; // a connection goes back to the pool only once read
    Ok(response.status().as_u16())
}

/// A raw connection for what ureq cannot be made to do (pipelining, chunking, garbage).
fn raw(c: &Collector) -> BufReader<TcpStream> {
    let tcp = TcpStream::connect(c.addr()).unwrap();
    tcp.set_read_timeout(Some(5 * SECOND)).unwrap();
    BufReader::new(tcp)
}

fn send(conn: &mut BufReader<TcpStream>, request: &str) {
    conn.get_mut().write_all(request.as_bytes()).unwrap();
}

/// Reads one response: its status and body.
fn receive(conn: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut status_line = String::new();
    if conn.read_line(&mut status_line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)?;
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, String::from_utf8(body).unwrap()))
}

#[test]
fn a_valid_post_is_recorded_acknowledged_and_flattened() {
    let c = Collector::start();
    assert!(c.url().starts_with("http://127.0.0.1:") && c.url().ends_with("/v1.1/events/json"));
    let body = envelope(vec![task_event(), job_event()]);
    assert_eq!(
        post(&agent(5 * SECOND, None), &c.url(), &body).unwrap(),
        200
    );

    let requests = c.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1.1/events/json")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), Some(body));
    assert_eq!(
        (r.outcome, r.invalid.clone(), r.event_count()),
        (Outcome::Answered(200), None, 2)
    );

    let delivered = c.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        (
            delivered[0].session_id.as_str(),
            delivered[0].client_ver.as_str()
        ),
        ("session-1", "25.11")
    );
    assert_eq!(
        (delivered[1].name.as_str(), delivered[1].ts.as_str()),
        ("LauncherJobEvent", "2026-11-20T01:02:04.000Z")
    );
    assert_eq!(delivered[0].parameters["model"], "redacted");
    c.assert_valid();
}

#[test]
fn validate_envelope_accepts_the_spec_and_names_each_deviation() {
    assert_eq!(
        validate_envelope(&envelope(vec![task_event(), job_event()])),
        Ok(())
    );
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation)> = vec![
        ("missing key \"userId\"", |b| {
            drop(b.as_object_mut().unwrap().remove("userId"))
        }),
        ("unexpected key \"hostname\"", |b| {
            b["hostname"] = json!("node1")
        }),
        ("clientId: expected", |b| {
            b["clientId"] = json!(14399890258381784u64)
        }),
        ("eventProtocol: expected \"1.6\"", |b| {
            b["eventProtocol"] = json!("1.7")
        }),
        ("deviceGdprTechOptIn", |b| {
            b["deviceGdprTechOptIn"] = json!("none")
        }),
        ("sentTs", |b| b["sentTs"] = json!("2026-11-24T06:40:00Z")),
        ("sentTs", |b| {
            b["sentTs"] = json!("2026-13-24T06:40:00.123Z")
        }),
        ("sessionId", |b| b["sessionId"] = json!("")),
        ("clientVer", |b| b["clientVer"] = json!(null)),
        ("events: expected a non-empty list", |b| {
            b["events"] = json!([])
        }),
        ("events[0].ts", |b| {
            b["events"][0]["ts"] = json!("2026-11-20 01:02:03.456Z")
        }),
        ("events[0]: unexpected key \"sessionId\"", |b| {
            b["events"][0]["sessionId"] = json!("s")
        }),
        ("events[0].name: unknown event kind", |b| {
            b["events"][0]["name"] = json!("OtherEvent")
        }),
        (
            "events[0].parameters: missing key \"executionDurationSeconds\"",
            |b| {
                drop(
                    b["events"][0]["parameters"]
                        .as_object_mut()
                        .unwrap()
                        .remove("executionDurationSeconds"),
                )
            },
        ),
        ("events[0].parameters: unexpected key \"user\"", |b| {
            b["events"][0]["parameters"]["user"] = json!("me")
        }),
        ("events[0].parameters.status", |b| {
            b["events"][0]["parameters"]["status"] = json!("done")
        }),
        ("events[0].parameters.model", |b| {
            b["events"][0]["parameters"]["model"] = json!("m".repeat(257))
        }),
        ("events[0].parameters.task", |b| {
            b["events"][0]["parameters"]["task"] = json!("a\nb")
        }),
        (
            "executionDurationSeconds: expected a finite number >= 0",
            |b| b["events"][0]["parameters"]["executionDurationSeconds"] = json!(-1.0),
        ),
        ("events[1].parameters: missing key \"exporters\"", |b| {
            drop(
                b["events"][1]["parameters"]
                    .as_object_mut()
                    .unwrap()
                    .remove("exporters"),
            )
        }),
        ("events[1].parameters.tasks[1]", |b| {
            b["events"][1]["parameters"]["tasks"][1] = json!("")
        }),
        ("events[1].parameters.executorType", |b| {
            b["events"][1]["parameters"]["executorType"] = json!("x".repeat(65))
        }),
    ];
    for (expected, mutate) in cases {
        let mut body = envelope(vec![task_event(), job_event()]);
        mutate(&mut body);
        let error = validate_envelope(&body).expect_err(expected);
        assert!(
            error.contains(expected),
            "expected {expected:?} in {error:?}"
        );
    }
}

#[test]
fn invalid_posts_are_answered_as_scripted_but_reported() {
    let c = Collector::start();
    let mut bad = envelope(vec![task_event()]);
    bad["extra"] = json!(1);
    assert_eq!(post(&agent(5 * SECOND, None), &c.url(), &bad).unwrap(), 200);

    let mut conn = raw(&c);
    for (headers, body) in [
        ("Content-Type: text/plain", r#"{"a":1}"#),
        (
            "Content-Type: application/json\r\nContent-Encoding: gzip",
            r#"{"a":1}"#,
        ),
        ("Content-Type: application/json", "not json"),
    ] {
        send(
            &mut conn,
            &format!(
                "POST /x HTTP/1.1\r\nHost: h\r\n{headers}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(receive(&mut conn).unwrap().0, 200);
    }
    send(&mut conn, "GET /health HTTP/1.1\r\nHost: h\r\n\r\n"); // not a POST: not validated
    assert_eq!(receive(&mut conn).unwrap().0, 200);

    let errors = c.validation_errors();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (error, expected) in
        errors
            .iter()
            .zip(["\"extra\"", "Content-Type", "Content-Encoding", "not JSON"])
    {
        assert!(error.contains(expected), "{error}");
    }
    let assert_valid = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.assert_valid()));
    assert!(assert_valid.is_err());
}

#[test]
fn queued_replies_come_in_order_then_the_default() {
    let c = Collector::start();
    c.enqueue(Reply::status(503).header("Retry-After", "2"));
    c.enqueue_all([
        Reply::redirect(308, "http://elsewhere.invalid/"),
        Reply::status(429),
    ]);
    c.set_default(Reply::status(202).body("{}"));
    let agent = agent(5 * SECOND, None);
    let body = envelope(vec![task_event()]);

    let send = || {
        let mut response = agent
            .post(&c.url())
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        response.body_mut().read_to_vec().unwrap();
        response
    };
    let response = send();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers().get("retry-after").unwrap(), "2");
    let response = send();
    assert_eq!(response.status().as_u16(), 308);
    assert_eq!(
        response.headers().get("location").unwrap(),
        "http://elsewhere.invalid/"
    );
    for expected in [429, 202, 202] {
        assert_eq!(post(&agent, &c.url(), &body).unwrap(), expected);
    }
    let statuses: Vec<_> = c.requests().iter().map(|r| r.status()).collect();
    assert_eq!(statuses, [503, 308, 429, 202, 202].map(Some));
    assert_eq!(c.delivered_count(), 2, "only the 2xx answers deliver");
    assert_eq!(c.connections(), 1, "ureq kept the connection alive");
}

#[test]
fn keep_alive_chunked_bodies_and_connection_close() {
    let c = Collector::start();
    let mut conn = raw(&c);
    send(
        &mut conn,
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(receive(&mut conn).unwrap().0, 200);
    send(&mut conn, "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n");
    assert_eq!(receive(&mut conn).unwrap().0, 200);
    send(&mut conn, "POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(receive(&mut conn).unwrap().0, 100);
    assert_eq!(receive(&mut conn).unwrap().0, 200);
    assert_eq!(
        conn.read(&mut [0; 1]).unwrap(),
        0,
        "closed after Connection: close"
    );

    let bodies: Vec<_> = c.requests().into_iter().map(|r| (r.path, r.body)).collect();
    let expected = [("/a", &b"hello"[..]), ("/b", b"abcdefg"), ("/c", b"hi")];
    assert_eq!(bodies, expected.map(|(p, b)| (p.to_string(), b.to_vec())));
    assert_eq!(c.connections(), 1);
}

#[test]
fn malformed_http_is_reported() {
    let c = Collector::start();
    let mut conn = raw(&c);
    send(&mut conn, "NONSENSE\r\n\r\n");
    assert_eq!(
        conn.read(&mut [0; 1]).unwrap(),
        0,
        "the collector hangs up on garbage"
    );
    let errors = c.validation_errors();
    assert!(
        errors.len() == 1 && errors[0].contains("malformed HTTP"),
        "{errors:?}"
    );
    assert_eq!(c.request_count(), 0);
}

#[test]
fn an_answer_delayed_beyond_the_client_timeout_is_never_delivered() {
    let c = Collector::start();
    c.enqueue(Reply::ok().delay(Duration::from_millis(800)));
    c.enqueue(Reply::status(201).delay(Duration::from_millis(100)));
    let body = envelope(vec![task_event()]);

    let started = Instant::now();
    let err = post(&agent(Duration::from_millis(200), None), &c.url(), &body).unwrap_err();
    assert!(matches!(err, ureq::Error::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(c.outcomes(), [Outcome::Pending]);
    assert!(c.wait_settled(3 * SECOND));
    assert_eq!(c.outcomes(), [Outcome::ClientGone]);

    // A delay within the client's timeout is just slow.
    let started = Instant::now();
    assert_eq!(
        post(&agent(5 * SECOND, None), &c.url(), &body).unwrap(),
        201
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(c.outcomes(), [Outcome::ClientGone, Outcome::Answered(201)]);
    assert_eq!(c.delivered_count(), 1);
}

#[test]
fn stall_close_and_reset_end_the_connection_without_an_answer() {
    let c = Collector::start();
    c.enqueue_all([
        Reply::stall(Duration::from_millis(300)),
        Reply::close(),
        Reply::reset(),
    ]);
    let request = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";

    let started = Instant::now();
    let mut conn = raw(&c);
    send(&mut conn, request);
    assert_eq!(conn.read(&mut [0; 1]).unwrap(), 0, "stall ends in a FIN");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let mut conn = raw(&c);
    send(&mut conn, request);
    assert_eq!(conn.read(&mut [0; 1]).unwrap(), 0, "close is a FIN");

    let mut conn = raw(&c);
    send(&mut conn, request);
    let reset = conn.read(&mut [0; 1]).unwrap_err();
    assert_eq!(reset.kind(), ErrorKind::ConnectionReset);

    assert_eq!(c.outcomes(), [Outcome::HungUp; 3]);
    assert_eq!(c.delivered_count(), 0);

    // And a real client sees a transport error, not a status.
    c.enqueue(Reply::reset());
    assert!(post(
        &agent(5 * SECOND, None),
        &c.url(),
        &envelope(vec![task_event()])
    )
    .is_err());
}

#[test]
fn size_rules_answer_413_before_the_queue_is_consulted() {
    let c = Collector::start();
    let agent = agent(5 * SECOND, None);
    let one = envelope(vec![task_event()]);
    let three = envelope(vec![task_event(), task_event(), job_event()]);
    let one_len = one.to_string().len();

    c.set_max_body(Some(one_len));
    c.enqueue(Reply::status(503));
    assert_eq!(post(&agent, &c.url(), &three).unwrap(), 413);
    assert_eq!(
        post(&agent, &c.url(), &one).unwrap(),
        503,
        "the 413 did not use up the queue"
    );
    c.set_max_body(None);

    c.set_max_events(Some(2));
    assert_eq!(post(&agent, &c.url(), &three).unwrap(), 413);
    assert_eq!(
        post(&agent, &c.url(), &envelope(vec![task_event(), job_event()])).unwrap(),
        200
    );
    assert_eq!(c.delivered_count(), 2);
    c.assert_valid();
}

/// The replies chaos planned for `n` sequential requests.
fn chaos_run(chaos: Chaos, n: usize) -> Vec<Reply> {
    let c = Collector::start();
    c.set_chaos(Some(chaos));
    let agent = agent(5 * SECOND, None);
    let body = envelope(vec![task_event()]);
    for _ in 0..n {
        let _ = post(&agent, &c.url(), &body);
    }
    c.requests().into_iter().map(|r| r.reply).take(n).collect()
}

#[test]
fn chaos_is_reproducible_from_its_seed_and_mixes_faults() {
    let stall = Duration::from_millis(50);
    let first = chaos_run(Chaos::new(7, 0.5, stall), 30);
    assert_eq!(
        first,
        chaos_run(Chaos::new(7, 0.5, stall), 30),
        "same seed, same faults"
    );
    assert_ne!(first, chaos_run(Chaos::new(8, 0.5, stall), 30));

    let fault_count = first.iter().filter(|r| **r != Reply::ok()).count();
    assert!(
        (5..=25).contains(&fault_count),
        "{fault_count} faults in 30 at p=0.5"
    );
    for fault in Chaos::new(7, 0.5, stall).faults {
        assert!(first.contains(&fault), "{fault:?} never drawn");
    }
    assert!(chaos_run(Chaos::new(7, 0.0, stall), 10)
        .iter()
        .all(|r| *r == Reply::ok()));
    assert!(chaos_run(Chaos::new(7, 1.0, stall), 10)
        .iter()
        .all(|r| *r != Reply::ok()));
}

#[test]
fn concurrent_clients_are_not_held_up_by_a_stall_and_drop_ends_it() {
    let c = Collector::start();
    c.enqueue(Reply::stall(60 * SECOND));
    let url = c.url();
    let stalled = thread::spawn(move || {
        post(
            &agent(90 * SECOND, None),
            &url,
            &envelope(vec![task_event()]),
        )
    });
    assert!(c.wait_for_requests(1, 5 * SECOND));

    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = c.url();
            thread::spawn(move || {
                let agent = agent(5 * SECOND, None);
                (0..5)
                    .map(|_| post(&agent, &url, &envelope(vec![job_event()])).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), [200; 5]);
    }
    assert!(started.elapsed() < 5 * SECOND);
    assert_eq!(c.request_count(), 41);
    assert_eq!(c.delivered_count(), 40);

    let addr = c.addr();
    let started = Instant::now();
    drop(c);
    assert!(
        started.elapsed() < 2 * SECOND,
        "drop does not wait out the stall"
    );
    assert!(
        stalled.join().unwrap().is_err(),
        "the stalled client is cut off"
    );
    assert!(
        TcpStream::connect_timeout(&addr, SECOND).is_err(),
        "the port is closed"
    );
}

#[test]
fn https_with_the_test_ca_behaves_like_http() {
    let ca = TestCa::new();
    let pem = std::fs::read_to_string(ca.pem_path()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let c = Collector::start_https(&ca, ServerCert::Valid);
    assert!(c.url().starts_with("https://127.0.0.1:"));
    c.enqueue_all([
        Reply::status(503).header("Retry-After", "2"),
        Reply::reset(),
    ]);
    let agent = agent(5 * SECOND, Some(&ca));
    let body = envelope(vec![task_event()]);
    assert_eq!(post(&agent, &c.url(), &body).unwrap(), 503);
    assert!(post(&agent, &c.url(), &body).is_err());
    assert_eq!(post(&agent, &c.url(), &body).unwrap(), 200);
    let localhost = c.url().replace("127.0.0.1", "localhost");
    assert_eq!(post(&agent, &localhost, &body).unwrap(), 200);
    assert_eq!(
        c.outcomes(),
        [
            Outcome::Answered(503),
            Outcome::HungUp,
            Outcome::Answered(200),
            Outcome::Answered(200)
        ]
    );
    assert_eq!(c.delivered_count(), 2);
    c.assert_valid();
}

#[test]
fn https_is_refused_without_the_ca_or_with_a_bad_certificate() {
    let ca = TestCa::new();
    let body = envelope(vec![task_event()]);
    let cases = [
        (ServerCert::Valid, false),
        (ServerCert::WrongHost, true),
        (ServerCert::Expired, true),
    ];
    for (kind, trust_ca) in cases {
        let c = Collector::start_https(&ca, kind);
        let agent = agent(5 * SECOND, trust_ca.then_some(&ca));
        let err =
            post(&agent, &c.url(), &body).expect_err(&format!("{kind:?}, CA trusted: {trust_ca}"));
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{kind:?}: {err}"
        );
        assert_eq!(c.connections(), 1, "{kind:?}: the client did connect");
        assert_eq!(c.request_count(), 0);
        c.assert_valid();
    }
}
