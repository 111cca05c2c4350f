//! `telespool run -- CMD` (SPEC §4): CMD runs with the endpoint pointing at a listener
//! for its lifetime, its environment otherwise untouched, signals forwarded, and
//! telespool exits with CMD's status.

mod common;
mod listen_support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::sandbox::*;
use listen_support::*;
use rustix::process::Signal;

/// Posts the file `$1` to `$NEMO_EVALUATOR_TELEMETRY_ENDPOINT` with nothing but bash's
/// /dev/tcp, and prints the status line it got.
const POST_WITH_BASH: &str = r#"
set -eu
hostport=${NEMO_EVALUATOR_TELEMETRY_ENDPOINT#http://}; hostport=${hostport%%/*}
body=$(cat "$1")
exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
printf 'POST /v1.1/events/json HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$hostport" "${#body}" "$body" >&3
head -n 1 <&3
exit "${2:-0}"
"#;

#[test]
fn cmd_gets_the_endpoint_and_the_rest_of_the_environment_untouched() {
    let sb = Sandbox::new();
    let out = sb.run_env(
        &[
            "run",
            "--",
            "sh",
            "-c",
            r#"echo "$NEMO_EVALUATOR_TELEMETRY_ENDPOINT|$KEEP_ME|$NEMO_EVALUATOR_TELEMETRY_LEVEL""#,
        ],
        &[
            ("KEEP_ME", "kept"),
            ("NEMO_EVALUATOR_TELEMETRY_LEVEL", "2"),
            (
                "NEMO_EVALUATOR_TELEMETRY_ENDPOINT",
                "https://elsewhere.invalid/x",
            ),
        ],
    );
    assert_ok(&out);
    let line = stdout(&out);
    let (url, rest) = line.trim().split_once('|').unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    assert!(url.ends_with("/v1.1/events/json"), "{line}");
    assert_eq!(rest, "kept|2");
    assert_eq!(
        stderr(&out),
        "",
        "run is silent unless something goes wrong"
    );
}

#[test]
fn what_cmd_posts_is_spooled_and_its_exit_status_is_passed_on() {
    let sb = Sandbox::new();
    let body = sb.root().join("body.json");
    std::fs::write(&body, upstream_body_bytes()).unwrap();
    let out = sb.run_env(
        &[
            "run",
            "--",
            "bash",
            "-c",
            POST_WITH_BASH,
            "post",
            body.to_str().unwrap(),
            "3",
        ],
        &[KEEP_OLD_EVENTS],
    );
    assert_exit(&out, 3);
    assert_eq!(stdout(&out).trim_end(), "HTTP/1.1 200 OK");
    let doc = sb.inspect_env(&[KEEP_OLD_EVENTS]);
    assert_eq!(doc["queued"], 2);
    assert_eq!(doc["events"][0]["sessionId"], "sess-abc");
}

#[test]
fn exit_statuses_follow_the_shell_conventions() {
    let sb = Sandbox::new();
    assert_exit(&sb.run(&["run", "--", "sh", "-c", "exit 0"]), 0);
    assert_exit(&sb.run(&["run", "--", "sh", "-c", "exit 42"]), 42);
    // Died of a signal: 128 + N.
    assert_exit(&sb.run(&["run", "--", "sh", "-c", "kill -KILL $$"]), 137);
    assert_exit(&sb.run(&["run", "--", "sh", "-c", "kill -TERM $$"]), 143);

    let out = sb.run(&["run", "--", "no-such-command-telespool"]);
    assert_exit(&out, 127);
    assert_eq!(
        stderr(&out).trim_end(),
        "telespool: cannot run `no-such-command-telespool`: command not found"
    );
    let not_executable = sb.root().join("plain.txt");
    std::fs::write(&not_executable, "hello").unwrap();
    let out = sb.run(&["run", "--", not_executable.to_str().unwrap()]);
    assert_exit(&out, 126);

    // No command at all is a usage error.
    assert_exit(&sb.run(&["run"]), 64);
}

#[test]
fn a_port_that_cannot_be_bound_warns_and_cmd_runs_anyway() {
    // Telemetry must never stop the job step it wraps.
    let sb = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let marker = sb.root().join("ran");
    let out = sb.run(&[
        "run",
        "--port",
        &port,
        "--",
        "sh",
        "-c",
        &format!("touch {}; exit 3", marker.to_str().unwrap()),
    ]);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    assert!(err.contains("running the command without it"), "{err}");
    assert!(
        marker.exists(),
        "CMD must run although the listener could not bind"
    );
}

#[test]
fn a_given_port_is_used() {
    let sb = Sandbox::new();
    // Find a free port, then let go of it for telespool.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = sb.run(&[
        "run",
        "--port",
        &port.to_string(),
        "--",
        "sh",
        "-c",
        "echo $NEMO_EVALUATOR_TELEMETRY_ENDPOINT",
    ]);
    if stderr(&out).contains("cannot listen") {
        // Someone else took the port in between; nothing to learn this time.
        return;
    }
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim_end(),
        format!("http://127.0.0.1:{port}/v1.1/events/json")
    );
}

#[test]
fn sigterm_sigint_and_sighup_are_forwarded_to_cmd() {
    for (signal, name, code) in [
        (Signal::TERM, "TERM", 7),
        (Signal::INT, "INT", 8),
        (Signal::HUP, "HUP", 9),
    ] {
        let sb = Sandbox::new();
        let script = format!(
            "trap 'echo got {name}; exit {code}' {name}; echo ready; \
             while :; do sleep 0.05; done"
        );
        let mut child = sb
            .cmd()
            .args(["run", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        send_signal(&child, signal);
        let status = wait_exit(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("{name}: telespool run did not exit")
        });
        assert_eq!(status.code(), Some(code), "{name}");
        assert_eq!(lines.next().unwrap().unwrap(), format!("got {name}"));
    }
}

#[test]
fn verbose_says_where_it_listens_and_what_it_stored() {
    let sb = Sandbox::new();
    let body = sb.root().join("body.json");
    std::fs::write(&body, upstream_body_bytes()).unwrap();
    let out = sb.run_env(
        &[
            "-v",
            "run",
            "--",
            "bash",
            "-c",
            POST_WITH_BASH,
            "post",
            body.to_str().unwrap(),
        ],
        &[KEEP_OLD_EVENTS],
    );
    assert_ok(&out);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("telespool: listening on http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        lines[1].contains("POST /v1.1/events/json: 200 stored 2 events"),
        "{err}"
    );
    assert!(
        lines[2].contains("bash exited with 0; stored 2 events from 1 request"),
        "{err}"
    );
}
