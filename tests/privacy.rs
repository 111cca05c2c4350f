//! Privacy (issue 5, item 8; SPEC §1, §3, §5): what telespool keeps private, checked on the
//! raw bytes — every file of the spool directory while commands run, the database's rows,
//! `inspect`'s output, export files and every request body the collector received.
//!
//! - At level 1 the model name never reaches any file of the spool directory, at any
//!   moment, whatever runs at the same time (record, upload, export, inspect).
//! - A Slurm job id and the spool's secret session key never appear in event rows,
//!   `inspect`, an export file or a request body; the job id not even in the database file.
//! - Nothing of the environment (user, host, paths, tokens) leaves: every string in a
//!   request body or export line is an allowlisted constant or a value the events carried.
//!
//! Every child runs in one process group of the test's own, which a guard SIGKILLs if the
//! test ends early, so nothing outlives the test.

mod common;
mod stress_support;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::collector::{validate_envelope, Collector};
use common::sandbox::*;
use rusqlite::types::ValueRef;
use serde_json::{json, Value};
use stress_support::{run_stdin, watchdog, ProcessGroup, StopOnExit};

// ---------------------------------------------------------------------------------------
// Looking for secrets in bytes
// ---------------------------------------------------------------------------------------

/// Something that must not show, under a name for the failure message.
#[derive(Clone)]
struct Needle {
    name: String,
    bytes: Vec<u8>,
}

fn needle(name: &str, bytes: impl Into<Vec<u8>>) -> Needle {
    let bytes = bytes.into();
    assert!(
        bytes.len() >= 4,
        "needle {name} is too short to mean anything"
    );
    Needle {
        name: name.to_string(),
        bytes,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One line per needle found in `haystack`, naming `place` and showing the surroundings.
fn leaks(place: &str, haystack: &[u8], needles: &[Needle]) -> Vec<String> {
    needles
        .iter()
        .filter_map(|n| {
            let at = find(haystack, &n.bytes)?;
            let from = at.saturating_sub(60);
            let to = (at + n.bytes.len() + 60).min(haystack.len());
            Some(format!(
                "{} found in {place} at byte {at}: …{}…",
                n.name,
                String::from_utf8_lossy(&haystack[from..to]).escape_debug()
            ))
        })
        .collect()
}

#[track_caller]
fn assert_no_leaks(found: &[String]) {
    assert!(
        found.is_empty(),
        "{} leak(s):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// Every regular file under `dir`, recursively (a file that vanishes meanwhile is skipped).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                Ok(t) if t.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}

/// Reads every file under `dirs` and reports the needles found; adds each file name seen
/// to `seen`.
fn scan(dirs: &[&Path], needles: &[Needle], seen: &mut BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        for file in files_under(dir) {
            let Ok(bytes) = std::fs::read(&file) else {
                continue; // renamed or deleted between listing and reading
            };
            if let Some(name) = file.file_name() {
                seen.insert(name.to_string_lossy().into_owned());
            }
            found.extend(leaks(&file.display().to_string(), &bytes, needles));
        }
    }
    found
}

/// `"a b c"` as `["a", "b", "c"]`: command lines with nothing to quote, kept short.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// Every value of every row of every table of the spool's database, each with where it
/// was found; `skip` leaves out rows for which it returns true (table, first column).
fn database_values(
    db: &rusqlite::Connection,
    skip: impl Fn(&str, &[u8]) -> bool,
) -> Vec<(String, Vec<u8>)> {
    let tables: Vec<String> = column_of(db, "SELECT name FROM sqlite_master WHERE type = 'table'");
    let mut values = Vec::new();
    for table in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        let mut rows = stmt.query([]).unwrap();
        let mut n = 0;
        while let Some(row) = rows.next().unwrap() {
            n += 1;
            let as_bytes = |i: usize| match row.get_ref(i).unwrap() {
                ValueRef::Null => Vec::new(),
                ValueRef::Integer(v) => v.to_string().into_bytes(),
                ValueRef::Real(v) => v.to_string().into_bytes(),
                ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
            };
            if skip(&table, &as_bytes(0)) {
                continue;
            }
            for (i, column) in columns.iter().enumerate() {
                values.push((format!("{table} row {n} column {column}"), as_bytes(i)));
            }
        }
    }
    values
}

fn request_bodies(c: &Collector) -> Vec<Vec<u8>> {
    c.requests().into_iter().map(|r| r.body).collect()
}

// ---------------------------------------------------------------------------------------
// a. Level 1: the model name never reaches the spool directory
// ---------------------------------------------------------------------------------------

const SECRET_MODEL: &str = "secret-org/private-model-xyz";

/// How a level-1 command gets its level: the environment, the config file, or an invalid
/// environment value (which counts as 1, with a warning).
const LEVEL_ROUTES: [&[(&str, &str)]; 3] = [
    &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")],
    &[],
    &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", " bogus ")],
];

/// One `record` at level 1 in one of four forms, with the secret model; its task names.
fn record_level_1(
    sb: &Sandbox,
    group: &ProcessGroup,
    tmp: &Path,
    w: usize,
    i: usize,
) -> (Output, Vec<String>) {
    let task = format!("w{w}-{i}");
    let mut cmd = sb.cmd();
    cmd.env("TMPDIR", tmp);
    for (k, v) in LEVEL_ROUTES[(w + i) % LEVEL_ROUTES.len()] {
        cmd.env(k, v);
    }
    let event = |task: &str| {
        json!({"name": "EvaluationTaskEvent", "parameters": {"task": task,
            "frameworkName": "lm-eval", "model": SECRET_MODEL, "status": "success"}})
    };
    match i % 4 {
        0 => {
            cmd.args(words(&format!(
                "record evaluation-task --task {task} --framework lm-eval \
                 --model {SECRET_MODEL} --status started --duration 1.5"
            )));
            (group.run(cmd), vec![task])
        }
        1 => {
            // A launcher job has no `task`; its `tasks` list holds it instead.
            cmd.args(words(&format!(
                "record launcher-job --executor slurm --deployment vllm \
                 --model {SECRET_MODEL} --status success --task {task}"
            )));
            (group.run(cmd), vec![task])
        }
        2 => {
            cmd.args(["record", "--json", &event(&task).to_string()]);
            (group.run(cmd), vec![task])
        }
        _ => {
            let tasks: Vec<String> = (0..3).map(|k| format!("{task}-{k}")).collect();
            let input: String = tasks.iter().map(|t| format!("{}\n", event(t))).collect();
            cmd.args(["record", "--json", "-"]);
            (group.run_stdin(cmd, input.as_bytes()), tasks)
        }
    }
}

/// The task name an event carries: `task`, or the only entry of a launcher job's `tasks`.
fn task_of(parameters: &Value) -> String {
    parameters["task"]
        .as_str()
        .or_else(|| parameters["tasks"][0].as_str())
        .unwrap_or("?")
        .to_string()
}

#[test]
fn level_1_never_writes_the_model_name_to_any_file_of_the_spool_at_any_moment() {
    let sb = Sandbox::new();
    let collector = Collector::start();
    let url = collector.url();
    // TMPDIR for every child, scanned too: SQLite or telespool might spill there.
    let tmp = sb.root().join("tmp");
    let exports = sb.root().join("exports");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&exports).unwrap();
    // Level 1 by the config file for commands without the variable.
    assert_ok(&sb.run(&["config", "set", "telemetry.level", "1"]));

    let needles = [
        needle("the model name", SECRET_MODEL),
        needle("the model name's distinctive part", "private-model-xyz"),
        needle("the model's organisation", "secret-org"),
    ];
    let group = ProcessGroup::new();
    let stop = AtomicBool::new(false);
    let writers_done = AtomicBool::new(false);
    let scans = AtomicUsize::new(0);
    let recorded: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let outputs: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());
    let started = Instant::now();

    let (found, seen_files) = thread::scope(|s| {
        let _stop = StopOnExit {
            stop: &stop,
            group: &group,
        };
        let (sb, group, stop, writers_done) = (&sb, &group, &stop, &writers_done);
        let (tmp, exports, url, needles) = (&tmp, &exports, &url, &needles);
        let (recorded, failures, outputs, scans) = (&recorded, &failures, &outputs, &scans);
        let fail = move |what: String, out: &Output| {
            failures.lock().unwrap().push(format!(
                "{what}: exit {:?}: {}",
                out.status.code(),
                stderr(out).trim_end()
            ));
        };

        // The scanner: every file of the spool directory (and TMPDIR, and the export
        // directory with its temporary files), over and over, as fast as it can.
        s.spawn(move || watchdog(stop, group, started, Duration::from_secs(120)));
        let scanner = s.spawn(move || {
            let mut found = Vec::new();
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                found.extend(scan(&[&sb.spool, tmp, exports], needles, &mut seen));
                scans.fetch_add(1, Ordering::SeqCst);
                if found.len() > 20 {
                    break;
                }
            }
            (found, seen)
        });

        // Uploads at level 1 (by the variable or by the config file), over and over.
        let uploader = s.spawn(move || {
            let mut run = 0;
            while !writers_done.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                run += 1;
                let mut cmd = sb.cmd();
                cmd.env("TMPDIR", tmp)
                    .args(["upload", "--endpoint", url, "--now"]);
                if run % 2 == 0 {
                    cmd.env("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1");
                }
                let out = group.run(cmd);
                if !out.status.success() {
                    fail(format!("upload run {run}"), &out);
                }
                outputs.lock().unwrap().push((
                    format!("upload run {run}"),
                    [out.stdout, out.stderr].concat(),
                ));
                thread::sleep(Duration::from_millis(30));
            }
        });

        // Exports that keep the events, and inspect at level 2: what is stored must
        // already be redacted, whatever level reads it.
        let exporter = s.spawn(move || {
            let mut run = 0;
            while !writers_done.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                run += 1;
                let file = exports.join(format!("export-{run}.jsonl"));
                let mut cmd = sb.cmd();
                cmd.env("TMPDIR", tmp)
                    .env("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")
                    .arg("export")
                    .arg("--keep")
                    .arg("--output")
                    .arg(&file);
                let out = group.run(cmd);
                if !out.status.success() {
                    fail(format!("export run {run}"), &out);
                }
                let mut cmd = sb.cmd();
                cmd.env("TMPDIR", tmp)
                    .env("NEMO_EVALUATOR_TELEMETRY_LEVEL", "2")
                    .args(["inspect", "--json", "--events", "--limit", "0"]);
                let inspected = group.run(cmd);
                if !inspected.status.success() {
                    fail(format!("inspect run {run}"), &inspected);
                }
                let mut out_all = outputs.lock().unwrap();
                out_all.push((
                    format!("export run {run}"),
                    [out.stdout, out.stderr].concat(),
                ));
                out_all.push((format!("inspect (level 2) run {run}"), inspected.stdout));
                drop(out_all);
                thread::sleep(Duration::from_millis(30));
            }
        });

        // The writers: 16 × 24 level-1 records in four forms, by three routes to level 1.
        let writers: Vec<_> = (0..16)
            .map(|w| {
                s.spawn(move || {
                    for i in 0..24 {
                        if stop.load(Ordering::SeqCst) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("writer {w} gave up at {i}"));
                            return;
                        }
                        let (out, tasks) = record_level_1(sb, group, tmp, w, i);
                        if out.status.success() {
                            recorded.lock().unwrap().extend(tasks);
                        } else {
                            fail(format!("record w{w}-{i}"), &out);
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread");
        }
        writers_done.store(true, Ordering::SeqCst);
        uploader.join().expect("upload thread");
        exporter.join().expect("export thread");
        // Let the scanner look at the quiet spool a few more times, then stop it.
        let target = scans.load(Ordering::SeqCst) + 3;
        while scans.load(Ordering::SeqCst) < target && !scanner.is_finished() {
            thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
        scanner.join().expect("scanner thread")
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "commands failed:\n{}",
        failures.join("\n")
    );
    let scans = scans.into_inner();
    eprintln!(
        "{} events recorded at level 1 in {:.1?}; {scans} scans of {seen_files:?}",
        recorded.lock().unwrap().len(),
        started.elapsed()
    );
    assert_no_leaks(&found);
    assert!(scans >= 10, "the scanner ran only {scans} times");
    // The scanner really saw the database and its journal (WAL on a local disk).
    assert!(seen_files.contains("spool.db"), "{seen_files:?}");
    assert!(
        seen_files.contains("spool.db-wal") || seen_files.contains("spool.db-journal"),
        "never saw a journal: {seen_files:?}"
    );

    // A final upload at level 1 sends what is left; then nothing anywhere holds the name:
    // not the request bodies, not the export files, not what upload/export/inspect said.
    let out = sb.run_env(
        &["upload", "--endpoint", &url, "--now"],
        &[
            ("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1"),
            ("TMPDIR", tmp.to_str().unwrap()),
        ],
    );
    assert_ok(&out);
    collector.assert_valid();
    let mut found = Vec::new();
    for (i, body) in request_bodies(&collector).iter().enumerate() {
        found.extend(leaks(&format!("request body {i}"), body, &needles));
    }
    for (what, bytes) in outputs.lock().unwrap().iter() {
        found.extend(leaks(&format!("the output of {what}"), bytes, &needles));
    }
    found.extend(scan(
        &[&sb.spool, &tmp, &exports],
        &needles,
        &mut BTreeSet::new(),
    ));
    assert_no_leaks(&found);

    // Not vacuous: every recorded event was delivered, once, as `redacted`; the exports
    // hold events, all `redacted` too.
    let recorded: BTreeSet<String> = recorded.into_inner().unwrap().into_iter().collect();
    let delivered = collector.delivered();
    let tasks: BTreeSet<String> = delivered.iter().map(|e| task_of(&e.parameters)).collect();
    assert_eq!(delivered.len(), recorded.len(), "each event once");
    assert_eq!(tasks, recorded);
    assert!(delivered
        .iter()
        .all(|e| e.parameters["model"] == "redacted"));
    let mut exported = 0;
    for file in files_under(&exports) {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let body: Value = serde_json::from_str(line).unwrap();
            for e in body["events"].as_array().unwrap() {
                assert_eq!(e["parameters"]["model"], "redacted", "{}", file.display());
                exported += 1;
            }
        }
    }
    assert!(exported > 0, "no export held any event");

    // The scan would have found the name: one event recorded at level 2 shows at once.
    let out = sb.run_env(
        &words(&format!(
            "record evaluation-task --task control --framework f --model {SECRET_MODEL} \
             --status success"
        )),
        &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "2")],
    );
    assert_ok(&out);
    assert!(
        !scan(&[&sb.spool], &needles, &mut BTreeSet::new()).is_empty(),
        "the scan cannot see a model name that is on disk"
    );
}

// ---------------------------------------------------------------------------------------
// b. The Slurm job id and the session key
// ---------------------------------------------------------------------------------------

const JOB_ID: &str = "7318530461";
const CLUSTER: &str = "zqcluster-4471";

fn slurm_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SLURM_JOB_ID", JOB_ID),
        ("SLURM_JOBID", JOB_ID),
        ("SLURM_ARRAY_JOB_ID", JOB_ID),
        ("SLURM_CLUSTER_NAME", CLUSTER),
    ]
}

/// Records a job's worth of events inside a Slurm job, in every form `record` takes.
fn record_slurm_job(sb: &Sandbox) -> usize {
    let env = slurm_env();
    for status in ["started", "success", "failure"] {
        let line = format!(
            "record evaluation-task --task mmlu --framework lm-eval --model org/m \
             --status {status}"
        );
        assert_ok(&sb.run_env(&words(&line), &env));
    }
    assert_ok(&sb.run_env(
        &words(
            "record launcher-job --executor slurm --deployment vllm --model org/m \
             --status started --task mmlu --exporter wandb",
        ),
        &env,
    ));
    let mut input = String::new();
    for i in 0..20 {
        let event = json!({"name": "EvaluationTaskEvent", "parameters": {"task": format!("t{i}"),
            "frameworkName": "lm-eval", "model": "org/m", "status": "success",
            "executionDurationSeconds": i as f64}});
        input.push_str(&format!("{event}\n"));
    }
    let mut cmd = sb.cmd();
    cmd.args(["record", "--json", "-", "--client-version", "0.2.8"]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    assert_ok(&run_stdin(cmd, input.as_bytes()));
    24
}

#[test]
fn the_slurm_job_id_and_the_session_key_never_leave_the_key_store() {
    let sb = Sandbox::new();
    let recorded = record_slurm_job(&sb);

    let key: Vec<u8> = sb
        .db()
        .query_row("SELECT value FROM meta WHERE key = 'slurm_key'", [], |r| {
            r.get(0)
        })
        .expect("a Slurm key in the spool");
    assert_eq!(key.len(), 32, "a 32-byte key");
    assert!(key.iter().any(|b| *b != 0), "a key of zeros");
    let job: u64 = JOB_ID.parse().unwrap();
    let secrets = [
        needle("the Slurm job id", JOB_ID),
        needle("the Slurm cluster name", CLUSTER),
        needle("the session key", key.clone()),
        needle("the session key in hex", hex(&key, false)),
        needle("the session key in HEX", hex(&key, true)),
    ];
    // The job id as a stored integer would be (big-endian, as SQLite keeps it, or
    // little-endian), in its five significant bytes.
    let binary_job = [
        needle(
            "the job id as a big-endian integer",
            &job.to_be_bytes()[3..],
        ),
        needle(
            "the job id as a little-endian integer",
            &job.to_le_bytes()[..5],
        ),
    ];

    // The database: no row of any table but the key's own holds a secret (integers are
    // compared in decimal, so no column holds the job id as a number either).
    let db = sb.db();
    let values = database_values(&db, |table, first| table == "meta" && first == b"slurm_key");
    assert!(
        values
            .iter()
            .any(|(w, _)| w.starts_with("events") || w.starts_with("inbox")),
        "no event rows read"
    );
    let mut found = Vec::new();
    for (place, bytes) in &values {
        found.extend(leaks(place, bytes, &secrets));
    }
    let rows: i64 = db
        .query_row(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM inbox)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, recorded as i64);
    drop(db);
    let sessions = sb.stored_sessions();
    assert_eq!(sessions.len(), 1, "one job, one session: {sessions:?}");
    let session = &sessions[0];
    assert!(
        uuid::Uuid::parse_str(session).is_ok(),
        "the session id is a UUID: {session}"
    );

    // The whole spool directory, byte for byte: the job id in no form, the cluster not at
    // all, the key nowhere in hex.
    let spool = sb.spool_bytes();
    found.extend(leaks("the spool's files", &spool, &binary_job));
    let not_even_in_the_spool: Vec<Needle> =
        secrets.iter().filter(|n| n.bytes != key).cloned().collect();
    found.extend(leaks("the spool's files", &spool, &not_even_in_the_spool));

    // inspect, human and JSON, at both levels that show events.
    for level in ["1", "2"] {
        for args in [
            &["inspect", "--events", "--limit", "0"][..],
            &["inspect", "--json", "--events", "--limit", "0"][..],
            &["upload", "--dry-run"][..],
        ] {
            let out = sb.run_env(args, &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", level)]);
            assert_ok(&out);
            let place = format!("the output of `{}` at level {level}", args.join(" "));
            assert!(
                stdout(&out).contains(session.as_str()),
                "{place} shows no event"
            );
            found.extend(leaks(&place, &[out.stdout, out.stderr].concat(), &secrets));
        }
    }

    // An export file.
    let export = sb.root().join("out").join("job.jsonl");
    std::fs::create_dir_all(export.parent().unwrap()).unwrap();
    let out = sb
        .cmd()
        .args(["export", "--keep", "--output"])
        .arg(&export)
        .output()
        .unwrap();
    assert_ok(&out);
    let exported = std::fs::read(&export).unwrap();
    found.extend(leaks("the export file", &exported, &secrets));
    found.extend(leaks("export's messages", &out.stderr, &secrets));

    // Request bodies, uploading from this spool.
    let collector = Collector::start();
    let out = sb.run(&["upload", "--endpoint", &collector.url(), "--now"]);
    assert_ok(&out);
    collector.assert_valid();
    for (i, body) in request_bodies(&collector).iter().enumerate() {
        found.extend(leaks(&format!("request body {i}"), body, &secrets));
    }
    found.extend(leaks("upload's messages", &out.stderr, &secrets));
    let delivered = collector.delivered();
    assert_eq!(delivered.len(), recorded);
    assert!(delivered.iter().all(|e| &e.session_id == session));

    // And from the exported file, on another machine: its spool and its requests.
    let elsewhere = Sandbox::new();
    let collector2 = Collector::start();
    let out = elsewhere
        .cmd()
        .args(["upload", "--endpoint", &collector2.url(), "--now", "--from"])
        .arg(&export)
        .output()
        .unwrap();
    assert_ok(&out);
    collector2.assert_valid();
    assert_eq!(collector2.delivered_count(), recorded);
    for (i, body) in request_bodies(&collector2).iter().enumerate() {
        found.extend(leaks(
            &format!("request body {i} from the export"),
            body,
            &secrets,
        ));
    }
    found.extend(leaks(
        "the importing spool's files",
        &elsewhere.spool_bytes(),
        &secrets,
    ));
    found.extend(leaks(
        "the importing spool's files",
        &elsewhere.spool_bytes(),
        &binary_job,
    ));

    assert_no_leaks(&found);
}

// ---------------------------------------------------------------------------------------
// c. Nothing outside the allowlist leaves
// ---------------------------------------------------------------------------------------

/// Distinctive values for everything a careless client might pick up from its
/// surroundings.
const ENVIRONMENT: [(&str, &str); 16] = [
    ("USER", "zq-user-6613"),
    ("LOGNAME", "zq-user-6613"),
    ("HOSTNAME", "zq-node-5519.cluster.example"),
    ("HOST", "zq-node-5519.cluster.example"),
    ("SLURMD_NODENAME", "zq-node-5519"),
    ("SLURM_NODELIST", "zq-node-[5519-5520]"),
    ("SLURM_JOB_USER", "zq-user-6613"),
    ("SLURM_JOB_NAME", "zq-jobname-2231"),
    ("SLURM_JOB_ACCOUNT", "zq-account-7702"),
    ("SLURM_SUBMIT_DIR", "/lustre/zq-project-8840/evals"),
    ("SLURM_JOB_ID", "5550123987"),
    ("SLURM_CLUSTER_NAME", "zq-cluster-3390"),
    ("HF_TOKEN", "hf_zqSecretToken9925"),
    ("NGC_API_KEY", "nvapi-zqSecretKey4417"),
    ("WANDB_API_KEY", "zqwandbkey0088"),
    ("OPENAI_API_KEY", "sk-zqopenai7731"),
];

/// Strings the envelope may carry as constants (SPEC §5).
const CONSTANTS: [&str; 8] = [
    "undefined",
    "14399890258381784",
    "Native",
    "Release",
    "None",
    "1.6",
    "1.0",
    "nemo-telemetry/1.0",
];

fn is_timestamp(s: &str) -> bool {
    // 2026-11-20T01:02:03.456Z
    s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Every string (keys aside) in `value`, with its JSON path.
fn strings(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                strings(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn nothing_of_the_environment_leaves_only_allowlisted_values() {
    let sb = Sandbox::new();
    let workdir = sb.root().join("zq-workdir-3307");
    std::fs::create_dir_all(&workdir).unwrap();
    let run = |args: &[&str], extra: &[(&str, &str)], stdin: Option<&str>| -> Output {
        let mut cmd = sb.cmd();
        cmd.current_dir(&workdir).env("PWD", &workdir).args(args);
        for (k, v) in ENVIRONMENT.iter().chain(extra) {
            cmd.env(k, v);
        }
        match stdin {
            Some(input) => run_stdin(cmd, input.as_bytes()),
            None => cmd.output().unwrap(),
        }
    };

    // Events in every form, with values of our own that are allowed to leave.
    let given_session = [("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", "given-session-1")];
    let client_env = [("NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION", "0.2.6")];
    assert_ok(&run(
        &words(
            "record evaluation-task --task task-a --framework fw-a --model model-a \
             --status success --duration 2.5",
        ),
        &given_session,
        None,
    ));
    assert_ok(&run(
        &words(
            "record --client-version 9.9.9 launcher-job --executor exec-b --deployment dep-b \
             --model model-b --status started --task task-b1 --task task-b2 --exporter exp-b",
        ),
        &client_env,
        None,
    ));
    let line = json!({"name": "EvaluationTaskEvent", "parameters": {"task": "task-c",
        "frameworkName": "fw-c", "model": "model-c", "status": "failure"}});
    assert_ok(&run(&["record", "--json", &line.to_string()], &[], None));
    let lines: String = (0..5)
        .map(|i| {
            format!(
                "{}\n",
                json!({"name": "LauncherJobEvent", "parameters": {"executorType": "exec-d",
                    "deploymentType": "dep-d", "model": "model-d", "tasks": [format!("task-d{i}")],
                    "exporters": [], "status": "success"}})
            )
        })
        .collect();
    assert_ok(&run(
        &["record", "--json", "-"],
        &given_session,
        Some(&lines),
    ));

    let allowed_parameters: HashSet<String> = [
        "task-a", "fw-a", "model-a", "exec-b", "dep-b", "model-b", "task-b1", "task-b2", "exp-b",
        "task-c", "fw-c", "model-c", "exec-d", "dep-d", "model-d", "started", "success", "failure",
    ]
    .into_iter()
    .map(String::from)
    .chain((0..5).map(|i| format!("task-d{i}")))
    .collect();
    let stored_sessions: HashSet<String> = sb.stored_sessions().into_iter().collect();

    // What leaves: request bodies (upload) and export lines.
    let export = sb.root().join("zq-exports-1184").join("out.jsonl");
    std::fs::create_dir_all(export.parent().unwrap()).unwrap();
    assert_ok(&run(
        &["export", "--keep", "--output", export.to_str().unwrap()],
        &[],
        None,
    ));
    let collector = Collector::start();
    assert_ok(&run(
        &["upload", "--endpoint", &collector.url(), "--now"],
        &[],
        None,
    ));
    collector.assert_valid();
    let mut bodies: Vec<(String, Vec<u8>)> = request_bodies(&collector)
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("request body {i}"), b))
        .collect();
    let exported = std::fs::read_to_string(&export).unwrap();
    bodies.extend(
        exported
            .lines()
            .enumerate()
            .map(|(i, l)| (format!("export line {i}"), l.as_bytes().to_vec())),
    );
    assert_eq!(collector.delivered_count(), 8);

    // Byte for byte: no value of the environment, no path of ours.
    let root = sb.root().to_str().unwrap().to_string();
    let root_name = sb.root().file_name().unwrap().to_str().unwrap().to_string();
    let mut needles: Vec<Needle> = ENVIRONMENT
        .iter()
        .map(|(k, v)| needle(&format!("${k}"), *v))
        .collect();
    needles.extend([
        needle("the sandbox path", root.as_str()),
        needle("the sandbox's directory name", root_name.as_str()),
        needle("the spool path", sb.spool.to_str().unwrap()),
        needle("the home directory", sb.home.to_str().unwrap()),
        needle("the working directory", "zq-workdir-3307"),
        needle("the export directory", "zq-exports-1184"),
    ]);
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        // Only a name distinctive enough not to match by chance.
        if host.len() >= 8 && !CONSTANTS.iter().any(|c| c.contains(host)) {
            needles.push(needle("this machine's host name", host));
        }
    }
    let mut found = Vec::new();
    for (place, bytes) in &bodies {
        found.extend(leaks(place, bytes, &needles));
    }
    // Nor does the spool keep any of it, not even its own path (SPEC §3: nothing outside
    // the tables is stored).
    found.extend(leaks("the spool's files", &sb.spool_bytes(), &needles));
    assert_no_leaks(&found);

    // Value by value: every string is an allowlisted constant, a timestamp, this CPU's
    // architecture, a stored session id or client version, or a value an event carried.
    let client_versions = ["undefined", "0.2.6", "9.9.9"];
    let mut unexpected = Vec::new();
    for (place, bytes) in &bodies {
        let body: Value = serde_json::from_slice(bytes).unwrap();
        if let Err(e) = validate_envelope(&body) {
            unexpected.push(format!("{place}: {e}"));
        }
        let mut all = Vec::new();
        strings(&body, "", &mut all);
        for (path, s) in all {
            let ok = match path.as_str() {
                ".clientVer" => client_versions.contains(&s.as_str()),
                ".sessionId" => stored_sessions.contains(&s),
                ".cpuArchitecture" => s == std::env::consts::ARCH,
                ".sentTs" => is_timestamp(&s),
                p if p.starts_with(".events[") && p.ends_with("].ts") => is_timestamp(&s),
                p if p.starts_with(".events[") && p.ends_with("].name") => {
                    s == "EvaluationTaskEvent" || s == "LauncherJobEvent"
                }
                p if p.starts_with(".events[") => allowed_parameters.contains(&s),
                _ => CONSTANTS.contains(&s.as_str()),
            };
            if !ok {
                unexpected.push(format!("{place}: {path} = {s:?}"));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "values outside the allowlist left:\n{}",
        unexpected.join("\n")
    );
    // The random and the Slurm-derived session ids are UUIDs, not something of the host.
    assert!(stored_sessions.contains("given-session-1"));
    for s in &stored_sessions {
        assert!(
            s == "given-session-1" || uuid::Uuid::parse_str(s).is_ok(),
            "session id {s:?}"
        );
    }
}
