"""Drive NeMo Evaluator's real telemetry client, as its own callers do, and report
exactly what it sent.

Usage: python client.py SPEC.json REPORT.json

The environment decides where the events go (NEMO_EVALUATOR_TELEMETRY_ENDPOINT, read
by upstream when nemo_evaluator.telemetry is imported), the level
(NEMO_EVALUATOR_TELEMETRY_LEVEL or the config file) and the session id
(NEMO_EVALUATOR_TELEMETRY_SESSION_ID). SPEC holds:

    {"client_version": "0.2.8",
     "events": [{"name": "EvaluationTaskEvent", "task": ..., "framework_name": ...,
                 "model": ..., "execution_duration_seconds": ..., "status": "started"},
                {"name": "LauncherJobEvent", "executor_type": ..., "deployment_type": ...,
                 "model": ..., "tasks": [...], "exporters": [...], "status": ...}],
     "exit_code": 0}

Like upstream's callers (nemo_evaluator.core.evaluate, the launcher's run_eval), the
model is replaced by "redacted" at level 1 and no handler is made at level 0.

REPORT receives {"level", "session_id", "endpoint", "payloads", "statuses"}: every body
upstream's build_payload produced (so the test compares against the very bytes' source,
timestamps included) and the HTTP status of every POST, since upstream's client
swallows its errors.
"""

import json
import sys

import httpx

import nemo_evaluator.telemetry as telemetry
from nemo_evaluator.config import TelemetryLevel
from nemo_evaluator.telemetry import (
    EvaluationTaskEvent,
    StatusEnum,
    TelemetryHandler,
    get_session_id,
    get_telemetry_level,
)
from nemo_evaluator_launcher.telemetry import LauncherJobEvent

spec_path, report_path = sys.argv[1], sys.argv[2]
with open(spec_path) as f:
    spec = json.load(f)

payloads = []
statuses = []

_build_payload = telemetry.build_payload


def recording_build_payload(*args, **kwargs):
    payload = _build_payload(*args, **kwargs)
    # A copy through JSON, as httpx will encode it.
    payloads.append(json.loads(json.dumps(payload)))
    return payload


telemetry.build_payload = recording_build_payload

_post = httpx.AsyncClient.post


async def recording_post(self, *args, **kwargs):
    try:
        response = await _post(self, *args, **kwargs)
    except Exception as e:  # upstream swallows this; the test must see it
        statuses.append(f"error: {type(e).__name__}: {e}")
        raise
    statuses.append(response.status_code)
    return response


httpx.AsyncClient.post = recording_post

level = get_telemetry_level()
session_id = get_session_id()


def model(name):
    return "redacted" if level == TelemetryLevel.MINIMAL else name


def make(event):
    kind = event["name"]
    if kind == "EvaluationTaskEvent":
        return EvaluationTaskEvent(
            task=event["task"],
            framework_name=event["framework_name"],
            model=model(event["model"]),
            execution_duration_seconds=event.get("execution_duration_seconds", 0.0),
            status=StatusEnum(event["status"]),
        )
    if kind == "LauncherJobEvent":
        return LauncherJobEvent(
            executor_type=event["executor_type"],
            deployment_type=event["deployment_type"],
            model=model(event["model"]),
            tasks=event.get("tasks", []),
            exporters=event.get("exporters", []),
            status=StatusEnum(event["status"]),
        )
    raise SystemExit(f"unknown event kind {kind}")


if level != TelemetryLevel.OFF:
    handler = TelemetryHandler(
        source_client_version=spec["client_version"],
        session_id=session_id,
        telemetry_level=level,
    )
    handler.start()
    for event in spec["events"]:
        handler.enqueue(make(event))
    handler.stop()  # upstream's one POST happens here

with open(report_path, "w") as f:
    json.dump(
        {
            "level": int(level.value),
            "session_id": session_id,
            "endpoint": telemetry.NEMO_TELEMETRY_ENDPOINT,
            "payloads": payloads,
            "statuses": statuses,
        },
        f,
    )
sys.exit(spec.get("exit_code", 0))
