//! The wire format of SPEC §5, checked exactly, and the event rules of SPEC §3.

use serde_json::{Map, Value};

/// Envelope keys whose value never changes.
const CONSTANT_KEYS: [(&str, &str); 25] = [
    ("browserType", "undefined"),
    ("clientId", "14399890258381784"),
    ("clientType", "Native"),
    ("clientVariant", "Release"),
    ("deviceGdprBehOptIn", "None"),
    ("deviceGdprFuncOptIn", "None"),
    ("deviceGdprTechOptIn", "None"),
    ("deviceId", "undefined"),
    ("deviceMake", "undefined"),
    ("deviceModel", "undefined"),
    ("deviceOS", "undefined"),
    ("deviceOSVersion", "undefined"),
    ("deviceType", "undefined"),
    ("eventProtocol", "1.6"),
    ("eventSchemaVer", "1.0"),
    ("eventSysVer", "nemo-telemetry/1.0"),
    ("externalUserId", "undefined"),
    ("gdprBehOptIn", "None"),
    ("gdprFuncOptIn", "None"),
    ("gdprTechOptIn", "None"),
    ("idpId", "undefined"),
    ("integrationId", "undefined"),
    ("productName", "undefined"),
    ("productVersion", "undefined"),
    ("userId", "undefined"),
];

/// Envelope keys whose value varies, checked one by one.
const VARIABLE_KEYS: [&str; 5] = [
    "clientVer",
    "cpuArchitecture",
    "sentTs",
    "sessionId",
    "events",
];

/// The rule of one event parameter (SPEC §3).
enum Rule {
    /// A string of 1..=max bytes without control characters.
    Text(usize),
    /// A list of at most `items` such strings of 1..=`bytes` bytes each.
    List {
        items: usize,
        bytes: usize,
    },
    /// A finite number >= 0.
    Seconds,
    Status,
}

const EVALUATION_TASK: [(&str, Rule); 5] = [
    ("task", Rule::Text(256)),
    ("frameworkName", Rule::Text(256)),
    ("model", Rule::Text(256)),
    ("executionDurationSeconds", Rule::Seconds),
    ("status", Rule::Status),
];

const LAUNCHER_JOB: [(&str, Rule); 6] = [
    ("executorType", Rule::Text(64)),
    ("deploymentType", Rule::Text(64)),
    ("model", Rule::Text(256)),
    (
        "tasks",
        Rule::List {
            items: 1000,
            bytes: 256,
        },
    ),
    (
        "exporters",
        Rule::List {
            items: 100,
            bytes: 64,
        },
    ),
    ("status", Rule::Status),
];

/// Checks a request body against the envelope of SPEC §5, exactly: every key present with
/// its constant value or a well-formed variable one, no other key, and every event exactly
/// `{ts, name, parameters}` with the full parameter set of its kind (SPEC §3). All problems
/// are reported, joined by "; ", each naming where it is.
pub fn validate_envelope(body: &Value) -> Result<(), String> {
    let mut problems = Vec::new();
    check_envelope(body, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn check_envelope(body: &Value, problems: &mut Vec<String>) {
    let Some(envelope) = body.as_object() else {
        return problems.push("body is not a JSON object".into());
    };
    let known = CONSTANT_KEYS.iter().map(|(k, _)| *k).chain(VARIABLE_KEYS);
    check_keys(envelope, known, "envelope", problems);
    for (key, expected) in CONSTANT_KEYS {
        if let Some(value) = envelope.get(key) {
            if value != expected {
                problems.push(format!("{key}: expected {expected:?}, got {value}"));
            }
        }
    }
    for key in ["clientVer", "cpuArchitecture"] {
        if let Some(value) = envelope.get(key) {
            check_text(value, 1, usize::MAX, key, problems);
        }
    }
    if let Some(session) = envelope.get("sessionId") {
        let printable =
            |s: &str| (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !session.as_str().is_some_and(printable) {
            problems.push(format!(
                "sessionId: expected 1..=128 printable ASCII bytes, got {session}"
            ));
        }
    }
    if let Some(sent) = envelope.get("sentTs") {
        check_timestamp(sent, "sentTs", problems);
    }
    match envelope.get("events").map(|e| e.as_array()) {
        None => {}
        Some(Some(events)) if !events.is_empty() => {
            for (i, event) in events.iter().enumerate() {
                check_event(event, &format!("events[{i}]"), problems);
            }
        }
        Some(_) => problems.push("events: expected a non-empty list".into()),
    }
}

fn check_event(event: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(event) = event.as_object() else {
        return problems.push(format!("{at}: not an object"));
    };
    check_keys(event, ["ts", "name", "parameters"], at, problems);
    if let Some(ts) = event.get("ts") {
        check_timestamp(ts, &format!("{at}.ts"), problems);
    }
    let rules: &[(&str, Rule)] = match event.get("name").and_then(Value::as_str) {
        Some("EvaluationTaskEvent") => &EVALUATION_TASK,
        Some("LauncherJobEvent") => &LAUNCHER_JOB,
        None if event.get("name").is_none() => return, // reported by check_keys
        _ => return problems.push(format!("{at}.name: unknown event kind {}", event["name"])),
    };
    let Some(parameters) = event.get("parameters") else {
        return;
    };
    let Some(parameters) = parameters.as_object() else {
        return problems.push(format!("{at}.parameters: not an object"));
    };
    let at = format!("{at}.parameters");
    check_keys(parameters, rules.iter().map(|(k, _)| *k), &at, problems);
    for (key, rule) in rules {
        let Some(value) = parameters.get(*key) else {
            continue;
        };
        let at = format!("{at}.{key}");
        match rule {
            Rule::Text(max) => check_text(value, 1, *max, &at, problems),
            Rule::List { items, bytes } => match value.as_array() {
                Some(list) if list.len() <= *items => {
                    for (i, item) in list.iter().enumerate() {
                        check_text(item, 1, *bytes, &format!("{at}[{i}]"), problems);
                    }
                }
                _ => problems.push(format!(
                    "{at}: expected a list of at most {items} strings, got {value}"
                )),
            },
            Rule::Seconds => {
                if !value.as_f64().is_some_and(|s| s.is_finite() && s >= 0.0) {
                    problems.push(format!("{at}: expected a finite number >= 0, got {value}"));
                }
            }
            Rule::Status => {
                if !matches!(value.as_str(), Some("started" | "success" | "failure")) {
                    problems.push(format!(
                        "{at}: expected started, success or failure, got {value}"
                    ));
                }
            }
        }
    }
}

/// Reports keys missing from `object` and keys it has beyond `expected`.
fn check_keys<'a>(
    object: &Map<String, Value>,
    expected: impl IntoIterator<Item = &'a str>,
    at: &str,
    problems: &mut Vec<String>,
) {
    let expected: Vec<&str> = expected.into_iter().collect();
    for key in &expected {
        if !object.contains_key(*key) {
            problems.push(format!("{at}: missing key {key:?}"));
        }
    }
    for key in object.keys() {
        if !expected.contains(&key.as_str()) {
            problems.push(format!("{at}: unexpected key {key:?}"));
        }
    }
}

fn check_text(value: &Value, min: usize, max: usize, at: &str, problems: &mut Vec<String>) {
    let fits = |s: &str| (min..=max).contains(&s.len()) && !s.chars().any(char::is_control);
    if !value.as_str().is_some_and(fits) {
        let limit = if max == usize::MAX {
            String::new()
        } else {
            format!("..={max}")
        };
        problems.push(format!(
            "{at}: expected a string of {min}{limit} bytes without control characters, got {value}"
        ));
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, and a real date and time.
fn check_timestamp(value: &Value, at: &str, problems: &mut Vec<String>) {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let well_formed = |s: &str| {
        s.len() == SHAPE.len()
            && s.bytes().zip(SHAPE).all(|(c, &p)| {
                if p == b'd' {
                    c.is_ascii_digit()
                } else {
                    c == p
                }
            })
            && chrono::NaiveDateTime::parse_from_str(&s[..23], "%Y-%m-%dT%H:%M:%S%.3f").is_ok()
    };
    if !value.as_str().is_some_and(well_formed) {
        problems.push(format!(
            "{at}: expected a UTC time like 2026-11-24T06:40:00.123Z, got {value}"
        ));
    }
}
