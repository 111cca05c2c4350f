//! The request body of SPEC §5, built and parsed in exactly one place.
//!
//! `inspect --events`, `export` and `upload` all turn stored events into wire events
//! through [`WireEvent::from_stored`], so what a person reviews is byte for byte what
//! leaves the machine. `listen` and `upload --from` parse bodies back with
//! [`parse_body`], which applies the same validation as `record --json`.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{Event, REDACTED};
use crate::level::Level;
use crate::session::validate_session_id;
use crate::spool::StoredEvent;

/// The schema version every event of ours carries.
pub const SCHEMA_VERSION: &str = "1.0";
/// upstream's fixed client id for NeMo Evaluator.
pub const CLIENT_ID: &str = "14399890258381784";

/// Milliseconds since the Unix epoch, UTC: how the spool keeps event times.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// `2026-11-20T01:02:03.456Z`: UTC, milliseconds, a literal `Z`, as upstream writes it.
pub fn format_ts(ms: Millis) -> String {
    let t = Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    // Every event of every body goes through here, so the fields are written directly:
    // `format` with a strftime string parses that string each time, which was several
    // per cent of an upload's CPU. Years outside four digits keep chrono's own form.
    if !(0..=9999).contains(&t.year()) {
        return t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis().min(999)
    )
}

/// Parses an RFC 3339 time (upstream's form or any other offset), truncating to
/// milliseconds as upstream does.
pub fn parse_ts(text: &str) -> Result<Millis, String> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|_| format!("`{text}` is not an RFC 3339 time like 2026-11-20T01:02:03.456Z"))?;
    let ms = t.timestamp_millis();
    // Years 2000..2200: anything else is a broken clock or a hostile input.
    if !(946_684_800_000..7_258_118_400_000).contains(&ms) {
        return Err(format!("`{text}` is not a plausible event time"));
    }
    Ok(ms)
}

/// A client version goes on the wire verbatim: 1..=128 printable ASCII bytes.
pub fn validate_client_version(v: &str) -> Result<(), String> {
    validate_session_id(v)
}

/// The machine architecture as Python's `platform.uname().machine` names it.
pub fn cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "i686",
        other => other,
    }
}

/// One entry of a body's `events`, key order as upstream sends it.
#[derive(Debug, Serialize)]
pub struct WireEvent {
    pub ts: String,
    pub parameters: Box<RawValue>,
    pub name: &'static str,
}

impl WireEvent {
    /// The event as it would leave now: the model redacted if either the level it was
    /// recorded at or the level in force now says so (the stricter wins).
    pub fn from_stored(stored: &StoredEvent, level_now: Level) -> WireEvent {
        let parameters = if level_now.min(stored.level).keeps_model() {
            RawValue::from_string(stored.parameters.clone())
        } else {
            redact(&stored.parameters)
        };
        WireEvent {
            ts: format_ts(stored.ts),
            // The spool only ever holds JSON that `Event` produced.
            parameters: parameters.unwrap_or_else(|_| RawValue::from_string("{}".into()).unwrap()),
            name: stored.kind.name(),
        }
    }
}

fn redact(parameters: &str) -> serde_json::Result<Box<RawValue>> {
    let mut map: Map<String, Value> = serde_json::from_str(parameters)?;
    if map.contains_key("model") {
        map.insert("model".into(), Value::String(REDACTED.into()));
    }
    RawValue::from_string(serde_json::to_string(&map)?)
}

/// An event as `inspect --events` lists it: the wire event plus the envelope fields
/// that decide which request it goes in.
#[derive(Debug, Serialize)]
pub struct InspectEvent<'a> {
    pub name: &'static str,
    pub ts: &'a str,
    #[serde(rename = "sessionId")]
    pub session_id: &'a str,
    #[serde(rename = "clientVer")]
    pub client_ver: &'a str,
    pub parameters: &'a RawValue,
}

impl<'a> InspectEvent<'a> {
    pub fn new(stored: &'a StoredEvent, wire: &'a WireEvent) -> InspectEvent<'a> {
        InspectEvent {
            name: wire.name,
            ts: &wire.ts,
            session_id: &stored.session_id,
            client_ver: &stored.client_ver,
            parameters: &wire.parameters,
        }
    }
}

/// The envelope of one request: all events of a body share these.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    browser_type: &'static str,
    client_id: &'static str,
    client_type: &'static str,
    client_variant: &'static str,
    client_ver: &'a str,
    cpu_architecture: &'static str,
    device_gdpr_beh_opt_in: &'static str,
    device_gdpr_func_opt_in: &'static str,
    device_gdpr_tech_opt_in: &'static str,
    device_id: &'static str,
    device_make: &'static str,
    device_model: &'static str,
    #[serde(rename = "deviceOS")]
    device_os: &'static str,
    #[serde(rename = "deviceOSVersion")]
    device_os_version: &'static str,
    device_type: &'static str,
    event_protocol: &'static str,
    event_schema_ver: &'a str,
    event_sys_ver: &'static str,
    external_user_id: &'static str,
    gdpr_beh_opt_in: &'static str,
    gdpr_func_opt_in: &'static str,
    gdpr_tech_opt_in: &'static str,
    idp_id: &'static str,
    integration_id: &'static str,
    product_name: &'static str,
    product_version: &'static str,
    sent_ts: String,
    session_id: &'a str,
    user_id: &'static str,
    events: &'a [WireEvent],
}

/// Every key of the envelope, for parsers and tests that check a body's shape.
pub const ENVELOPE_KEYS: [&str; 30] = [
    "browserType",
    "clientId",
    "clientType",
    "clientVariant",
    "clientVer",
    "cpuArchitecture",
    "deviceGdprBehOptIn",
    "deviceGdprFuncOptIn",
    "deviceGdprTechOptIn",
    "deviceId",
    "deviceMake",
    "deviceModel",
    "deviceOS",
    "deviceOSVersion",
    "deviceType",
    "eventProtocol",
    "eventSchemaVer",
    "eventSysVer",
    "externalUserId",
    "gdprBehOptIn",
    "gdprFuncOptIn",
    "gdprTechOptIn",
    "idpId",
    "integrationId",
    "productName",
    "productVersion",
    "sentTs",
    "sessionId",
    "userId",
    "events",
];

/// Serializes one request body for events of one (session, client version, schema).
pub fn body(
    session_id: &str,
    client_ver: &str,
    schema_ver: &str,
    sent_ts: Millis,
    events: &[WireEvent],
) -> Vec<u8> {
    const U: &str = "undefined";
    const NONE: &str = "None";
    let envelope = Envelope {
        browser_type: U,
        client_id: CLIENT_ID,
        client_type: "Native",
        client_variant: "Release",
        client_ver,
        cpu_architecture: cpu_architecture(),
        device_gdpr_beh_opt_in: NONE,
        device_gdpr_func_opt_in: NONE,
        device_gdpr_tech_opt_in: NONE,
        device_id: U,
        device_make: U,
        device_model: U,
        device_os: U,
        device_os_version: U,
        device_type: U,
        event_protocol: "1.6",
        event_schema_ver: schema_ver,
        event_sys_ver: "nemo-telemetry/1.0",
        external_user_id: U,
        gdpr_beh_opt_in: NONE,
        gdpr_func_opt_in: NONE,
        gdpr_tech_opt_in: NONE,
        idp_id: U,
        integration_id: U,
        product_name: U,
        product_version: U,
        sent_ts: format_ts(sent_ts),
        session_id,
        user_id: U,
        events,
    };
    serde_json::to_vec(&envelope).expect("an envelope always serializes")
}

/// The bytes a body takes before its events: for sizing batches without building them.
pub fn envelope_overhead(session_id: &str, client_ver: &str, schema_ver: &str) -> usize {
    body(session_id, client_ver, schema_ver, 0, &[]).len()
}

/// The bytes one event adds to a body, its separating comma included.
pub fn event_size(event: &WireEvent) -> usize {
    // Counted, not serialized: an upload sizes every event it sends. `ts` and `name` are
    // plain ASCII that JSON never escapes, and `parameters` is written verbatim, so
    // `{"ts":"…","parameters":…,"name":"…"}` is this long (a test holds it to serde's
    // output), plus the comma that separates it from the next.
    const FIXED: usize = r#"{"ts":"","parameters":,"name":""}"#.len();
    FIXED + event.ts.len() + event.parameters.get().len() + event.name.len() + 1
}

/// A request body parsed and validated: what `listen` and `upload --from` store.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedBody {
    pub session_id: String,
    pub client_ver: String,
    pub schema_ver: String,
    pub events: Vec<(Millis, Event)>,
}

/// Parses a request body as upstream's clients send it, validating every event like
/// `record --json`. Errors name the offending key.
pub fn parse_body(bytes: &[u8]) -> Result<ParsedBody, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON request body: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("not a request body: expected a JSON object")?;
    if let Some(unknown) = obj.keys().find(|k| !ENVELOPE_KEYS.contains(&k.as_str())) {
        return Err(format!("{}: unknown envelope key", truncate(unknown)));
    }
    if let Some(missing) = ENVELOPE_KEYS.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("{missing}: missing from the envelope"));
    }
    let text = |key: &str| -> Result<String, String> {
        obj[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{key}: must be a string"))
    };
    let session_id = text("sessionId")?;
    validate_session_id(&session_id).map_err(|e| format!("sessionId: {e}"))?;
    let client_ver = text("clientVer")?;
    validate_client_version(&client_ver).map_err(|e| format!("clientVer: {e}"))?;
    let schema_ver = text("eventSchemaVer")?;
    if schema_ver != SCHEMA_VERSION {
        return Err(format!(
            "eventSchemaVer: `{}` is not supported (expected {SCHEMA_VERSION})",
            truncate(&schema_ver)
        ));
    }
    let list = obj["events"].as_array().ok_or("events: must be a list")?;
    if list.is_empty() {
        return Err("events: must not be empty".into());
    }
    let mut events = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = |e: String| format!("events[{i}].{e}");
        let ev = item
            .as_object()
            .ok_or_else(|| format!("events[{i}]: must be an object"))?;
        if let Some(unknown) = ev
            .keys()
            .find(|k| !matches!(k.as_str(), "ts" | "name" | "parameters"))
        {
            return Err(at(format!("{}: unknown field", truncate(unknown))));
        }
        let ts = ev
            .get("ts")
            .ok_or_else(|| at("ts: missing".into()))?
            .as_str()
            .ok_or_else(|| at("ts: must be a string".into()))?;
        let ts = parse_ts(ts).map_err(|e| at(format!("ts: {e}")))?;
        let name = ev.get("name").ok_or_else(|| at("name: missing".into()))?;
        let parameters = ev
            .get("parameters")
            .ok_or_else(|| at("parameters: missing".into()))?;
        events.push((ts, Event::from_parts(name, parameters).map_err(at)?));
    }
    Ok(ParsedBody {
        session_id,
        client_ver,
        schema_ver,
        events,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_counted_size_is_its_serialized_size_and_a_comma() {
        for (ts, parameters, name) in [
            (
                0,
                r#"{"task":"mmlu","model":"m/é \"q\"","status":"success"}"#,
                "EvaluationTaskEvent",
            ),
            (
                1_763_600_523_456,
                r#"{"tasks":["a","b"],"exporters":[]}"#,
                "LauncherJobEvent",
            ),
            (-1, "{}", "EvaluationTaskEvent"),
        ] {
            let event = WireEvent {
                ts: format_ts(ts),
                parameters: RawValue::from_string(parameters.to_string()).unwrap(),
                name,
            };
            let serialized = serde_json::to_vec(&event).unwrap();
            assert_eq!(event_size(&event), serialized.len() + 1, "{parameters}");
        }
    }

    #[test]
    fn the_direct_timestamp_form_is_chronos_strftime_form() {
        let strftime = |ms: Millis| {
            Utc.timestamp_millis_opt(ms)
                .single()
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let mut ms: Millis = -62_167_219_200_000; // 0000-01-01
        while ms < 253_402_300_800_000 {
            // to 9999-12-31, in uneven steps that land on every field's edges
            assert_eq!(format_ts(ms), strftime(ms), "{ms}");
            assert_eq!(format_ts(ms + 999), strftime(ms + 999), "{ms}");
            ms += 86_399_999 * 37 + 1;
        }
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_ts(300_000_000_000_000),
            strftime(300_000_000_000_000)
        );
    }

    #[test]
    fn timestamps_are_utc_millis_z() {
        assert_eq!(format_ts(1_763_600_523_456), "2025-11-20T01:02:03.456Z");
        assert_eq!(
            parse_ts("2025-11-20T01:02:03.456Z").unwrap(),
            1_763_600_523_456
        );
        assert_eq!(
            parse_ts("2025-11-20T02:02:03.456789+01:00").unwrap(),
            1_763_600_523_456
        );
        assert!(parse_ts("yesterday").is_err());
        assert!(parse_ts("1970-01-01T00:00:00.000Z").is_err());
    }

    #[test]
    fn body_round_trips() {
        let event = Event::from_json(&serde_json::json!({"name": "EvaluationTaskEvent",
            "parameters": {"task": "mmlu", "frameworkName": "lm-eval", "model": "m", "status": "success"}}))
        .unwrap();
        let wire = WireEvent {
            ts: format_ts(1_763_600_523_456),
            parameters: RawValue::from_string(event.parameters_json()).unwrap(),
            name: "EvaluationTaskEvent",
        };
        let bytes = body(
            "s-1",
            "0.2.8",
            "1.0",
            1_763_600_523_999,
            std::slice::from_ref(&wire),
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ENVELOPE_KEYS);
        let parsed = parse_body(&bytes).unwrap();
        assert_eq!(parsed.session_id, "s-1");
        assert_eq!(parsed.events, vec![(1_763_600_523_456, event)]);
        assert_eq!(
            bytes.len(),
            envelope_overhead("s-1", "0.2.8", "1.0") + event_size(&wire) - 1
        );
    }
}
