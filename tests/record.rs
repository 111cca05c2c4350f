//! `telespool record`: every validation rule, levels at record time, session ids,
//! and many writers at once. Each test drives the built binary in its own sandbox.

mod common;

use common::sandbox::*;
use serde_json::Value;

#[test]
fn every_case_in_the_fixture_gets_its_exit_code_and_bad_input_writes_nothing() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/record-cases.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() > 40);
    for case in cases {
        let sb = Sandbox::new();
        let name = case["name"].as_str().unwrap();
        let args: Vec<&str> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let out = match case.get("stdin") {
            Some(input) => sb.run_stdin(&args, input.as_str().unwrap().as_bytes()),
            None => sb.run(&args),
        };
        let expected = case["exit"].as_i64().unwrap() as i32;
        assert_eq!(
            out.status.code(),
            Some(expected),
            "case {name:?}: stderr: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        if expected != 0 {
            assert_eq!(err.lines().count(), 1, "case {name:?}: one line: {err}");
            assert!(err.starts_with("telespool: "), "case {name:?}: {err}");
            assert!(!err.contains("panicked"), "case {name:?}: {err}");
            if let Some(m) = case.get("mentions") {
                assert!(err.contains(m.as_str().unwrap()), "case {name:?}: {err}");
            }
            // Nothing written: no spool was even created, or it holds nothing.
            assert!(
                !sb.spool.exists() || sb.queued() == 0,
                "case {name:?} wrote something"
            );
        } else {
            assert!(sb.queued() >= 1, "case {name:?} stored nothing");
        }
    }
}

#[test]
fn optional_fields_are_stored_with_their_defaults() {
    let sb = Sandbox::new();
    sb.record_task("mmlu", "m", "started");
    assert_ok(&sb.run(&[
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
    ]));
    let doc = sb.inspect();
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events[0]["parameters"]["executionDurationSeconds"], 0.0);
    assert!(events[0]["parameters"]["executionDurationSeconds"].is_f64());
    assert_eq!(events[1]["parameters"]["tasks"], serde_json::json!([]));
    assert_eq!(events[1]["parameters"]["exporters"], serde_json::json!([]));
    assert_eq!(events[0]["clientVer"], "undefined");
}

#[test]
fn lists_keep_their_order() {
    let sb = Sandbox::new();
    assert_ok(&sb.run(&[
        "record",
        "launcher-job",
        "--executor",
        "slurm",
        "--deployment",
        "vllm",
        "--model",
        "m",
        "--status",
        "success",
        "--task",
        "zeta",
        "--task",
        "alpha",
        "--exporter",
        "wandb",
        "--exporter",
        "mlflow",
    ]));
    let doc = sb.inspect();
    let p = &doc["events"][0]["parameters"];
    assert_eq!(p["tasks"], serde_json::json!(["zeta", "alpha"]));
    assert_eq!(p["exporters"], serde_json::json!(["wandb", "mlflow"]));
}

#[test]
fn level_0_writes_nothing_and_touches_no_file() {
    let sb = Sandbox::new();
    let out = sb.try_record("a", &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "0")]);
    assert_ok(&out);
    assert!(out.stderr.is_empty(), "silent at level 0: {}", stderr(&out));
    assert!(!sb.spool.exists(), "level 0 must not create the spool");
}

#[test]
fn level_1_never_stores_the_model_name_anywhere() {
    let sb = Sandbox::new();
    let secret = "secret-org/private-model-7b";
    for status in ["started", "success"] {
        let out = sb.run_env(
            &[
                "record",
                "evaluation-task",
                "--task",
                "mmlu",
                "--framework",
                "f",
                "--model",
                secret,
                "--status",
                status,
            ],
            &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")],
        );
        assert_ok(&out);
    }
    let line = format!(
        r#"{{"name":"LauncherJobEvent","parameters":{{"executorType":"slurm","deploymentType":"nim","model":"{secret}","status":"started"}}}}"#
    );
    assert_ok(
        &sb.cmd()
            .env("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")
            .args(["record", "--json", &line])
            .output()
            .unwrap(),
    );
    assert!(!contains(&sb.spool_bytes(), secret), "model name on disk");
    assert!(
        !contains(&sb.spool_bytes(), "private-model"),
        "model name on disk"
    );
    // Even read back at level 2, it stays redacted: it was never stored.
    let doc = sb.inspect();
    for e in doc["events"].as_array().unwrap() {
        assert_eq!(e["parameters"]["model"], "redacted");
    }
    assert_eq!(doc["queued"], 3);
}

#[test]
fn level_2_recorded_events_are_redacted_when_inspected_at_level_1() {
    let sb = Sandbox::new();
    sb.record_task("mmlu", "my/model", "success");
    assert_eq!(sb.inspect()["events"][0]["parameters"]["model"], "my/model");
    let doc = sb.inspect_env(&[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")]);
    assert_eq!(doc["events"][0]["parameters"]["model"], "redacted");
    let doc = sb.inspect_env(&[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "0")]);
    assert_eq!(
        doc["events"],
        serde_json::json!([]),
        "nothing would be sent"
    );
    assert_eq!(doc["queued"], 1, "but it is still queued");
}

fn session_of(sb: &Sandbox, env: &[(&str, &str)]) -> String {
    let before = sb.inspect()["events"].as_array().map_or(0, |e| e.len());
    let out = sb.run_env(
        &[
            "record",
            "evaluation-task",
            "--task",
            "a",
            "--framework",
            "f",
            "--model",
            "m",
            "--status",
            "started",
        ],
        env,
    );
    assert_ok(&out);
    let doc = sb.inspect();
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), before + 1);
    events[before]["sessionId"].as_str().unwrap().to_string()
}

#[test]
fn session_ids_from_env_slurm_and_random() {
    let sb = Sandbox::new();
    let given = session_of(
        &sb,
        &[("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", "my-session-1")],
    );
    assert_eq!(given, "my-session-1");

    let job = [
        ("SLURM_JOB_ID", "987654"),
        ("SLURM_CLUSTER_NAME", "tinycluster"),
    ];
    let a = session_of(&sb, &job);
    let b = session_of(&sb, &job);
    assert_eq!(a, b, "same job, same session");
    let other_job = session_of(
        &sb,
        &[
            ("SLURM_JOB_ID", "987655"),
            ("SLURM_CLUSTER_NAME", "tinycluster"),
        ],
    );
    assert_ne!(a, other_job, "other job, other session");
    let other_cluster = session_of(
        &sb,
        &[("SLURM_JOB_ID", "987654"), ("SLURM_CLUSTER_NAME", "big")],
    );
    assert_ne!(a, other_cluster);
    assert!(uuid_like(&a), "{a}");

    let other_spool = Sandbox::new();
    assert_ne!(a, session_of(&other_spool, &job), "other spool, other key");

    let r1 = session_of(&sb, &[]);
    let r2 = session_of(&sb, &[]);
    assert_ne!(r1, r2, "random outside Slurm");
    assert!(uuid_like(&r1));

    // The job id never shows: not in the spool's bytes, not in inspect.
    assert!(!contains(&sb.spool_bytes(), "987654"));
    assert!(!sb.inspect().to_string().contains("987654"));
}

#[test]
fn bad_session_id_is_refused_naming_the_variable() {
    let sb = Sandbox::new();
    for bad in ["a\tb", "é", &"x".repeat(129)] {
        let out = sb.run_env(
            &[
                "record",
                "evaluation-task",
                "--task",
                "a",
                "--framework",
                "f",
                "--model",
                "m",
                "--status",
                "started",
            ],
            &[("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", bad)],
        );
        assert_exit(&out, 65);
        assert!(stderr(&out).contains("NEMO_EVALUATOR_TELEMETRY_SESSION_ID"));
    }
    assert!(!sb.spool.exists() || sb.queued() == 0);
}

#[test]
fn client_version_from_flag_or_env() {
    let sb = Sandbox::new();
    let args = [
        "record",
        "evaluation-task",
        "--task",
        "a",
        "--framework",
        "f",
        "--model",
        "m",
        "--status",
        "started",
    ];
    assert_ok(&sb.run_env(
        &args,
        &[("NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION", "0.2.8")],
    ));
    let mut with_flag = vec!["record", "--client-version", "9.9.9"];
    with_flag.extend_from_slice(&args[1..]);
    assert_ok(&sb.run_env(
        &with_flag,
        &[("NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION", "0.2.8")],
    ));
    let doc = sb.inspect();
    assert_eq!(doc["events"][0]["clientVer"], "0.2.8");
    assert_eq!(doc["events"][1]["clientVer"], "9.9.9");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn stdin_is_all_or_nothing_in_one_transaction() {
    let sb = Sandbox::new();
    let good = r#"{"name":"EvaluationTaskEvent","parameters":{"task":"a","frameworkName":"f","model":"m","status":"success"}}"#;
    let mut input = String::new();
    for _ in 0..500 {
        input.push_str(good);
        input.push('\n');
    }
    assert_ok(&sb.run_stdin(&["record", "--json", "-"], input.as_bytes()));
    assert_eq!(sb.queued(), 500);
    input.push_str("{\"name\": \"EvaluationTaskEvent\", \"parameters\": {}}\n");
    let out = sb.run_stdin(&["record", "--json", "-"], input.as_bytes());
    assert_exit(&out, 65);
    assert!(stderr(&out).contains("line 501"), "{}", stderr(&out));
    assert_eq!(sb.queued(), 500, "nothing of the failed input was stored");
}

#[test]
fn a_10_mib_line_is_refused() {
    let sb = Sandbox::new();
    let line = format!("{{\"name\":\"{}\"}}\n", "x".repeat(10 << 20));
    let out = sb.run_stdin(&["record", "--json", "-"], line.as_bytes());
    assert_exit(&out, 65);
    assert!(stderr(&out).contains("longer than"));
}

#[test]
fn eight_writers_at_once_lose_nothing() {
    let sb = Sandbox::new();
    // 8 processes, each recording 200 events one `record` at a time.
    let children: Vec<_> = (0..8)
        .map(|w| {
            let script = format!(
                "for i in $(seq 1 200); do {bin} record evaluation-task --task w{w}-$i \
                 --framework f --model m --status success || exit 1; done",
                bin = BIN
            );
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("TELESPOOL_DIR", &sb.spool)
                .env("HOME", &sb.home)
                .env("XDG_CONFIG_HOME", &sb.config_home)
                .env_remove("NEMO_EVALUATOR_TELEMETRY_LEVEL")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a writer failed");
    }
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 1600);
    let mut tasks: Vec<String> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["parameters"]["task"].as_str().unwrap().to_string())
        .collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 1600, "every event exactly once");
    let check: String = sb
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
