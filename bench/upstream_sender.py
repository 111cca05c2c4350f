"""Upstream baseline for telespool's upload benchmark (bench/run).

Sends events through NeMo Evaluator's own client, `nemo_evaluator.telemetry.TelemetryHandler`
(from PyPI), the fastest way its callers can: one handler, and for each batch of
`--batch` events (50 by default, the handler's `max_queue_size`) the public cycle
`start()`, `enqueue()` × batch, `stop()`. With the synchronous API the handler sends
only at `stop()` (its timer task dies with `start()`'s event loop), so each cycle is one
POST of one batch, on a fresh `httpx.AsyncClient` (a new connection) as the handler
always does.

Only the cycles are timed: reading the input line, `json.loads` and building the pydantic
event happen outside the clock, batch by batch (so memory stays flat). Events are the
same lines `telespool record --json -` was given: {"name": ..., "parameters": {...}}.

NEMO_EVALUATOR_TELEMETRY_ENDPOINT must be set in the environment (the module reads it at
import). Prints {"events": n, "requests": n, "seconds": s, "wall_seconds": s}.
"""

import argparse
import json
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("events", help="JSON Lines file of events")
ap.add_argument("--batch", type=int, default=50)
ap.add_argument("--limit", type=int, default=0, help="send only the first N events")
ap.add_argument("--session-id", default="bench-upstream")
ap.add_argument("--client-version", default="bench")
args = ap.parse_args()

from nemo_evaluator.telemetry import (  # noqa: E402
    EvaluationTaskEvent,
    StatusEnum,
    TelemetryHandler,
    TelemetryLevel,
)
from nemo_evaluator_launcher.telemetry import LauncherJobEvent  # noqa: E402


def build(line):
    obj = json.loads(line)
    p = obj["parameters"]
    if obj["name"] == "EvaluationTaskEvent":
        return EvaluationTaskEvent(
            task=p["task"],
            framework_name=p["frameworkName"],
            model=p["model"],
            execution_duration_seconds=p.get("executionDurationSeconds", 0.0),
            status=StatusEnum(p["status"]),
        )
    return LauncherJobEvent(
        executor_type=p["executorType"],
        deployment_type=p["deploymentType"],
        model=p["model"],
        tasks=p.get("tasks", []),
        exporters=p.get("exporters", []),
        status=StatusEnum(p["status"]),
    )


handler = TelemetryHandler(
    source_client_version=args.client_version,
    session_id=args.session_id,
    telemetry_level=TelemetryLevel.DEFAULT,
)
sent = requests = 0
timed = 0.0
wall0 = time.perf_counter()
with open(args.events, "rb") as f:
    done = False
    while not done:
        batch = []
        while len(batch) < args.batch:
            if args.limit and sent + len(batch) >= args.limit:
                done = True
                break
            line = f.readline()
            if not line:
                done = True
                break
            if line.strip():
                batch.append(build(line))
        if not batch:
            break
        t0 = time.perf_counter()
        handler.start()
        for event in batch:
            handler.enqueue(event)
        handler.stop()
        timed += time.perf_counter() - t0
        sent += len(batch)
        requests += 1
wall = time.perf_counter() - wall0
if handler._dlq:  # events the handler failed to send (it would drop them at exit)
    print(f"upstream_sender: {len(handler._dlq)} events were not delivered", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"events": sent, "requests": requests, "seconds": round(timed, 6),
                  "wall_seconds": round(wall, 6)}))
