//! The example request body of SPEC §5, for tests that need a valid body to start from.
#![allow(dead_code)] // not every test binary builds bodies

use serde_json::{json, Value};

/// SPEC §5's envelope with this session, client version and events.
pub fn spec_body(session: &str, client_ver: &str, events: Value) -> Value {
    json!({
        "browserType": "undefined", "clientId": "14399890258381784", "clientType": "Native",
        "clientVariant": "Release", "clientVer": client_ver, "cpuArchitecture": "x86_64",
        "deviceGdprBehOptIn": "None", "deviceGdprFuncOptIn": "None", "deviceGdprTechOptIn": "None",
        "deviceId": "undefined", "deviceMake": "undefined", "deviceModel": "undefined",
        "deviceOS": "undefined", "deviceOSVersion": "undefined", "deviceType": "undefined",
        "eventProtocol": "1.6", "eventSchemaVer": "1.0", "eventSysVer": "nemo-telemetry/1.0",
        "externalUserId": "undefined", "gdprBehOptIn": "None", "gdprFuncOptIn": "None",
        "gdprTechOptIn": "None", "idpId": "undefined", "integrationId": "undefined",
        "productName": "undefined", "productVersion": "undefined",
        "sentTs": "2026-11-24T06:40:00.123Z", "sessionId": session, "userId": "undefined",
        "events": events
    })
}

/// SPEC §5's example event, with this model name.
pub fn spec_task_event(model: &str) -> Value {
    json!({"ts": "2026-11-20T01:02:03.456Z", "name": "EvaluationTaskEvent",
           "parameters": {"task": "mmlu", "frameworkName": "lm-eval", "model": model,
                          "executionDurationSeconds": 12.5, "status": "success"}})
}
