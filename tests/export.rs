//! `telespool export` and `telespool upload --from` (SPEC §4): a spool carried out as a
//! file of request bodies and uploaded from another machine, all or nothing, once.

mod common;
mod upload_support;

use std::path::Path;

use common::collector::{validate_envelope, Collector};
use common::sandbox::*;
use common::spec_body::{spec_body, spec_task_event};
use serde_json::{json, Value};
use upload_support::*;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON body per line"))
        .collect()
}

/// `export --output FILE ARGS...` with `env` added; the output, unchecked.
fn try_export(
    sb: &Sandbox,
    file: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut full = vec!["export", "--output", file.to_str().unwrap()];
    full.extend_from_slice(args);
    sb.run_env(&full, env)
}

/// Exports `sb`'s spool to `file` and checks it worked.
fn export(sb: &Sandbox, file: &Path, args: &[&str]) -> std::process::Output {
    let out = try_export(sb, file, args, &[]);
    assert_ok(&out);
    out
}

#[test]
fn export_then_upload_from_elsewhere_delivers_everything_as_recorded() {
    let here = Sandbox::new();
    record_events(&here, 130, "sess-1", "0.2.8", "my/model");
    record_events(&here, 3, "sess-2", "0.2.6", "my/model");
    let recorded = here.inspect()["events"].as_array().unwrap().clone();
    let file = here.root().join("carry.jsonl");
    let out = export(&here, &file, &[]);
    assert!(stderr(&out).contains("exported 133 events in 3 request bodies"));

    // One body per line, exactly as upload would send them, and gone from the spool.
    let bodies = lines(&file);
    assert_eq!(bodies.len(), 3);
    for b in &bodies {
        validate_envelope(b).unwrap();
    }
    assert_eq!(here.queued(), 0);
    let names: Vec<String> = std::fs::read_dir(here.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".telespool-export")),
        "no temporary file left: {names:?}"
    );

    let there = Sandbox::new();
    let c = Collector::start();
    let out = upload(&there, &c.url(), &["--from", file.to_str().unwrap()]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("imported 133 events"),
        "{}",
        stderr(&out)
    );
    c.assert_valid();
    let delivered = c.delivered();
    assert_eq!(delivered.len(), 133);
    // Event times, session ids and client versions travel unchanged.
    for (r, d) in recorded.iter().zip(&delivered) {
        assert_eq!(r["ts"], Value::from(d.ts.clone()));
        assert_eq!(r["sessionId"], Value::from(d.session_id.clone()));
        assert_eq!(r["clientVer"], Value::from(d.client_ver.clone()));
        assert_eq!(r["parameters"], d.parameters);
    }
    assert_eq!(there.queued(), 0);
}

/// A spool of `n` events (one session) exported to a file; the spool is kept alive, as
/// the file lives in its directory.
fn exported_file(n: usize) -> (Sandbox, std::path::PathBuf) {
    let here = Sandbox::new();
    record_events(&here, n, "s", "1", "m");
    let file = here.root().join("carry.jsonl");
    export(&here, &file, &[]);
    (here, file)
}

#[test]
fn importing_the_same_file_twice_sends_nothing_twice() {
    let (_here, file) = exported_file(5);

    let there = Sandbox::new();
    let c = Collector::start();
    assert_ok(&upload(
        &there,
        &c.url(),
        &["--from", file.to_str().unwrap()],
    ));
    assert_eq!(c.delivered_count(), 5);
    let out = upload(&there, &c.url(), &["--from", file.to_str().unwrap()]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("already imported"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.delivered_count(), 5);
    assert_eq!(there.queued(), 0);
}

#[test]
fn an_interrupted_upload_from_a_file_resumes_without_resending() {
    let (_here, file) = exported_file(250);

    let there = Sandbox::new();
    let c = Collector::start();
    c.enqueue_all([
        common::collector::Reply::ok(),
        common::collector::Reply::status(503),
    ]);
    let from = ["--from", file.to_str().unwrap()];
    assert_exit(&upload(&there, &c.url(), &from), 75);
    assert_eq!(c.delivered_count(), 100);
    // Run again with the same file: nothing imported twice, the rest goes.
    let mut again = from.to_vec();
    again.push("--now");
    assert_ok(&upload(&there, &c.url(), &again));
    assert_eq!(c.delivered_count(), 250);
    let mut tasks: Vec<String> = c
        .delivered()
        .iter()
        .map(|e| e.parameters["task"].to_string())
        .collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 250);
}

#[test]
fn export_at_level_1_holds_no_model_name_anywhere() {
    let sb = Sandbox::new();
    record_events(&sb, 20, "s", "1", "secret-org/secret-model-7b");
    let file = sb.root().join("out.jsonl");
    assert_ok(&try_export(
        &sb,
        &file,
        &[],
        &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")],
    ));
    let bytes = std::fs::read(&file).unwrap();
    assert!(!contains(&bytes, "secret"), "the model name leaked");
    assert_eq!(models(&lines(&file)), vec!["redacted"; 20]);

    // Imported at level 2 elsewhere, it stays redacted: the file never held the name.
    let there = Sandbox::new();
    let c = Collector::start();
    assert_ok(&upload(
        &there,
        &c.url(),
        &["--from", file.to_str().unwrap()],
    ));
    assert!(c.requests().iter().all(|r| !contains(&r.body, "secret")));
}

#[test]
fn upload_from_at_level_1_stores_and_sends_no_model_name() {
    let here = Sandbox::new();
    record_events(&here, 4, "s", "1", "secret-model");
    let file = here.root().join("out.jsonl");
    export(&here, &file, &[]);
    assert!(contains(&std::fs::read(&file).unwrap(), "secret-model"));

    let there = Sandbox::new();
    let c = Collector::start();
    let level1 = [("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")];
    // Import only (the endpoint refuses), to look at the spool in between.
    c.set_default(common::collector::Reply::status(503));
    let out = upload_env(
        &there,
        &c.url(),
        &["--from", file.to_str().unwrap()],
        &level1,
    );
    assert_exit(&out, 75);
    assert!(!contains(&there.spool_bytes(), "secret-model"));
    c.set_default(common::collector::Reply::ok());
    assert_ok(&upload(&there, &c.url(), &["--now"]));
    assert!(c
        .requests()
        .iter()
        .all(|r| !contains(&r.body, "secret-model")));
    assert_eq!(c.delivered_count(), 4);
}

#[test]
fn keep_and_stdout_leave_the_events_queued() {
    let sb = Sandbox::new();
    record_events(&sb, 3, "s", "1", "m");
    let file = sb.root().join("kept.jsonl");
    export(&sb, &file, &["--keep"]);
    assert_eq!(lines(&file).len(), 1);
    assert_eq!(sb.queued(), 3);

    let out = sb.run(&["export", "--output", "-"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1);
    let body: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    validate_envelope(&body).unwrap();
    assert_eq!(sb.queued(), 3, "--output - implies --keep");
}

#[test]
fn export_matches_dry_run_and_skips_rejected_events() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 2, "bad", "1", "m");
    c.enqueue(common::collector::Reply::status(400));
    assert_exit(&upload(&sb, &c.url(), &[]), 65);
    record_events(&sb, 120, "s", "1", "m");

    let dry = upload(&sb, &c.url(), &["--dry-run"]);
    let file = sb.root().join("out.jsonl");
    let out = export(&sb, &file, &[]);
    assert!(stderr(&out).contains("2 rejected events were not exported"));
    let exported = lines(&file);
    let previewed: Vec<Value> = stdout(&dry)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 2);
    assert_eq!(previewed.len(), 2);
    for (mut a, mut b) in exported.into_iter().zip(previewed) {
        a["sentTs"] = Value::Null;
        b["sentTs"] = Value::Null;
        assert_eq!(a, b);
    }
    assert_eq!(queued_and_rejected(&summary(&sb)), (0, 2));
}

#[test]
fn level_0_exports_nothing() {
    let sb = Sandbox::new();
    record_events(&sb, 3, "s", "1", "m");
    let file = sb.root().join("none.jsonl");
    let out = try_export(&sb, &file, &[], &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "0")]);
    assert_ok(&out);
    assert!(stderr(&out).contains("level is 0"));
    assert!(!file.exists());
    assert_eq!(sb.queued(), 3);
}

#[test]
fn an_empty_spool_exports_an_empty_file_which_imports_nothing() {
    let sb = Sandbox::new();
    let file = sb.root().join("empty.jsonl");
    export(&sb, &file, &[]);
    assert_eq!(std::fs::read(&file).unwrap(), b"");
    let c = Collector::start();
    let out = upload(&sb, &c.url(), &["--from", file.to_str().unwrap()]);
    assert_ok(&out);
    assert_eq!(c.request_count(), 0);
}

#[test]
fn an_unwritable_output_fails_73_and_keeps_the_events() {
    let sb = Sandbox::new();
    record_events(&sb, 3, "s", "1", "m");
    let file = sb.root().join("no/such/dir/out.jsonl");
    let out = try_export(&sb, &file, &[], &[]);
    assert_exit(&out, 73);
    assert_eq!(stderr(&out).lines().count(), 1);
    assert_eq!(sb.queued(), 3);
}

/// A valid exported line with one event.
fn good_line() -> String {
    spec_body("sess-x", "0.2.8", json!([spec_task_event("m")])).to_string()
}

#[test]
fn bad_files_import_nothing_and_name_the_line() {
    let good = good_line();
    let bad_status = good.replace("\"success\"", "\"done\"");
    let unknown_field = good.replace("\"task\":\"mmlu\"", "\"task\":\"mmlu\",\"user\":\"me\"");
    let truncated = &good[..good.len() / 2];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            format!("{good}\n{{\"browserType\": \n{good}\n").into_bytes(),
            "line 2",
        ),
        (
            "truncated last line",
            format!("{good}\n{good}\n{truncated}").into_bytes(),
            "line 3",
        ),
        ("a §3 rule broken", format!("{good}\n{good}\n{bad_status}\n").into_bytes(), "line 3"),
        ("an unknown field", format!("{unknown_field}\n").into_bytes(), "line 1"),
        (
            "record --json lines",
            b"{\"name\": \"EvaluationTaskEvent\", \"parameters\": {\"task\": \"t\", \"frameworkName\": \"f\", \"model\": \"m\", \"status\": \"success\"}}\n".to_vec(),
            "line 1",
        ),
        ("CSV", b"ts,name,task\n2026-01-01,EvaluationTaskEvent,mmlu\n".to_vec(), "line 1"),
        ("binary", vec![0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x10], "line 1"),
        ("a 10 MiB line", {
            let mut v = format!("{good}\n").into_bytes();
            v.extend(std::iter::repeat_n(b'x', 10 << 20));
            v.push(b'\n');
            v
        }, "line 2"),
        ("a 20 MiB line without an end", {
            let mut v = format!("{good}\n{good}\n").into_bytes();
            v.extend(std::iter::repeat_n(b'[', 20 << 20));
            v
        }, "line 3"),
    ];
    for (what, content, line) in cases {
        let sb = Sandbox::new();
        let c = Collector::start();
        record_events(&sb, 2, "local", "1", "m");
        let file = sb.root().join("bad.jsonl");
        std::fs::write(&file, &content).unwrap();
        let out = upload(&sb, &c.url(), &["--from", file.to_str().unwrap()]);
        assert_exit(&out, 65);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains(line), "{what}: {err}");
        assert!(err.contains("bad.jsonl"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_eq!(c.connections(), 0, "{what}: nothing sent");
        let s = summary(&sb);
        assert_eq!(s["queued"], 2, "{what}: the local spool is untouched");
        // And not remembered as imported: fixing the file lets it in.
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let sb = Sandbox::new();
    let c = Collector::start();
    let out = upload(&sb, &c.url(), &["--from", "/no/such/file.jsonl"]);
    assert_exit(&out, 74);
    assert!(stderr(&out).contains("/no/such/file.jsonl"));
    // A bad file creates no spool either.
    let bad = sb.root().join("bad.jsonl");
    std::fs::write(&bad, "not json\n").unwrap();
    assert_exit(
        &upload(&sb, &c.url(), &["--from", bad.to_str().unwrap()]),
        65,
    );
    assert!(!sb.spool.exists());
}

#[test]
fn export_while_an_upload_runs_is_refused_but_keep_is_fine() {
    let sb = Sandbox::new();
    let c = Collector::start();
    record_events(&sb, 5, "s", "1", "m");
    c.enqueue(common::collector::Reply::ok().delay(std::time::Duration::from_secs(5)));
    let running = spawn_upload(&sb, &c.url(), &[], &[]);
    assert!(c.wait_for_requests(1, std::time::Duration::from_secs(15)));
    let file = sb.root().join("out.jsonl");
    let out = try_export(&sb, &file, &[], &[]);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("upload is running"));
    assert!(!file.exists());
    // In-flight events are not exported even with --keep.
    export(&sb, &file, &["--keep"]);
    assert_eq!(lines(&file).len(), 0);
    assert_ok(&finish(running, std::time::Duration::from_secs(20)));
    assert_eq!(c.delivered_count(), 5);
}
