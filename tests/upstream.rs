//! telespool against the real upstream client: NeMo Evaluator's own telemetry code
//! (PyPI nemo-evaluator 0.2.8 and nemo-evaluator-launcher 0.2.6), run unmodified in a
//! Python child, must be captured by `listen` and `run` exactly, must agree with
//! telespool on the telemetry level from either side of the shared config, and what
//! `upload` sends must be what upstream itself would have sent.
//!
//! The tests find the venv's python in TELESPOOL_TEST_PYTHON (.ci/run sets it). Without
//! it they skip with a visible line on stderr, except under CI=true, where they fail.

mod common;
mod listen_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::collector::Collector;
use common::sandbox::*;
use listen_support::*;
use serde_json::{json, Value};

/// The venv's python, or `None` (after saying so) when the tests cannot run here.
fn python() -> Option<PathBuf> {
    let why = match std::env::var_os("TELESPOOL_TEST_PYTHON") {
        Some(p) if Path::new(&p).is_file() => return Some(PathBuf::from(p)),
        Some(p) => format!(
            "TELESPOOL_TEST_PYTHON={} does not exist",
            p.to_string_lossy()
        ),
        None => "TELESPOOL_TEST_PYTHON is not set".to_string(),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}: CI must run the upstream client tests (.ci/run builds the venv)");
    }
    // Straight to the stderr handle, past the test harness's capture, so it is seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping: {why}; point it at the python of a venv with nemo-evaluator==0.2.8 and \
         nemo-evaluator-launcher==0.2.6 (bash .ci/lib/python-venv.sh prints one)"
    );
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// `program` with the same clean environment as the sandbox's telespool.
fn in_sandbox(sb: &Sandbox, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &sb.home)
        .env("XDG_CONFIG_HOME", &sb.config_home)
        .stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output().expect("run")
}

/// Events as a NeMo Evaluator run produces them: the launcher's job and the harness's
/// task, started then finished, with values that test the edges of the encoding.
fn run_events(model: &str) -> Value {
    json!([
        {"name": "LauncherJobEvent", "executor_type": "slurm", "deployment_type": "vllm",
         "model": model, "tasks": ["mmlu", "gsm8k", "tâche-ü"], "exporters": ["wandb", "mlflow"],
         "status": "started"},
        {"name": "EvaluationTaskEvent", "task": "mmlu", "framework_name": "lm-evaluation-harness",
         "model": model, "status": "started"},
        {"name": "EvaluationTaskEvent", "task": "mmlu", "framework_name": "lm-evaluation-harness",
         "model": model, "execution_duration_seconds": 1234.5678901234567, "status": "success"},
        {"name": "EvaluationTaskEvent", "task": "gsm8k", "framework_name": "lm-evaluation-harness",
         "model": model, "execution_duration_seconds": 3.25, "status": "failure"},
        {"name": "LauncherJobEvent", "executor_type": "slurm", "deployment_type": "vllm",
         "model": model, "status": "failure"}
    ])
}

/// What upstream's client reported sending.
struct Sent {
    level: u64,
    session_id: String,
    endpoint: String,
    payloads: Vec<Value>,
    statuses: Vec<Value>,
}

fn spec_file(sb: &Sandbox, name: &str, model: &str, exit_code: i32) -> PathBuf {
    let spec =
        json!({"client_version": "0.2.8", "events": run_events(model), "exit_code": exit_code});
    let path = sb.root().join(format!("{name}.spec.json"));
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    path
}

fn read_report(path: &Path) -> Sent {
    let report: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    Sent {
        level: report["level"].as_u64().unwrap(),
        session_id: report["session_id"].as_str().unwrap().to_string(),
        endpoint: report["endpoint"].as_str().unwrap().to_string(),
        payloads: report["payloads"].as_array().unwrap().clone(),
        statuses: report["statuses"].as_array().unwrap().clone(),
    }
}

/// Runs tests/python/client.py with `env`, its endpoint pointing at `url`.
fn run_client(sb: &Sandbox, python: &Path, url: &str, model: &str, env: &[(&str, &str)]) -> Sent {
    let spec = spec_file(sb, "client", model, 0);
    let report = sb.root().join("client.report.json");
    let mut cmd = in_sandbox(sb, python);
    cmd.arg(script("client.py"))
        .arg(&spec)
        .arg(&report)
        .env("NEMO_EVALUATOR_TELEMETRY_ENDPOINT", url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output(cmd);
    assert_ok(&out);
    read_report(&report)
}

/// `inspect --events` lists exactly the events of the payloads upstream sent, in order,
/// each with the client's session id and version; the model as `model` says.
fn assert_spooled_exactly(sb: &Sandbox, sent: &Sent, model: impl Fn(&Value) -> Value) {
    assert_eq!(sent.statuses, vec![json!(200)], "upstream's POSTs");
    assert_eq!(sent.payloads.len(), 1, "upstream sends once, at stop()");
    let payload = &sent.payloads[0];
    assert_eq!(payload["sessionId"], sent.session_id.as_str());
    let doc = sb.inspect();
    let got = doc["events"].as_array().unwrap();
    let want = payload["events"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{doc:#}");
    assert_eq!(want.len(), 5);
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(got["name"], want["name"], "event {i}");
        assert_eq!(got["ts"], want["ts"], "event {i}");
        assert_eq!(got["sessionId"], payload["sessionId"], "event {i}");
        assert_eq!(got["clientVer"], payload["clientVer"], "event {i}");
        let (g, w) = (
            got["parameters"].as_object().unwrap(),
            want["parameters"].as_object().unwrap(),
        );
        let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(g),
            keys(w),
            "event {i}: the same fields, in upstream's order"
        );
        for (key, w) in w {
            let w = if key == "model" { model(w) } else { w.clone() };
            assert_eq!(g[key], w, "event {i}: parameters.{key}");
        }
    }
}

#[test]
fn the_real_client_at_level_2_is_spooled_exactly() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[]);
    let sent = run_client(
        &sb,
        &python,
        &listener.url(),
        "meta/llama-3.1-8b-instruct",
        &[("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", "job-4711-session")],
    );
    assert_eq!(sent.level, 2);
    assert_eq!(sent.session_id, "job-4711-session");
    assert_eq!(sent.endpoint, listener.url());
    assert_spooled_exactly(&sb, &sent, |m| m.clone());
    assert_eq!(
        sb.inspect()["events"][0]["parameters"]["model"],
        "meta/llama-3.1-8b-instruct"
    );
}

#[test]
fn the_real_client_at_level_1_redacts_itself_and_is_spooled_exactly() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    let level_1 = [("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")];
    let listener = start_listen(&sb, &[], &level_1);
    // No session id given: upstream draws a random one, which must be kept.
    let sent = run_client(
        &sb,
        &python,
        &listener.url(),
        "secret-org/secret-model",
        &level_1,
    );
    assert_eq!(sent.level, 1);
    assert_eq!(
        sent.payloads[0]["events"][0]["parameters"]["model"], "redacted",
        "upstream's callers redact at level 1"
    );
    assert_spooled_exactly(&sb, &sent, |m| m.clone());
    assert!(!contains(&sb.spool_bytes(), "secret-model"));
}

#[test]
fn a_level_1_listener_redacts_what_a_level_2_client_sent() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "1")]);
    let sent = run_client(
        &sb,
        &python,
        &listener.url(),
        "secret-org/secret-model",
        &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", "2")],
    );
    assert_eq!(sent.level, 2);
    assert_eq!(
        sent.payloads[0]["events"][0]["parameters"]["model"],
        "secret-org/secret-model"
    );
    assert_spooled_exactly(&sb, &sent, |_| json!("redacted"));
    assert!(!contains(&sb.spool_bytes(), "secret-model"));
}

#[test]
fn the_real_client_under_run_is_spooled_exactly_and_its_status_passed_on() {
    let Some(python) = python() else { return };
    for (level, exit_code) in [("2", 0), ("1", 5)] {
        let sb = Sandbox::new();
        let spec = spec_file(&sb, "run", "org/model-x", exit_code);
        let report = sb.root().join("run.report.json");
        let python = python.to_str().unwrap();
        let out = sb.run_env(
            &[
                "run",
                "--",
                python,
                script("client.py").to_str().unwrap(),
                spec.to_str().unwrap(),
                report.to_str().unwrap(),
            ],
            &[("NEMO_EVALUATOR_TELEMETRY_LEVEL", level)],
        );
        assert_exit(&out, exit_code);
        let sent = read_report(&report);
        assert!(
            sent.endpoint.starts_with("http://127.0.0.1:")
                && sent.endpoint.ends_with("/v1.1/events/json"),
            "{}",
            sent.endpoint
        );
        assert_eq!(sent.level.to_string(), level);
        assert_spooled_exactly(&sb, &sent, |m| m.clone());
    }
}

/// The level NeMo Evaluator resolves in `sb` with `env`.
fn upstream_level(sb: &Sandbox, python: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = in_sandbox(sb, python);
    cmd.arg(script("level.py"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output(cmd);
    assert_ok(&out);
    stdout(&out).trim().to_string()
}

/// The level telespool resolves in `sb` with `env` (`config get` prints `N (NAME) ...`).
fn telespool_level(sb: &Sandbox, env: &[(&str, &str)]) -> String {
    let out = sb.run_env(&["config", "get", "telemetry.level"], env);
    assert_ok(&out);
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_launchers_config_set_governs_telespool_and_the_other_way_round() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    let launcher = python.with_file_name("nemo-evaluator-launcher");
    assert!(launcher.is_file(), "{} is missing", launcher.display());

    // Upstream writes the shared file; telespool reads it.
    let mut cmd = in_sandbox(&sb, &launcher);
    cmd.args(["config", "set", "telemetry.level", "1"]);
    assert_ok(&output(cmd));
    assert!(sb.config_file().is_file());
    let out = sb.run(&["config", "get", "telemetry.level"]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("1 (MINIMAL)"), "{}", stdout(&out));
    assert_ok(&sb.run(&[
        "record",
        "evaluation-task",
        "--task",
        "mmlu",
        "--framework",
        "lm-eval",
        "--model",
        "secret-model",
        "--status",
        "success",
    ]));
    assert_eq!(sb.inspect()["events"][0]["parameters"]["model"], "redacted");
    assert!(!contains(&sb.spool_bytes(), "secret-model"));

    // telespool writes it; upstream reads it.
    for level in ["0", "2", "1"] {
        assert_ok(&sb.run(&["config", "set", "telemetry.level", level]));
        assert_eq!(upstream_level(&sb, &python, &[]), level);
        // And the launcher's own `config get` agrees.
        let mut cmd = in_sandbox(&sb, &launcher);
        cmd.args(["config", "get", "telemetry.level"]);
        let out = output(cmd);
        assert_ok(&out);
        assert!(
            stderr(&out).contains(&format!("] {level} (")),
            "launcher says: {}",
            stderr(&out)
        );
    }
}

#[test]
fn both_sides_resolve_the_same_level_from_the_environment() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    // A config file that the environment must win over.
    assert_ok(&sb.run(&["config", "set", "telemetry.level", "2"]));
    for (value, want) in [
        ("0", "0"),
        ("1", "1"),
        ("2", "2"),
        (" 0 ", "0"),
        ("\t2\n", "2"),
        ("+1", "1"),
        ("01", "1"),
        ("abc", "1"),
        ("", "1"),
        ("3", "1"),
        ("-1", "1"),
        ("1.0", "1"),
    ] {
        let env = [("NEMO_EVALUATOR_TELEMETRY_LEVEL", value)];
        assert_eq!(
            upstream_level(&sb, &python, &env),
            want,
            "upstream, env {value:?}"
        );
        assert_eq!(telespool_level(&sb, &env), want, "telespool, env {value:?}");
    }
}

#[test]
fn both_sides_resolve_the_same_level_from_the_config_file() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.config_file().parent().unwrap()).unwrap();
    for (text, want) in [
        ("telemetry:\n  level: 0\n", "0"),
        ("telemetry:\n  level: 1\n", "1"),
        ("telemetry:\n  level: 2\n", "2"),
        ("telemetry:\n  level: 7\n", "1"),
        ("telemetry:\n  level: -1\n", "1"),
        ("telemetry:\n  level: 1.5\n", "1"),
        ("telemetry:\n  level: null\n", "1"),
        ("telemetry:\n  level: abc\n", "1"),
        ("telemetry: [\n", "1"),
        ("- a\n", "1"),
        ("", "2"),
        ("# nothing\n", "2"),
        ("telemetry: {}\n", "2"),
        ("other: 1\n", "2"),
    ] {
        std::fs::write(sb.config_file(), text).unwrap();
        assert_eq!(
            upstream_level(&sb, &python, &[]),
            want,
            "upstream, file {text:?}"
        );
        assert_eq!(telespool_level(&sb, &[]), want, "telespool, file {text:?}");
    }
}

/// The bodies `upload` sends for what the real client sent through `listen` are, key
/// for key, the bodies upstream's own `build_payload` makes of the same events (only
/// `sentTs`, the moment of sending, differs).
#[test]
fn upload_sends_what_upstream_itself_would_have_sent() {
    let Some(python) = python() else { return };
    let sb = Sandbox::new();
    let listener = start_listen(&sb, &[], &[]);
    let sent = run_client(&sb, &python, &listener.url(), "org/model-y", &[]);
    assert_eq!(sent.statuses, vec![json!(200)]);
    drop(listener);

    let collector = Collector::start();
    let out = sb.run(&["upload", "--endpoint", &collector.url(), "--quiet"]);
    assert_ok(&out);
    assert!(collector.wait_settled(Duration::from_secs(10)));
    let bodies: Vec<Value> = collector
        .requests()
        .iter()
        .map(|r| r.json().expect("a JSON body"))
        .collect();
    assert_eq!(
        bodies.len(),
        1,
        "one session, one client version, five events: one body"
    );
    let body = &bodies[0];

    // Upstream's build_payload for the same events, at their own times.
    let events: Vec<Value> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"name": e["name"], "ts": e["ts"], "parameters": e["parameters"]}))
        .collect();
    let input = sb.root().join("build_payload.json");
    let spec = json!({"session_id": sent.session_id, "client_version": "0.2.8", "events": events});
    std::fs::write(&input, serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut cmd = in_sandbox(&sb, &python);
    cmd.arg(script("build_payload.py")).arg(&input);
    let out = output(cmd);
    assert_ok(&out);
    let expected: Value = serde_json::from_slice(&out.stdout).unwrap();

    let (got, want) = (body.as_object().unwrap(), expected.as_object().unwrap());
    let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(got), keys(want), "the same keys in the same order");
    for (key, w) in want {
        if key != "sentTs" {
            assert_eq!(&got[key], w, "{key}");
        }
    }
    // And the events are the very ones the client sent.
    assert_eq!(body["events"], sent.payloads[0]["events"]);
    assert_eq!(body["cpuArchitecture"], sent.payloads[0]["cpuArchitecture"]);
}
