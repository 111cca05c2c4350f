//! Helpers for the `upload`, `export` and TLS tests: fill a sandboxed spool with the real
//! `record` command, run `upload` against a collector, in the foreground or not.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::collector::Received;
use crate::common::sandbox::{assert_ok, Sandbox};

/// Records `n` EvaluationTaskEvents (tasks `t0`, `t1`, ...) in one `record --json -`,
/// with the given session id, client version and model.
pub fn record_events(sb: &Sandbox, n: usize, session: &str, client: &str, model: &str) {
    record_events_env(sb, n, session, client, model, &[]);
}

pub fn record_events_env(
    sb: &Sandbox,
    n: usize,
    session: &str,
    client: &str,
    model: &str,
    env: &[(&str, &str)],
) {
    let mut input = String::new();
    for i in 0..n {
        let event = json!({"name": "EvaluationTaskEvent", "parameters": {
            "task": format!("t{i}"), "frameworkName": "lm-eval", "model": model,
            "executionDurationSeconds": i as f64 / 4.0, "status": "success"}});
        input.push_str(&event.to_string());
        input.push('\n');
    }
    let mut cmd = sb.cmd();
    cmd.args(["record", "--json", "-", "--client-version", client])
        .env("NEMO_EVALUATOR_TELEMETRY_SESSION_ID", session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn record");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
}

/// `upload --endpoint URL ARGS...`.
pub fn upload(sb: &Sandbox, url: &str, args: &[&str]) -> Output {
    upload_env(sb, url, args, &[])
}

pub fn upload_env(sb: &Sandbox, url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut full = vec!["upload", "--endpoint", url];
    full.extend_from_slice(args);
    sb.run_env(&full, env)
}

/// Starts `upload --endpoint URL ARGS...` in the background.
pub fn spawn_upload(sb: &Sandbox, url: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = sb.cmd();
    cmd.args(["upload", "--endpoint", url])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn upload")
}

/// Waits for `child` at most `limit`; kills it and panics if it takes longer.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            child.stdout.take().map(|mut s| s.read_to_end(&mut stdout));
            child.stderr.take().map(|mut s| s.read_to_end(&mut stderr));
            return Output {
                status,
                stdout,
                stderr,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 50 ms until it holds; false once `limit` has passed.
pub fn eventually(limit: Duration, done: impl FnMut() -> bool) -> bool {
    crate::common::poll_until(limit, Duration::from_millis(50), done)
}

/// The (sessionId, clientVer) of a request body.
pub fn stream_of(r: &Received) -> (String, String) {
    let body = r.json().expect("a JSON body");
    (
        body["sessionId"].as_str().unwrap().to_string(),
        body["clientVer"].as_str().unwrap().to_string(),
    )
}

/// POST requests only (a proxy test also sees CONNECT).
pub fn posts(requests: Vec<Received>) -> Vec<Received> {
    requests
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

/// Every model name in every event of `bodies`.
pub fn models(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["parameters"]["model"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `inspect --json`, parsed.
pub fn summary(sb: &Sandbox) -> Value {
    let out = sb.run(&["inspect", "--json"]);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `queued` and `rejected` of an `inspect --json` summary.
#[track_caller]
pub fn queued_and_rejected(summary: &Value) -> (u64, u64) {
    let count = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("no {key}"));
    (count("queued"), count("rejected"))
}
