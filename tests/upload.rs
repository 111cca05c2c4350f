//! `telespool upload` (SPEC §5): what leaves, in which requests, and what every kind of
//! answer does to the spool. Each test records events with the real `record`, uploads
//! with the built binary to the test collector on 127.0.0.1, and checks both sides.

mod common;
mod upload_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::collector::{Collector, Outcome, Reply};
use common::sandbox::*;
use serde_json::Value;
use upload_support::*;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn everything_is_delivered_once_one_stream_per_body_across_sessions_and_versions() {
    let sb = Sandbox::new();
    let c = Collector::start();
    let mut expected = BTreeMap::new();
    for (session, client, n) in [
        ("sess-a", "0.2.8", 7),
        ("sess-a", "0.2.6", 5),
        ("sess-b", "0.2.8", 120),
        ("sess-c", "undefined", 1),
    ] {
        record_events(&sb, n, session, client, "my/model");
        expected.insert((session.to_string(), client.to_string()), n);
    }
    // And one from flags, with a random session id of its own.
    sb.record_task("mmlu", "my/model", "started");

    let out = upload(&sb, &c.url(), &[]);
    assert_ok(&out);
    c.assert_valid();

    let delivered = c.delivered();
    assert_eq!(delivered.len(), 134);
    let mut seen = BTreeMap::new();
    for event in &delivered {
        *seen
            .entry((event.session_id.clone(), event.client_ver.clone()))
            .or_insert(0) += 1;
    }
    for (stream, n) in &expected {
        assert_eq!(seen.get(stream), Some(n), "{stream:?}");
    }
    // Nothing twice: every (session, client, task) appears once.
    let mut keys: Vec<_> = delivered
        .iter()
        .map(|e| {
            (
                &e.session_id,
                &e.client_ver,
                e.parameters["task"].to_string(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 134);
    // Each body carries one stream only, and at most 100 events.
    for r in c.requests() {
        assert!(r.event_count() <= 100);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("content-encoding").is_none());
    }
    assert_eq!(c.request_count(), 6); // 7, 5, 100 + 20, 1, 1

    let s = summary(&sb);
    assert_eq!(s["queued"], 0);
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["last_upload"]["result"], "ok");
    assert!(s["next_attempt"].is_null());
    let err = stderr(&out);
    assert!(err.contains("uploaded 134 events in 6 requests"), "{err}");
}

#[test]
fn two_hundred_fifty_events_go_in_three_batches_in_order() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 250, "s", "1", "m");
    assert_ok(&upload(&sb, &c.url(), &[]));
    let sizes: Vec<usize> = c.requests().iter().map(|r| r.event_count()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let tasks: Vec<String> = c
        .delivered()
        .iter()
        .map(|e| e.parameters["task"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
    assert_eq!(tasks, expected, "arrival order is kept");
}

#[test]
fn batch_settings_are_honoured() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 30, "s", "1", "m");
    let out = upload_env(&sb, &c.url(), &[], &[("TELESPOOL_BATCH_EVENTS", "7")]);
    assert_ok(&out);
    let sizes: Vec<usize> = c.requests().iter().map(|r| r.event_count()).collect();
    assert_eq!(sizes, [7, 7, 7, 7, 2]);

    // A byte limit: every body stays within it.
    record_events(&sb, 30, "s", "1", "m");
    let out = upload_env(&sb, &c.url(), &[], &[("TELESPOOL_BATCH_BYTES", "4KiB")]);
    assert_ok(&out);
    let later: Vec<_> = c.requests().into_iter().skip(5).collect();
    assert!(later.len() > 1);
    assert!(later.iter().all(|r| r.body.len() <= 4096));
    assert_eq!(later.iter().map(|r| r.event_count()).sum::<usize>(), 30);
}

#[test]
fn level_1_at_upload_redacts_events_recorded_at_level_2() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 3, "s", "1", "secret-org/secret-model");
    let out = upload_env(
        &sb,
        &c.url(),
        &[],
        &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")],
    );
    assert_ok(&out);
    c.assert_valid();
    let bodies: Vec<Value> = c.requests().iter().filter_map(|r| r.json()).collect();
    assert_eq!(models(&bodies), ["redacted", "redacted", "redacted"]);
    assert!(c
        .requests()
        .iter()
        .all(|r| !contains(&r.body, "secret-model")));
}

#[test]
fn level_0_at_upload_sends_nothing_and_says_so() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 3, "s", "1", "m");
    let out = upload_env(
        &sb,
        &c.url(),
        &[],
        &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "0")],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("level is 0"), "{}", stderr(&out));
    assert_eq!(c.connections(), 0);
    assert_eq!(sb.queued(), 3);
}

#[test]
fn a_500_keeps_everything_and_a_later_run_delivers_it_once() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 150, "s", "1", "m");
    c.enqueue(Reply::status(500));
    let out = upload(&sb, &c.url(), &[]);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("500") && err.contains(&c.url()), "{err}");
    assert_eq!(c.request_count(), 1, "the run stops at the first failure");
    let s = summary(&sb);
    assert_eq!(s["queued"], 150);
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["last_upload"]["result"], "retry");
    assert!(s["next_attempt"].is_string());

    // The backoff holds the next run back; --now overrides it.
    let out = upload(&sb, &c.url(), &[]);
    assert_exit(&out, 75);
    assert_eq!(c.request_count(), 1);
    let out = upload(&sb, &c.url(), &["--now"]);
    assert_ok(&out);
    assert_eq!(c.delivered_count(), 150);
    let s = summary(&sb);
    assert_eq!(s["queued"], 0);
    assert_eq!(s["last_upload"]["result"], "ok");
    assert!(s["next_attempt"].is_null(), "a success resets the backoff");
}

#[test]
fn retry_after_is_honoured_by_the_next_run_and_now_ignores_it() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 5, "s", "1", "m");
    c.enqueue(Reply::status(503).header("Retry-After", "3600"));
    let before = chrono::Utc::now();
    assert_exit(&upload(&sb, &c.url(), &[]), 75);
    let s = summary(&sb);
    let due = chrono::DateTime::parse_from_rfc3339(s["next_attempt"].as_str().unwrap()).unwrap();
    let wait = due.signed_duration_since(before).num_seconds();
    assert!((3590..=3700).contains(&wait), "waits {wait} s");

    let out = upload(&sb, &c.url(), &[]);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("due"), "{}", stderr(&out));
    let quiet = upload(&sb, &c.url(), &["--quiet"]);
    assert_exit(&quiet, 75);
    assert_eq!(stderr(&quiet), "", "silent with --quiet");
    assert_eq!(c.request_count(), 1, "nothing sent before it is due");

    assert_ok(&upload(&sb, &c.url(), &["--now"]));
    assert_eq!(c.delivered_count(), 5);
}

#[test]
fn an_http_date_retry_after_counts_too() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 1, "s", "1", "m");
    let at = std::time::SystemTime::now() + Duration::from_secs(7200);
    c.enqueue(Reply::status(503).header("Retry-After", &httpdate::fmt_http_date(at)));
    assert_exit(&upload(&sb, &c.url(), &[]), 75);
    let due = summary(&sb)["next_attempt"].as_str().unwrap().to_string();
    let due = chrono::DateTime::parse_from_rfc3339(&due).unwrap();
    let wait = due.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((7100..=7300).contains(&wait), "waits {wait} s");
}

#[test]
fn backoff_doubles_with_each_failed_run() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 1, "s", "1", "m");
    c.set_default(Reply::status(502));
    let mut waits = Vec::new();
    for _ in 0..3 {
        assert_exit(&upload(&sb, &c.url(), &["--now"]), 75);
        let due = summary(&sb)["next_attempt"].as_str().unwrap().to_string();
        let due = chrono::DateTime::parse_from_rfc3339(&due).unwrap();
        waits.push(due.signed_duration_since(chrono::Utc::now()).num_seconds());
    }
    assert!((25..=30).contains(&waits[0]), "{waits:?}");
    assert!((55..=60).contains(&waits[1]), "{waits:?}");
    assert!((115..=120).contains(&waits[2]), "{waits:?}");
}

#[test]
fn too_many_requests_and_request_timeout_are_temporary() {
    for code in [429, 408] {
        let sb = Sandbox::new();
        let c = Collector::start();
        record_events(&sb, 4, "s", "1", "m");
        c.enqueue(Reply::status(code));
        let out = upload(&sb, &c.url(), &[]);
        assert_exit(&out, 75);
        assert!(stderr(&out).contains(&code.to_string()));
        assert_eq!(sb.queued(), 4, "{code}");
        assert_ok(&upload(&sb, &c.url(), &["--now"]));
        assert_eq!(c.delivered_count(), 4, "{code}");
    }
}

#[test]
fn a_refused_connection_is_temporary() {
    let sb = Sandbox::new();
    record_events(&sb, 2, "s", "1", "m");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1.1/events/json");
    let out = upload(&sb, &url, &[]);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(
        err.contains("connection refused") && err.contains(&url),
        "{err}"
    );
    let s = summary(&sb);
    assert_eq!(
        (s["queued"].as_u64(), s["in_flight"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(s["last_upload"]["result"], "retry");
}

#[test]
fn a_stalled_endpoint_times_out_within_the_bound() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 3, "s", "1", "m");
    c.set_default(Reply::stall(Duration::from_secs(30)));
    let started = Instant::now();
    let out = upload(&sb, &c.url(), &["--timeout", "2s"]);
    let took = started.elapsed();
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("timeout"), "{}", stderr(&out));
    assert!(took < 10 * SECOND, "took {took:?}");
    assert!(took >= 2 * SECOND, "took {took:?}");
    assert_eq!(sb.queued(), 3);
    // The same bound from the environment.
    let started = Instant::now();
    let out = upload_env(&sb, &c.url(), &["--now"], &[("TELESPOOL_TIMEOUT", "1s")]);
    assert_exit(&out, 75);
    assert!(started.elapsed() < 8 * SECOND);
}

#[test]
fn a_413_splits_the_batch_in_halves_until_it_fits() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 100, "s", "1", "m");
    c.set_max_events(Some(30));
    assert_ok(&upload(&sb, &c.url(), &[]));
    let sizes: Vec<(usize, Option<u16>)> = c
        .requests()
        .iter()
        .map(|r| (r.event_count(), r.status()))
        .collect();
    assert_eq!(
        sizes,
        [
            (100, Some(413)),
            (50, Some(413)),
            (25, Some(200)),
            (25, Some(200)),
            (50, Some(413)),
            (25, Some(200)),
            (25, Some(200)),
        ]
    );
    assert_eq!(c.delivered_count(), 100);
    assert_eq!(queued_and_rejected(&summary(&sb)), (0, 0));
}

#[test]
fn a_single_event_still_too_large_is_rejected_and_the_rest_delivered() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 3, "s", "1", "m");
    let tasks: Vec<String> = (0..200).map(|i| format!("--task=task-{i:04}")).collect();
    let mut args = vec![
        "record",
        "launcher-job",
        "--executor",
        "slurm",
        "--deployment",
        "vllm",
        "--model",
        "m",
        "--status",
        "started",
    ];
    args.extend(tasks.iter().map(String::as_str));
    assert_ok(&sb.run_env(&args, &[("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", "s")]));
    record_events(&sb, 3, "s", "1", "m");
    c.set_max_body(Some(3000)); // the big event alone is larger than this

    let out = upload(&sb, &c.url(), &[]);
    assert_exit(&out, 65);
    let err = stderr(&out);
    assert!(err.contains("rejected 1 event"), "{err}");
    assert_eq!(c.delivered_count(), 6);
    let s = summary(&sb);
    assert_eq!(queued_and_rejected(&s), (0, 1));
    assert_eq!(s["last_upload"]["result"], "rejected");

    // Never resent: the next run has nothing to do.
    let n = c.request_count();
    let out = upload(&sb, &c.url(), &[]);
    assert_ok(&out);
    assert_eq!(c.request_count(), n);
}

#[test]
fn bad_request_and_unprocessable_are_rejected_never_resent() {
    for code in [400, 422] {
        let sb = Sandbox::new();
        let c = Collector::start();
        record_events(&sb, 10, "s", "1", "m");
        record_events(&sb, 4, "other", "1", "m");
        c.enqueue(Reply::status(code).body("schema says no"));
        let out = upload(&sb, &c.url(), &[]);
        assert_exit(&out, 65);
        let err = stderr(&out);
        assert!(err.contains("rejected 10 events"), "{err}");
        assert!(err.contains("schema says no"), "{err}");
        assert_eq!(c.delivered_count(), 4, "the rest is still delivered");
        let s = summary(&sb);
        assert_eq!(queued_and_rejected(&s), (0, 10));

        let n = c.request_count();
        let out = upload(&sb, &c.url(), &[]);
        assert_ok(&out);
        assert_eq!(
            c.request_count(),
            n,
            "{code}: rejected events are never resent"
        );
        assert_eq!(summary(&sb)["rejected"], 10);
        // `purge --rejected` removes them.
        assert_ok(&sb.run(&["purge", "--rejected", "--yes"]));
        assert_eq!(summary(&sb)["rejected"], 0);
    }
}

#[test]
fn configuration_answers_stop_the_run_with_69_naming_the_endpoint() {
    let cases = [
        Reply::status(401),
        Reply::status(403),
        Reply::status(404),
        Reply::status(405),
        Reply::redirect(301, "https://elsewhere.example/v1.1/events/json"),
        Reply::redirect(308, "https://elsewhere.example/v1.1/events/json"),
    ];
    for reply in cases {
        let sb = Sandbox::new();
        let c = Collector::start();
        record_events(&sb, 150, "s", "1", "m");
        c.set_default(reply.clone());
        let out = upload(&sb, &c.url(), &[]);
        assert_exit(&out, 69);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&c.url()), "{reply:?}: {err}");
        assert_eq!(c.request_count(), 1, "{reply:?}: the run stops");
        let s = summary(&sb);
        assert_eq!(s["queued"], 150);
        assert_eq!(s["in_flight"], 0);
        assert_eq!(s["last_upload"]["result"], "refused");
        if let Reply::Answer { status: 301, .. } = reply {
            assert!(err.contains("elsewhere.example"), "{err}");
        }
        if let Reply::Answer { status: 401, .. } = reply {
            assert!(err.contains("credentials"), "{err}");
        }
    }
}

#[test]
fn plain_http_to_a_remote_host_is_refused_without_a_connection() {
    let sb = Sandbox::new();
    record_events(&sb, 1, "s", "1", "m");
    // 192.0.2.1 (TEST-NET-1) must never be contacted: the refusal comes first.
    let started = Instant::now();
    let out = upload(&sb, "http://192.0.2.1/v1.1/events/json", &[]);
    assert_exit(&out, 69);
    assert!(started.elapsed() < 5 * SECOND);
    let err = stderr(&out);
    assert!(
        err.contains("plain http") && err.contains("--allow-insecure"),
        "{err}"
    );
    assert_eq!(summary(&sb)["queued"], 1);
    // The same from the environment.
    let out = sb.run_env(
        &["upload"],
        &[(
            "NEMO_EVALUATOR_TELEMETRY_ENDPOINT",
            "http://example.invalid/v1.1/events/json",
        )],
    );
    assert_exit(&out, 69);
}

#[test]
fn loopback_names_are_fine_over_plain_http() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 2, "s", "1", "m");
    let url = format!("http://localhost:{}/v1.1/events/json", c.addr().port());
    // Through the environment variable, as upstream's clients are pointed.
    let out = sb.run_env(&["upload"], &[("NEMO_EVALUATOR_TELEMETRY_ENDPOINT", &url)]);
    assert_ok(&out);
    assert_eq!(c.delivered_count(), 2);
}

/// Records 5 events and starts an upload whose first request the collector holds for
/// 6 s; returns once that request has arrived.
fn upload_held_in_its_first_request(sb: &Sandbox, c: &Collector) -> std::process::Child {
    record_events(sb, 5, "s", "1", "m");
    c.enqueue(Reply::ok().delay(6 * SECOND));
    let upload = spawn_upload(sb, &c.url(), &[], &[]);
    assert!(c.wait_for_requests(1, 15 * SECOND));
    upload
}

#[test]
fn a_second_upload_while_one_runs_exits_0_at_once() {
    let sb = Sandbox::new();
    let c = Collector::start();
    let first = upload_held_in_its_first_request(&sb, &c);

    let started = Instant::now();
    let second = upload(&sb, &c.url(), &[]);
    assert_ok(&second);
    assert!(started.elapsed() < 4 * SECOND, "{:?}", started.elapsed());
    assert!(
        stderr(&second).contains("another upload is running"),
        "{}",
        stderr(&second)
    );
    assert_eq!(c.request_count(), 1);

    let first = finish(first, 20 * SECOND);
    assert_ok(&first);
    assert_eq!(c.delivered_count(), 5);
}

#[test]
fn recording_while_an_upload_waits_on_a_slow_endpoint_finishes_at_once() {
    let sb = Sandbox::new();
    let c = Collector::start();
    let upload = upload_held_in_its_first_request(&sb, &c);

    let started = Instant::now();
    sb.record_task("during", "m", "success");
    let took = started.elapsed();
    assert!(
        took < 3 * SECOND,
        "record took {took:?} while an upload waited"
    );
    assert_eq!(summary(&sb)["in_flight"], 5);

    assert_ok(&finish(upload, 20 * SECOND));
    // The new event came after the run began: it waits for the next one.
    assert_eq!(c.delivered_count(), 5);
    assert_eq!(sb.queued(), 1);
}

#[test]
fn an_uploader_killed_mid_request_loses_nothing_once_its_lease_runs_out() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 40, "s", "1", "m");
    let env = [("TELESPOOL_LEASE", "5s")];
    c.enqueue(Reply::stall(Duration::from_secs(20)));
    let mut victim = spawn_upload(&sb, &c.url(), &["--timeout", "2s"], &env);
    assert!(c.wait_for_requests(1, 15 * SECOND));
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();

    // Claimed by the dead run: the next run sends nothing until the lease ends.
    sb.assert_counts_agree();
    let s = summary(&sb);
    assert_eq!(
        (s["queued"].as_u64(), s["in_flight"].as_u64()),
        (Some(40), Some(40))
    );
    let out = upload_env(&sb, &c.url(), &["--timeout", "2s"], &env);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("claimed by another upload"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.request_count(), 1);

    let delivered = eventually(15 * SECOND, || {
        let out = upload_env(&sb, &c.url(), &["--timeout", "2s"], &env);
        assert_ok(&out);
        c.delivered_count() == 40
    });
    assert!(delivered, "delivered {} of 40", c.delivered_count());
    let mut tasks: Vec<String> = c
        .delivered()
        .iter()
        .map(|e| e.parameters["task"].to_string())
        .collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 40, "none lost, none twice");
    assert_eq!(sb.queued(), 0);
    sb.assert_counts_agree();
}

#[test]
fn dry_run_prints_the_bodies_and_changes_nothing() {
    let sb = Sandbox::new();
    let c = Collector::start();
    // No spool yet: nothing to show, and nothing created.
    let out = upload(&sb, &c.url(), &["--dry-run"]);
    assert_ok(&out);
    assert!(!sb.spool.exists());

    record_events(&sb, 150, "s", "1", "secret/model");
    record_events(&sb, 2, "t", "2", "secret/model");
    let before = std::fs::read(sb.db_file()).unwrap();
    let out = upload_env(
        &sb,
        &c.url(),
        &["--dry-run"],
        &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")],
    );
    assert_ok(&out);
    let bodies: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON body per line"))
        .collect();
    assert_eq!(bodies.len(), 3);
    for b in &bodies {
        common::collector::validate_envelope(b).unwrap();
    }
    let counts: Vec<usize> = bodies
        .iter()
        .map(|b| b["events"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [100, 50, 2]);
    assert!(models(&bodies).iter().all(|m| m == "redacted"));

    // The events are those inspect lists, byte for byte.
    let listed = sb.inspect_env(&[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")]);
    let listed = listed["events"].as_array().unwrap();
    let sent: Vec<&Value> = bodies
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap())
        .collect();
    assert_eq!(listed.len(), sent.len());
    for (l, s) in listed.iter().zip(&sent) {
        assert_eq!(l["parameters"], s["parameters"]);
        assert_eq!(l["ts"], s["ts"]);
    }

    assert_eq!(c.connections(), 0);
    assert_eq!(
        std::fs::read(sb.db_file()).unwrap(),
        before,
        "nothing written"
    );
    let s = summary(&sb);
    assert_eq!(
        (s["queued"].as_u64(), s["in_flight"].as_u64()),
        (Some(152), Some(0))
    );
    assert!(s["last_upload"].is_null());

    let out = upload(&sb, &c.url(), &["--dry-run", "--max-batches", "1"]);
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn max_batches_stops_after_that_many_requests() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 250, "s", "1", "m");
    assert_ok(&upload(&sb, &c.url(), &["--max-batches", "1"]));
    assert_eq!(c.request_count(), 1);
    assert_eq!(sb.queued(), 150);
    assert_ok(&upload(&sb, &c.url(), &["--max-batches", "5"]));
    assert_eq!(c.request_count(), 3);
    assert_eq!(sb.queued(), 0);
    assert_eq!(c.delivered_count(), 250);
}

#[test]
fn quiet_is_silent_on_success_and_verbose_shows_each_request() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 150, "s", "1", "m");
    let out = upload(&sb, &c.url(), &["--quiet", "--max-batches", "1"]);
    assert_ok(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "");

    let out = upload(&sb, &c.url(), &["-v"]);
    assert_ok(&out);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("POST")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("HTTP 200") && lines[0].contains("50 events"),
        "{err}"
    );

    // Nothing queued: success, and silence with --quiet.
    let out = upload(&sb, &c.url(), &["--quiet"]);
    assert_ok(&out);
    assert_eq!(stderr(&out), "");
    let out = upload(&sb, &c.url(), &[]);
    assert!(stderr(&out).contains("nothing to upload"));
}

#[test]
fn a_failure_mid_run_keeps_what_was_not_acknowledged() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 450, "s", "1", "m");
    c.enqueue_all([Reply::ok(), Reply::ok(), Reply::reset()]);
    let out = upload(&sb, &c.url(), &[]);
    assert_exit(&out, 75);
    assert_eq!(c.delivered_count(), 200);
    let s = summary(&sb);
    assert_eq!(
        (s["queued"].as_u64(), s["in_flight"].as_u64()),
        (Some(250), Some(0))
    );
    assert_ok(&upload(&sb, &c.url(), &["--now"]));
    assert_eq!(c.delivered_count(), 450);
    let outcomes = c.outcomes();
    assert_eq!(outcomes[2], Outcome::HungUp);
}

#[test]
fn proxies_from_the_environment_are_used_unless_no_proxy_says_otherwise() {
    let sb = Sandbox::new();
    let target = Collector::start();
    let proxy = Collector::start();
    record_events(&sb, 3, "s", "1", "m");
    // `localhost`, so that a proxy for 127.0.0.1 is not mistaken for the endpoint.
    let url = format!("http://localhost:{}/v1.1/events/json", target.addr().port());
    let proxy_url = proxy.base_url();
    let out = upload_env(&sb, &url, &[], &[("http_proxy", &proxy_url)]);
    assert_ok(&out);
    assert_eq!(target.request_count(), 0);
    let via_proxy = proxy.requests();
    assert!(
        via_proxy.iter().any(|r| r.method == "CONNECT"),
        "{:?}",
        via_proxy.iter().map(|r| &r.method).collect::<Vec<_>>()
    );
    assert_eq!(posts(via_proxy).len(), 1);

    record_events(&sb, 3, "s", "1", "m");
    let out = upload_env(
        &sb,
        &url,
        &[],
        &[
            ("http_proxy", &proxy_url),
            ("NO_PROXY", "example.com,localhost"),
        ],
    );
    assert_ok(&out);
    assert_eq!(target.delivered_count(), 3);
}

#[test]
fn batches_whose_claim_would_run_out_are_claimed_again_not_lost_or_doubled() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 200, "s", "1", "m");
    // A 3 s claim and a 2 s timeout leave 1 s to start the requests of a window; at
    // 200 ms a request, the rest of each window goes back and is claimed afresh.
    c.set_default(Reply::ok().delay(Duration::from_millis(200)));
    let env = [("TELESPOOL_LEASE", "3s"), ("TELESPOOL_BATCH_EVENTS", "10")];
    let out = upload_env(&sb, &c.url(), &["--timeout", "2s"], &env);
    assert_ok(&out);
    assert_eq!(c.request_count(), 20, "each batch sent once");
    let mut tasks: Vec<String> = c
        .delivered()
        .iter()
        .map(|e| e.parameters["task"].to_string())
        .collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 200);
    let s = summary(&sb);
    assert_eq!(
        (s["queued"].as_u64(), s["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn small_records_wait_in_the_inbox_and_leave_in_arrival_order_with_bulk_ones() {
    // One session, written three ways: single records (to the inbox), a bulk
    // `record --json -` of more than 64 lines (straight into `events`, folding the inbox in
    // first), then single records again. The upload must send them in arrival order, in
    // the one session's requests, and leave both tables empty.
    let c = Collector::start();
    let sb = Sandbox::new();
    // Single records in the same stream as the bulk ones below: same session, same
    // client version.
    let stream = [
        ("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", "inbox-session"),
        ("NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION", "1.0"),
    ];
    let record_one = |task: &str| assert_ok(&sb.try_record(task, &stream));
    for i in 0..3 {
        record_one(&format!("a{i}"));
    }
    let tables = |sb: &Sandbox| -> (i64, i64) {
        let db = sb.db();
        let count = |t: &str| {
            db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .unwrap()
        };
        (count("events"), count("inbox"))
    };
    assert_eq!(tables(&sb), (0, 3), "single records go to the inbox");
    assert_eq!(sb.inspect()["queued"], 3, "inspect counts the inbox");

    record_events(&sb, 70, "inbox-session", "1.0", "m");
    assert_eq!(
        tables(&sb),
        (73, 0),
        "a bulk record folds the inbox in first"
    );
    for i in 0..2 {
        record_one(&format!("c{i}"));
    }
    assert_eq!(tables(&sb), (73, 2));
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 75);

    // The dry run shows the inbox too, and leaves it where it is.
    let dry = upload(&sb, &c.url(), &["--dry-run"]);
    assert_ok(&dry);
    let dry_events: usize = stdout(&dry)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["events"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(dry_events, 75);
    assert_eq!(tables(&sb), (73, 2));

    assert_ok(&upload(&sb, &c.url(), &[]));
    let bodies: Vec<Value> = posts(c.requests())
        .iter()
        .map(|r| r.json().unwrap())
        .collect();
    assert!(bodies
        .iter()
        .all(|b| b["sessionId"] == "inbox-session" && b["clientVer"] == "1.0"));
    let tasks: Vec<String> = bodies
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .map(|e| e["parameters"]["task"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = ["a0", "a1", "a2"]
        .into_iter()
        .map(String::from)
        .chain((0..70).map(|i| format!("t{i}")))
        .chain(["c0".to_string(), "c1".to_string()])
        .collect();
    assert_eq!(tasks, expected);
    assert_eq!(tables(&sb), (0, 0));
    assert_eq!(sb.inspect()["queued"], 0);
}
