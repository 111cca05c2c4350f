//! The two event kinds and every validation rule of SPEC §3.
//!
//! All input — flags, `record --json`, imported files, bodies POSTed to `listen` — is
//! turned into a `serde_json` object and checked here, by one table per kind, so the
//! rules cannot drift apart between entry points. A validated [`Event`] holds exactly
//! the allowlisted fields, optional ones filled with their defaults, in upstream's
//! order: nothing else can reach the spool or the wire.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    EvaluationTask,
    LauncherJob,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::EvaluationTask, Kind::LauncherJob];

    /// The event name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Kind::EvaluationTask => "EvaluationTaskEvent",
            Kind::LauncherJob => "LauncherJobEvent",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The small integer the spool stores.
    pub fn code(self) -> i64 {
        match self {
            Kind::EvaluationTask => 1,
            Kind::LauncherJob => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    fn fields(self) -> &'static [Field] {
        match self {
            Kind::EvaluationTask => EVALUATION_TASK,
            Kind::LauncherJob => LAUNCHER_JOB,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Started,
    Success,
    Failure,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Started, Status::Success, Status::Failure];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// What a field may hold.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A string of `1..=max` bytes without control characters.
    Text { max: usize },
    /// A finite number `>= 0`, default 0.0.
    Seconds,
    /// A list of at most `items` strings, each a `Text { max }`, default `[]`.
    List { items: usize, max: usize },
    /// One of `started`, `success`, `failure`.
    Status,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    rule: Rule,
    required: bool,
}

const fn required(name: &'static str, rule: Rule) -> Field {
    Field {
        name,
        rule,
        required: true,
    }
}

const fn optional(name: &'static str, rule: Rule) -> Field {
    Field {
        name,
        rule,
        required: false,
    }
}

/// Field order is upstream's (pydantic declaration order), so bodies match key for key.
const EVALUATION_TASK: &[Field] = &[
    required("task", Rule::Text { max: 256 }),
    required("frameworkName", Rule::Text { max: 256 }),
    required("model", Rule::Text { max: 256 }),
    optional("executionDurationSeconds", Rule::Seconds),
    required("status", Rule::Status),
];

const LAUNCHER_JOB: &[Field] = &[
    required("executorType", Rule::Text { max: 64 }),
    required("deploymentType", Rule::Text { max: 64 }),
    required("model", Rule::Text { max: 256 }),
    optional(
        "tasks",
        Rule::List {
            items: 1000,
            max: 256,
        },
    ),
    optional(
        "exporters",
        Rule::List {
            items: 100,
            max: 64,
        },
    ),
    required("status", Rule::Status),
];

/// What replaces the model name at level 1, as upstream writes it.
pub const REDACTED: &str = "redacted";

/// A validated event: its kind and its complete, canonical parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    kind: Kind,
    status: Status,
    parameters: Map<String, Value>,
}

impl Event {
    /// Validates `{"name": ..., "parameters": {...}}`, the shape `record --json` takes.
    pub fn from_json(value: &Value) -> Result<Event, String> {
        let obj = value
            .as_object()
            .ok_or("expected a JSON object {\"name\": ..., \"parameters\": {...}}")?;
        if let Some(extra) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "parameters"))
        {
            return Err(format!(
                "{extra}: unknown field (an event has only name and parameters)"
            ));
        }
        let name = obj.get("name").ok_or("name: missing")?;
        let parameters = obj.get("parameters").ok_or("parameters: missing")?;
        Event::from_parts(name, parameters)
    }

    /// Validates an event name and its parameters object.
    pub fn from_parts(name: &Value, parameters: &Value) -> Result<Event, String> {
        let name = name.as_str().ok_or("name: must be a string")?;
        let kind = Kind::from_name(name).ok_or_else(|| {
            format!(
                "name: unknown event `{}` (expected EvaluationTaskEvent or LauncherJobEvent)",
                printable(name)
            )
        })?;
        let given = parameters
            .as_object()
            .ok_or("parameters: must be a JSON object")?;
        Event::validate(kind, given)
    }

    /// Validates `given` against the table of `kind`.
    pub fn validate(kind: Kind, given: &Map<String, Value>) -> Result<Event, String> {
        let fields = kind.fields();
        if let Some(unknown) = given.keys().find(|k| !fields.iter().any(|f| f.name == *k)) {
            let allowed: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(format!(
                "parameters.{}: unknown field ({} has {})",
                printable(unknown),
                kind.name(),
                allowed.join(", ")
            ));
        }
        let mut parameters = Map::new();
        let mut status = Status::Started;
        for field in fields {
            let at = |msg: String| format!("parameters.{}: {msg}", field.name);
            let value = match given.get(field.name) {
                Some(v) => check(field.rule, v).map_err(at)?,
                None if field.required => return Err(at("missing".to_string())),
                None => default_of(field.rule),
            };
            if let Rule::Status = field.rule {
                status = Status::parse(value.as_str().unwrap_or_default()).unwrap_or(status);
            }
            parameters.insert(field.name.to_string(), value);
        }
        Ok(Event {
            kind,
            status,
            parameters,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn parameters(&self) -> &Map<String, Value> {
        &self.parameters
    }

    pub fn model(&self) -> &str {
        self.parameters["model"].as_str().unwrap_or_default()
    }

    /// Replaces the model name with `redacted` (level 1).
    pub fn redact_model(&mut self) {
        self.parameters
            .insert("model".to_string(), Value::String(REDACTED.to_string()));
    }

    /// The parameters as compact JSON, the form the spool stores.
    pub fn parameters_json(&self) -> String {
        serde_json::to_string(&self.parameters).expect("a JSON map always serializes")
    }
}

fn check(rule: Rule, value: &Value) -> Result<Value, String> {
    match rule {
        Rule::Text { max } => {
            let s = value.as_str().ok_or("must be a string")?;
            check_text(s, max)?;
            Ok(value.clone())
        }
        Rule::Seconds => {
            let n = value.as_f64().ok_or("must be a number")?;
            if !n.is_finite() {
                return Err("must be a finite number".to_string());
            }
            if n < 0.0 {
                return Err(format!("must be >= 0, got {n}"));
            }
            // Always a float on the wire, as upstream's pydantic model sends it.
            Ok(Value::from(n))
        }
        Rule::List { items, max } => {
            let list = value.as_array().ok_or("must be a list of strings")?;
            if list.len() > items {
                return Err(format!(
                    "has {} entries, at most {items} allowed",
                    list.len()
                ));
            }
            for (i, entry) in list.iter().enumerate() {
                let s = entry
                    .as_str()
                    .ok_or_else(|| format!("entry {i} must be a string"))?;
                check_text(s, max).map_err(|e| format!("entry {i} {e}"))?;
            }
            Ok(value.clone())
        }
        Rule::Status => {
            let s = value.as_str().ok_or("must be a string")?;
            if Status::parse(s).is_none() {
                return Err(format!(
                    "`{}` is not a status (expected started, success or failure)",
                    printable(s)
                ));
            }
            Ok(value.clone())
        }
    }
}

fn check_text(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > max {
        return Err(format!("is {} bytes, at most {max} allowed", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".to_string());
    }
    Ok(())
}

fn default_of(rule: Rule) -> Value {
    match rule {
        Rule::Seconds => Value::from(0.0),
        Rule::List { .. } => Value::Array(Vec::new()),
        Rule::Text { .. } | Rule::Status => Value::Null,
    }
}

/// Quotes user text in an error message safely: short, and with control characters
/// escaped so a message stays one line.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_defaults_in_upstream_order() {
        let e = Event::from_json(&json!({"name": "LauncherJobEvent", "parameters": {
            "status": "started", "model": "m", "deploymentType": "vllm", "executorType": "slurm"}}))
        .unwrap();
        assert_eq!(
            e.parameters_json(),
            r#"{"executorType":"slurm","deploymentType":"vllm","model":"m","tasks":[],"exporters":[],"status":"started"}"#
        );
        let e = Event::from_json(&json!({"name": "EvaluationTaskEvent", "parameters": {
            "task": "t", "frameworkName": "f", "model": "m", "status": "success",
            "executionDurationSeconds": 12}}))
        .unwrap();
        assert!(e
            .parameters_json()
            .contains(r#""executionDurationSeconds":12.0"#));
    }

    #[test]
    fn errors_name_the_field() {
        let base = || json!({"task": "t", "frameworkName": "f", "model": "m", "status": "success"});
        let cases = [
            ("task", json!(""), "parameters.task"),
            ("task", json!("x".repeat(257)), "parameters.task"),
            ("model", json!("a\u{7}b"), "parameters.model"),
            ("status", json!("done"), "parameters.status"),
            (
                "executionDurationSeconds",
                json!(-1),
                "parameters.executionDurationSeconds",
            ),
            ("userName", json!("me"), "parameters.userName"),
        ];
        for (key, value, expect) in cases {
            let mut p = base();
            p[key] = value;
            let err = Event::from_parts(&json!("EvaluationTaskEvent"), &p).unwrap_err();
            assert!(err.starts_with(expect), "{key}: {err}");
        }
    }
}
