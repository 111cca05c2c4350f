//! Many writers at once (issue 5, item 2): 64 writer processes × 50 events, each event its
//! own `telespool record` process, all into one spool, while `upload` (to a loopback
//! collector) and `inspect` run over and over beside them. Every record must succeed, no
//! command may ever report SQLite's "database is locked" (or any "busy"), and at the end the
//! collector's deliveries plus what is still queued are exactly the 3,200 events, each once.
//! (Item 2's other half, exit 75 after 30 s against a held lock, is tests/spool.rs
//! `a_held_lock_makes_record_wait_30s_then_exit_75_writing_nothing`.)
//!
//! A second test holds `inspect --json --events` to one snapshot: its list and its counts
//! describe the same moment while writers run.
//!
//! Every child runs in one process group of the test's own, which a guard SIGKILLs if the
//! test ends early (a failed assertion included), so nothing outlives the test.

mod common;
mod stress_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::collector::Collector;
use common::sandbox::*;
use serde_json::Value;
use stress_support::{integrity, watchdog, ProcessGroup, StopOnExit};

const WRITERS: usize = 64;
const EVENTS_PER_WRITER: usize = 50;
const TOTAL: usize = WRITERS * EVENTS_PER_WRITER;
/// The whole concurrent phase must end by then (it takes 8–20 s on a loaded 2-core
/// machine); past it a watchdog kills every child and the test fails rather than hang.
const HARD_LIMIT: Duration = Duration::from_secs(150);
/// Pause between two runs of a background `upload` or `inspect`, so the loops share the
/// cores with the writers instead of starving them.
const LOOP_PAUSE: Duration = Duration::from_millis(40);

/// A command that ran and did not do what it should.
struct Failure {
    what: String,
    code: Option<i32>,
    stderr: String,
}

/// Whether a message shows lock contention leaking out to a user: SQLite's "database is
/// locked" or "busy", or telespool's own "stayed locked" (a writer that gave up).
fn mentions_lock_trouble(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    lower.contains("locked") || lower.contains("busy")
}

/// What one writer did: records that succeeded, failures, how long each record took.
struct Written {
    ok: usize,
    failures: Vec<Failure>,
    took: Vec<Duration>,
}

fn writer(sb: &Sandbox, group: &ProcessGroup, stop: &AtomicBool, w: usize) -> Written {
    let mut ok = 0;
    let mut failures = Vec::new();
    let mut took = Vec::new();
    for i in 1..=EVENTS_PER_WRITER {
        let task = format!("w{w}-{i}");
        if stop.load(Ordering::SeqCst) {
            failures.push(Failure {
                what: format!("record {task}: never run, the test gave up"),
                code: None,
                stderr: String::new(),
            });
            break;
        }
        let cmd = sb.record_cmd(&task, "lm-eval", "org/model");
        let began = Instant::now();
        let out = group.run(cmd);
        took.push(began.elapsed());
        let err = stderr(&out);
        if out.status.success() && err.is_empty() {
            ok += 1;
        } else {
            failures.push(Failure {
                what: format!("record {task}"),
                code: out.status.code(),
                stderr: err,
            });
        }
    }
    Written { ok, failures, took }
}

/// What a background loop saw.
#[derive(Default)]
struct LoopReport {
    runs: usize,
    failures: Vec<Failure>,
}

fn upload_loop(
    sb: &Sandbox,
    group: &ProcessGroup,
    url: &str,
    writers_done: &AtomicBool,
    stop: &AtomicBool,
) -> LoopReport {
    let mut report = LoopReport::default();
    while !writers_done.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
        let mut cmd = sb.cmd();
        cmd.args(["upload", "--endpoint", url, "--now"]);
        let out = group.run(cmd);
        report.runs += 1;
        let err = stderr(&out);
        // The collector always answers 200: every run succeeds (0), whatever it found.
        if !out.status.success() || mentions_lock_trouble(&err) {
            report.failures.push(Failure {
                what: format!("upload run {}", report.runs),
                code: out.status.code(),
                stderr: err,
            });
        }
        thread::sleep(LOOP_PAUSE);
    }
    report
}

fn inspect_loop(
    sb: &Sandbox,
    group: &ProcessGroup,
    writers_done: &AtomicBool,
    stop: &AtomicBool,
) -> LoopReport {
    let mut report = LoopReport::default();
    while !writers_done.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
        // Mostly the summary; every third run the full event list, which reads the most.
        let with_events = report.runs % 3 == 2;
        let mut args = vec!["inspect", "--json"];
        if with_events {
            args.extend(["--events", "--limit", "0"]);
        }
        let mut cmd = sb.cmd();
        cmd.args(&args);
        let out = group.run(cmd);
        report.runs += 1;
        let err = stderr(&out);
        let problem = if !out.status.success() || mentions_lock_trouble(&err) {
            Some("failed".to_string())
        } else {
            check_snapshot(&out.stdout, with_events).err()
        };
        if let Some(problem) = problem {
            report.failures.push(Failure {
                what: format!("{} (run {}): {problem}", args.join(" "), report.runs),
                code: out.status.code(),
                stderr: err,
            });
        }
        thread::sleep(LOOP_PAUSE);
    }
    report
}

/// One `inspect --json` taken while everything runs must still be one consistent snapshot.
fn check_snapshot(stdout: &[u8], with_events: bool) -> Result<(), String> {
    let doc: Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("stdout is not one JSON document: {e}"))?;
    let count = |key: &str| {
        doc[key]
            .as_u64()
            .ok_or_else(|| format!("{key} is not a count: {}", doc[key]))
    };
    let (queued, in_flight) = (count("queued")?, count("in_flight")?);
    if queued > TOTAL as u64 || in_flight > queued {
        return Err(format!("queued {queued}, in flight {in_flight}"));
    }
    if count("rejected")? != 0 || count("dropped")? != 0 {
        return Err(format!(
            "rejected {}, dropped {}",
            doc["rejected"], doc["dropped"]
        ));
    }
    let by_kind: u64 = doc["by_kind"]
        .as_object()
        .ok_or("by_kind is not an object")?
        .values()
        .flat_map(|statuses| statuses.as_object().into_iter().flat_map(|m| m.values()))
        .filter_map(Value::as_u64)
        .sum();
    if by_kind != queued {
        return Err(format!("by_kind adds up to {by_kind}, queued is {queued}"));
    }
    if with_events && !doc["events"].is_array() {
        return Err("no events list".to_string());
    }
    // (That the list agrees with `queued` is the next test's promise.)
    Ok(())
}

#[track_caller]
fn assert_no_failures(kind: &str, failures: &[Failure]) {
    let first: Vec<String> = failures
        .iter()
        .take(10)
        .map(|f| format!("{} (exit {:?}): {}", f.what, f.code, f.stderr.trim_end()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} {kind} failure(s), the first ones:\n{}",
        failures.len(),
        first.join("\n")
    );
}

/// What the concurrent phase of the test saw.
struct Phase {
    written: usize,
    failures: Vec<Failure>,
    /// How long each record took.
    took: Vec<Duration>,
    uploads: LoopReport,
    inspects: LoopReport,
    /// Events the collector had acknowledged when the last writer finished.
    delivered_meanwhile: usize,
    writing_took: Duration,
}

#[test]
fn sixty_four_writers_with_upload_and_inspect_running_lose_nothing() {
    let sb = Sandbox::new();
    let collector = Collector::start();
    let url = collector.url();
    let group = ProcessGroup::new();
    let stop = AtomicBool::new(false);
    let writers_done = AtomicBool::new(false);
    let started = Instant::now();

    let mut phase = thread::scope(|s| {
        let _stop = StopOnExit {
            stop: &stop,
            group: &group,
        };
        let (sb, group, stop, writers_done, url) = (&sb, &group, &stop, &writers_done, &url);
        s.spawn(move || watchdog(stop, group, started, HARD_LIMIT));
        let uploader = s.spawn(move || upload_loop(sb, group, url, writers_done, stop));
        let inspector = s.spawn(move || inspect_loop(sb, group, writers_done, stop));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| s.spawn(move || writer(sb, group, stop, w)))
            .collect();
        let mut written = 0;
        let mut failures = Vec::new();
        let mut took = Vec::new();
        for handle in writers {
            let w = handle.join().expect("writer thread");
            written += w.ok;
            failures.extend(w.failures);
            took.extend(w.took);
        }
        let writing_took = started.elapsed();
        let delivered_meanwhile = collector.delivered_count();
        writers_done.store(true, Ordering::SeqCst);
        let uploads = uploader.join().expect("upload thread");
        let inspects = inspector.join().expect("inspect thread");
        Phase {
            written,
            failures,
            took,
            uploads,
            inspects,
            delivered_meanwhile,
            writing_took,
        }
    });
    phase.took.sort();
    let took = &phase.took;
    let pct = |p: usize| took.get(took.len() * p / 100).or(took.last()).copied();
    eprintln!(
        "{TOTAL} records by {WRITERS} writers in {:.1?} (a record took: median {:.2?}, \
         p99 {:.2?}, max {:.2?}); alongside: {} upload runs ({} events delivered), {} \
         inspect runs",
        phase.writing_took,
        pct(50).unwrap_or_default(),
        pct(99).unwrap_or_default(),
        took.last().copied().unwrap_or_default(),
        phase.uploads.runs,
        phase.delivered_meanwhile,
        phase.inspects.runs
    );

    assert_no_failures("record", &phase.failures);
    assert_eq!(phase.written, TOTAL);
    assert_no_failures("upload", &phase.uploads.failures);
    assert_no_failures("inspect", &phase.inspects.failures);
    // The point is that they ran side by side: uploads delivered while writers wrote.
    assert!(
        phase.uploads.runs >= 1 && phase.inspects.runs >= 2,
        "too few runs alongside"
    );
    assert!(
        phase.delivered_meanwhile > 0,
        "no upload delivered anything while the writers ran"
    );

    // A final upload sends whatever is left.
    let out = sb.run(&["upload", "--endpoint", &url, "--now"]);
    assert_ok(&out);
    assert!(!mentions_lock_trouble(&stderr(&out)), "{}", stderr(&out));
    collector.assert_valid();

    // Delivered plus queued: exactly the 3,200 events, each once.
    let doc = sb.inspect();
    let queued_tasks = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["parameters"]["task"].as_str().unwrap().to_string());
    let delivered = collector.delivered();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for task in delivered
        .iter()
        .map(|e| e.parameters["task"].as_str().unwrap_or("?").to_string())
        .chain(queued_tasks)
    {
        *seen.entry(task).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events seen more than once: {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let expected: Vec<String> = (0..WRITERS)
        .flat_map(|w| (1..=EVENTS_PER_WRITER).map(move |i| format!("w{w}-{i}")))
        .collect();
    let missing: Vec<_> = expected.iter().filter(|t| !seen.contains_key(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.len(), TOTAL, "no event that was never recorded");
    assert_eq!(delivered.len(), TOTAL, "the final upload sent the rest");
    for key in ["queued", "in_flight", "rejected", "dropped"] {
        assert_eq!(doc[key], 0, "{key}");
    }
    assert_eq!(doc["last_upload"]["result"], "ok");

    assert_eq!(integrity(&sb), "ok");
    // Neither lock file is left held.
    for name in ["spool.lock", "upload.lock"] {
        let path = sb.spool.join(name);
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
            assert!(file.try_lock().is_ok(), "{} is still held", path.display());
        }
    }
    eprintln!("whole test: {:.1?}", started.elapsed());
}

/// `inspect --json --events --limit 0` is one document, so its `events` list and its
/// `queued` count must describe the same moment, however busy the spool.
#[test]
fn inspect_json_lists_exactly_the_queued_events_while_writers_run() {
    let sb = Sandbox::new();
    let group = ProcessGroup::new();
    let stop = AtomicBool::new(false);
    let mismatches = thread::scope(|s| {
        let _stop = StopOnExit {
            stop: &stop,
            group: &group,
        };
        let (sb, group, stop) = (&sb, &group, &stop);
        s.spawn(move || watchdog(stop, group, Instant::now(), HARD_LIMIT));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                s.spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) && i < 400 {
                        i += 1;
                        let mut cmd = sb.cmd();
                        cmd.args(["record", "evaluation-task", "--task"])
                            .arg(format!("w{w}-{i}"))
                            .args(["--framework", "f", "--model", "m", "--status", "success"]);
                        group.run(cmd);
                    }
                })
            })
            .collect();
        let mut mismatches = Vec::new();
        for run in 0..60 {
            let out = sb.run(&["inspect", "--json", "--events", "--limit", "0"]);
            assert_ok(&out);
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
            let listed = doc["events"].as_array().unwrap().len() as u64;
            let queued = doc["queued"].as_u64().unwrap();
            if listed != queued {
                mismatches.push(format!("run {run}: {listed} listed, {queued} queued"));
            }
        }
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("writer thread");
        }
        mismatches
    });
    assert!(
        mismatches.is_empty(),
        "inspect --json contradicts itself:\n{}",
        mismatches.join("\n")
    );
}
