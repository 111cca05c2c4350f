"""Print the request body upstream's own client would send for the given events.

Usage: python build_payload.py EVENTS.json

EVENTS.json: {"session_id": ..., "client_version": ...,
              "events": [{"name": ..., "ts": "2026-01-02T03:04:05.678Z", "parameters": {...}}]}
(the shape `telespool inspect --json --events` lists). The events are rebuilt as
upstream's pydantic models and queued at their own times, then passed through
nemo_evaluator.telemetry.build_payload; the body is printed as JSON on stdout.
"""

import json
import sys
from datetime import datetime, timezone

from nemo_evaluator.telemetry import EvaluationTaskEvent, QueuedEvent, build_payload
from nemo_evaluator_launcher.telemetry import LauncherJobEvent

KINDS = {"EvaluationTaskEvent": EvaluationTaskEvent, "LauncherJobEvent": LauncherJobEvent}

with open(sys.argv[1]) as f:
    spec = json.load(f)


def when(ts):
    # "2026-01-02T03:04:05.678Z": upstream's own format, milliseconds, UTC.
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


queued = [
    QueuedEvent(event=KINDS[e["name"]](**e["parameters"]), timestamp=when(e["ts"]))
    for e in spec["events"]
]
body = build_payload(
    queued,
    source_client_version=spec["client_version"],
    session_id=spec["session_id"],
)
print(json.dumps(body))
