//! Hostile input: property tests on the event validator and the request-body parser
//! (never a panic; whatever passes holds only allowlisted, rule-abiding fields), and
//! the same through the built binary (always exit 0 or 65, never a backtrace).

mod common;

use common::sandbox::*;
use common::spec_body::{spec_body, spec_task_event};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use telespool::event::Event;
use telespool::wire;

const TASK_FIELDS: [&str; 5] = [
    "task",
    "frameworkName",
    "model",
    "executionDurationSeconds",
    "status",
];
const JOB_FIELDS: [&str; 6] = [
    "executorType",
    "deploymentType",
    "model",
    "tasks",
    "exporters",
    "status",
];

/// Any JSON value, nested a few levels, with strings that include control characters,
/// long runs and non-ASCII.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[a-z]{250,300}".prop_map(Value::String),
        prop_oneof![
            Just("started"),
            Just("success"),
            Just("failure"),
            Just("mmlu")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("task".to_string()),
                    Just("model".to_string()),
                    Just("status".to_string()),
                    Just("tasks".to_string()),
                    Just("name".to_string()),
                    Just("parameters".to_string()),
                    "[a-zA-Z]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Checks everything a validated event promises.
fn assert_clean(event: &Event) {
    let allowed: &[&str] = match event.kind() {
        telespool::event::Kind::EvaluationTask => &TASK_FIELDS,
        telespool::event::Kind::LauncherJob => &JOB_FIELDS,
    };
    let params = event.parameters();
    let keys: Vec<&str> = params.keys().map(String::as_str).collect();
    assert_eq!(keys, allowed, "exactly the allowlist, in order");
    for (key, value) in params {
        match value {
            Value::String(s) => {
                assert!(!s.is_empty() && s.len() <= 256, "{key}");
                assert!(!s.chars().any(char::is_control), "{key}");
            }
            Value::Array(items) => {
                assert!(items.len() <= 1000);
                for i in items {
                    let s = i.as_str().expect("list of strings");
                    assert!(!s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control));
                }
            }
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                assert!(f.is_finite() && f >= 0.0);
            }
            other => panic!("{key} holds {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                if let Ok(e) = Event::from_json(&v) { assert_clean(&e) }
            }
        }
        let _ = wire::parse_body(&bytes);
    }

    #[test]
    fn arbitrary_json_is_validated_or_refused(name in prop_oneof![
            Just(json!("EvaluationTaskEvent")), Just(json!("LauncherJobEvent")), any_json()],
        params in any_json()) {
        if let Ok(e) = Event::from_parts(&name, &params) { assert_clean(&e) }
        let doc = json!({"name": name, "parameters": params});
        if let Ok(e) = Event::from_json(&doc) { assert_clean(&e) }
    }

    #[test]
    fn near_valid_events_obey_every_rule(
        task in ".{0,300}", model in "\\PC{0,260}", duration in any::<f64>(),
        extra in proptest::option::of("[a-zA-Z]{1,10}"),
    ) {
        let mut p = json!({"task": task, "frameworkName": "f", "model": model, "status": "success"});
        if let Some(n) = serde_json::Number::from_f64(duration) {
            p["executionDurationSeconds"] = Value::Number(n);
        }
        if let Some(k) = &extra { p[k.as_str()] = json!("x"); }
        let result = Event::from_parts(&json!("EvaluationTaskEvent"), &p);
        let ok_len = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
        let extra_ok = extra.as_deref().is_none_or(|k| TASK_FIELDS.contains(&k));
        let duration_ok = !duration.is_finite() || duration >= 0.0;
        let expect_ok = ok_len(&task) && ok_len(&model) && duration_ok && extra_ok;
        prop_assert_eq!(result.is_ok(), expect_ok, "{:?}", result);
        if let Ok(e) = result { assert_clean(&e) }
    }

    #[test]
    fn mutated_request_bodies_never_panic(cut in 0usize..2000, flip in any::<u8>(), at in 0usize..2000) {
        let mut body = valid_body().into_bytes();
        let at = at % body.len();
        body[at] ^= flip;
        body.truncate(cut.max(1).min(body.len()));
        if let Ok(parsed) = wire::parse_body(&body) {
            for (_, e) in &parsed.events { assert_clean(e) }
        }
    }
}

fn valid_body() -> String {
    spec_body("s-1", "0.2.8", json!([spec_task_event("m")])).to_string()
}

#[test]
fn the_valid_body_used_above_is_valid() {
    assert!(wire::parse_body(valid_body().as_bytes()).is_ok());
}

proptest! {
    // Each case starts the binary: fewer cases, same promise end to end.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_binary_exits_0_or_65_on_any_json_line(value in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let sb = Sandbox::new();
        let mut input = serde_json::to_vec(&json!({"name": "EvaluationTaskEvent", "parameters": value})).unwrap();
        input.push(b'\n');
        for stdin in [input, bytes] {
            let out = sb.run_stdin(&["record", "--json", "-"], &stdin);
            let code = out.status.code();
            prop_assert!(code == Some(0) || code == Some(65), "{:?}: {}", code, stderr(&out));
            prop_assert!(!stderr(&out).contains("panicked"));
        }
        // Whatever got in holds nothing outside the allowlist.
        if sb.spool.exists() {
            for e in sb.inspect()["events"].as_array().unwrap() {
                let keys: Vec<&str> = e["parameters"].as_object().unwrap().keys().map(String::as_str).collect();
                prop_assert_eq!(keys, TASK_FIELDS.to_vec());
            }
        }
    }
}

#[test]
fn nothing_outside_the_allowlist_reaches_the_database() {
    let sb = Sandbox::new();
    // Smuggling attempts that must all be refused...
    let attempts = [
        r#"{"name":"EvaluationTaskEvent","parameters":{"task":"a","frameworkName":"f","model":"m","status":"success","hostname":"SMUGGLED-1"}}"#,
        r#"{"name":"EvaluationTaskEvent","parameters":{"task":"a","frameworkName":"f","model":"m","status":"success"},"user":"SMUGGLED-2"}"#,
        r#"{"name":"EvaluationTaskEvent","parameters":{"task":{"nested":"SMUGGLED-3"},"frameworkName":"f","model":"m","status":"success"}}"#,
    ];
    for a in attempts {
        assert_exit(&sb.run(&["record", "--json", a]), 65);
    }
    // ...while a good event goes in, carrying nothing of its environment.
    let out = sb.try_record(
        "a",
        &[
            ("USER", "SMUGGLED-USER"),
            ("HOSTNAME", "SMUGGLED-HOST"),
            ("SLURM_JOB_ID", "55501234"),
            ("SLURM_CLUSTER_NAME", "SMUGGLED-CLUSTER"),
        ],
    );
    assert_ok(&out);
    let bytes = sb.spool_bytes();
    for needle in ["SMUGGLED", "55501234", sb.home.to_str().unwrap()] {
        assert!(!contains(&bytes, needle), "{needle} reached the spool");
    }
    assert_eq!(sb.queued(), 1);
}
