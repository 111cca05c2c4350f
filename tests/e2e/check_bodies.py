#!/usr/bin/env python3
"""tests/e2e/check_bodies.py - checks the request bodies of tests/e2e/slurm.sh.

    check_bodies.py --mode shared|local --jobs N --out JOBDIR
                    (--bodies DIR | --exports DIR) [--compare-exports DIR]
                    --not-before TS --not-after TS --arch ARCH [--forbid STRING]...

--bodies DIR: the collector's bodies (NNNNNN.json, with NNNNNN.meta.json beside each).
--exports DIR: files export-*.jsonl written by `telespool export` (one body per line).
--compare-exports DIR: with --bodies, also check that the bodies carry exactly the events
of those export files (same session ids, event times, names and parameters).

Checks, each failure printed as one "FAIL: ..." line on stdout (exit 1 if any):
  * every body has exactly the top-level keys of SPEC.md section 5, with the constant values
    upstream's client sends, a UUID session id, timestamps in UTC with milliseconds;
    every event exactly {ts, name, parameters} with exactly the parameters of its kind;
    collector bodies were POSTed to /v1.1/events/json as application/json, uncompressed;
  * every model is "redacted" (level 1);
  * every event the N jobs recorded arrives exactly once: no (sessionId, ts, name,
    parameters) tuple twice, and per session exactly the 8 events of one job;
  * one session per job, and different jobs have different sessions;
  * event times lie between --not-before and --not-after, in the order the job recorded them;
  * no job id, array job id, host name, user name, cluster name or path (from the jobs'
    OUTDIR/info.MODE.I files, plus each --forbid) appears anywhere in any body.
Only the standard library is used.
"""

import argparse
import collections
import glob
import json
import os
import re
import sys

CONSTANTS = {
    "browserType": "undefined",
    "clientId": "14399890258381784",
    "clientType": "Native",
    "clientVariant": "Release",
    "clientVer": "undefined",
    "deviceGdprBehOptIn": "None",
    "deviceGdprFuncOptIn": "None",
    "deviceGdprTechOptIn": "None",
    "deviceId": "undefined",
    "deviceMake": "undefined",
    "deviceModel": "undefined",
    "deviceOS": "undefined",
    "deviceOSVersion": "undefined",
    "deviceType": "undefined",
    "eventProtocol": "1.6",
    "eventSchemaVer": "1.0",
    "eventSysVer": "nemo-telemetry/1.0",
    "externalUserId": "undefined",
    "gdprBehOptIn": "None",
    "gdprFuncOptIn": "None",
    "gdprTechOptIn": "None",
    "idpId": "undefined",
    "integrationId": "undefined",
    "productName": "undefined",
    "productVersion": "undefined",
    "userId": "undefined",
}
TOP_KEYS = set(CONSTANTS) | {"cpuArchitecture", "sentTs", "sessionId", "events"}
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PARAM_KEYS = {
    "EvaluationTaskEvent": {"task", "frameworkName", "model", "executionDurationSeconds", "status"},
    "LauncherJobEvent": {"executorType", "deploymentType", "model", "tasks", "exporters", "status"},
}
EVENTS_PER_JOB = 8
BATCH_EVENTS = 100


def expected_events(i):
    """The events eval-job.sh records in array task i, in order, as sent at level 1."""
    tasks = ["mmlu", "gsm8k", "hellaswag"]

    def launcher(status):
        return ("LauncherJobEvent", {"executorType": "slurm", "deploymentType": "vllm",
                                     "model": "redacted", "tasks": tasks,
                                     "exporters": ["mlflow"], "status": status})

    def task(name, status, duration):
        return ("EvaluationTaskEvent", {"task": name, "frameworkName": "lm-eval",
                                        "model": "redacted",
                                        "executionDurationSeconds": duration,
                                        "status": status})

    return [
        launcher("started"),
        task("mmlu", "started", 0.0),
        task("mmlu", "success", float("%d.15" % i)),
        task("gsm8k", "started", 0.0),
        task("gsm8k", "failure", float("%d.25" % i)),
        task("hellaswag", "started", 0.0),
        task("hellaswag", "success", float("%d.35" % i)),
        launcher("success" if i % 2 == 0 else "failure"),
    ]


def canon(name, params):
    return name + " " + json.dumps(params, sort_keys=True)


def read_info(out, mode, n):
    infos = {}
    for i in range(n):
        path = os.path.join(out, "info.%s.%d" % (mode, i))
        d = {}
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                d[k] = v
        infos[i] = d
    return infos


def token_re(s):
    cls = "0-9A-Za-z"
    return re.compile(r"(?<![%s])%s(?![%s])" % (cls, re.escape(s), cls))


def load_bodies(args, fails):
    """[(label, raw_text, meta_or_None)]"""
    bodies = []
    if args.bodies:
        for path in sorted(glob.glob(os.path.join(args.bodies, "[0-9]*.json"))):
            if path.endswith(".meta.json"):
                continue
            with open(path, "rb") as f:
                raw = f.read()
            meta_path = path[: -len(".json")] + ".meta.json"
            with open(meta_path) as f:
                meta = json.load(f)
            bodies.append((os.path.basename(path), raw.decode("utf-8", "replace"), meta))
    if args.exports:
        files = sorted(glob.glob(os.path.join(args.exports, "export-*.jsonl")))
        others = sorted(set(os.listdir(args.exports)) - set(os.path.basename(f) for f in files))
        if others:
            fails.append("files other than export-*.jsonl left in %s: %s" % (args.exports, others))
        if len(files) != args.jobs:
            fails.append("%d export files in %s, expected %d" % (len(files), args.exports, args.jobs))
        for path in files:
            with open(path, "rb") as f:
                for lineno, line in enumerate(f.read().decode("utf-8", "replace").splitlines(), 1):
                    if line.strip():
                        bodies.append(("%s:%d" % (os.path.basename(path), lineno), line, None))
    return bodies


def read_export_tuples(d):
    tuples = collections.Counter()
    for path in sorted(glob.glob(os.path.join(d, "export-*.jsonl"))):
        with open(path) as f:
            for line in f:
                if line.strip():
                    b = json.loads(line)
                    for e in b["events"]:
                        tuples[(b["sessionId"], e["ts"], canon(e["name"], e["parameters"]))] += 1
    return tuples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--jobs", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bodies")
    ap.add_argument("--exports")
    ap.add_argument("--compare-exports")
    ap.add_argument("--not-before", required=True)
    ap.add_argument("--not-after", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--forbid", action="append", default=[])
    ap.add_argument("--batch-events", type=int, default=BATCH_EVENTS)
    args = ap.parse_args()

    fails = []
    infos = read_info(args.out, args.mode, args.jobs)
    bodies = load_bodies(args, fails)
    what = "bodies" if args.bodies else "exported bodies"

    # Things that must never leave the machine.
    numeric = set()  # job ids: searched as tokens in a masked copy (see below)
    words = set()  # host/user/cluster names: alphanumeric boundaries, raw body
    paths = set(p for p in args.forbid if p)  # substrings, raw body
    for d in infos.values():
        numeric.update(v for v in (d.get("job_id"), d.get("array_job_id")) if v)
        words.update(v for k in ("cluster", "node", "host", "host_s", "host_f", "user")
                     for v in [d.get(k)] if v)
        paths.update(v for k in ("home", "xdg", "spool", "pwd", "submit_dir")
                     for v in [d.get(k)] if v and v != "/")
    paths.add("secret-org")  # the unredacted model names
    # A host or user name that is also a word the bodies must contain (a host called
    # "slurm", say) cannot be searched for; the exact structure checks below still hold.
    vocab = set(CONSTANTS.values()) | set(CONSTANTS) | TOP_KEYS | {"ts", "name", "parameters", args.arch}
    for i in range(max(args.jobs, 1)):
        for name, params in expected_events(i):
            vocab.add(name)
            vocab.update(params)
            for v in params.values():
                vocab.update(v if isinstance(v, list) else [v] if isinstance(v, str) else [])
    vocab_tokens = set(t for v in vocab for t in re.split(r"[^0-9A-Za-z]+", v) if t) | vocab
    for w in sorted(words & vocab_tokens):
        print("note: not searching the bodies for %r: it is also a word they must contain" % w)
    word_res = [(w, token_re(w)) for w in sorted(words - vocab_tokens)]
    num_res = [(n, token_re(n)) for n in sorted(numeric)]

    seen = collections.Counter()  # (sessionId, ts, canon) -> count
    by_session = collections.defaultdict(list)  # sessionId -> [(ts, canon)]
    n_events = 0
    max_batch = 0
    for label, raw, meta in bodies:
        if meta is not None:
            if meta.get("path") != "/v1.1/events/json":
                fails.append("%s: POSTed to %r" % (label, meta.get("path")))
            h = meta.get("headers", {})
            if not h.get("content-type", "").startswith("application/json"):
                fails.append("%s: Content-Type %r" % (label, h.get("content-type")))
            if h.get("content-encoding"):
                fails.append("%s: Content-Encoding %r (must be uncompressed)" % (label, h["content-encoding"]))
        # Leak scan on the raw text.
        for p in sorted(paths):
            if p in raw:
                fails.append("%s: contains %r" % (label, p))
        for w, r in word_res:
            if r.search(raw):
                fails.append("%s: contains host/user/cluster name %r" % (label, w))
        try:
            b = json.loads(raw)
        except ValueError as e:
            fails.append("%s: not JSON: %s" % (label, e))
            continue
        if not isinstance(b, dict):
            fails.append("%s: not a JSON object" % label)
            continue
        keys = set(b)
        if keys != TOP_KEYS:
            fails.append("%s: top-level keys differ: extra %s, missing %s"
                         % (label, sorted(keys - TOP_KEYS), sorted(TOP_KEYS - keys)))
        for k, v in CONSTANTS.items():
            if k in b and b[k] != v:
                fails.append("%s: %s is %r, expected %r" % (label, k, b[k], v))
        if b.get("cpuArchitecture") != args.arch:
            fails.append("%s: cpuArchitecture %r, expected %r" % (label, b.get("cpuArchitecture"), args.arch))
        sent = b.get("sentTs")
        if not (isinstance(sent, str) and TS_RE.match(sent)):
            fails.append("%s: sentTs %r" % (label, sent))
        sid = b.get("sessionId")
        if not (isinstance(sid, str) and UUID_RE.match(sid)):
            fails.append("%s: sessionId %r is not a UUID" % (label, sid))
            sid = str(sid)
        events = b.get("events")
        if not isinstance(events, list) or not events:
            fails.append("%s: events is %r" % (label, type(events).__name__))
            continue
        max_batch = max(max_batch, len(events))
        if len(events) > args.batch_events:
            fails.append("%s: %d events in one body (limit %d)" % (label, len(events), args.batch_events))
        # Job ids, searched in a copy where the values validated above (constants, timestamps,
        # the UUID, the architecture, durations checked against the expected events below)
        # are masked: they contain digits by nature, and a job id of 1 or 64 would otherwise
        # "appear" in "1.6" or "x86_64".
        masked = re.sub(r'"(ts|sentTs)"\s*:\s*"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"', '"TS"', raw)
        masked = re.sub(r'"sessionId"\s*:\s*"[0-9a-f-]{36}"', '"SID"', masked)
        masked = re.sub(r'"executionDurationSeconds"\s*:\s*[0-9.eE+-]+', '"DUR"', masked)
        for k in ("clientId", "eventProtocol", "eventSchemaVer", "eventSysVer", "cpuArchitecture"):
            v = CONSTANTS.get(k, args.arch)
            masked = re.sub(r'"%s"\s*:\s*"%s"' % (k, re.escape(v)), '"%s"' % k.upper(), masked)
        for n, r in num_res:
            if r.search(masked):
                fails.append("%s: contains job id %s" % (label, n))
        for e in events:
            n_events += 1
            if not isinstance(e, dict) or set(e) != {"ts", "name", "parameters"}:
                fails.append("%s: event keys %s" % (label, sorted(e) if isinstance(e, dict) else e))
                continue
            name, params, ts = e["name"], e["parameters"], e["ts"]
            if name not in PARAM_KEYS:
                fails.append("%s: event name %r" % (label, name))
                continue
            if not isinstance(params, dict) or set(params) != PARAM_KEYS[name]:
                fails.append("%s: %s parameters %s" % (label, name, sorted(params) if isinstance(params, dict) else params))
                continue
            if params.get("model") != "redacted":
                fails.append("%s: model %r is not redacted" % (label, params.get("model")))
            if not (isinstance(ts, str) and TS_RE.match(ts)):
                fails.append("%s: ts %r" % (label, ts))
            elif not (args.not_before <= ts <= args.not_after):
                fails.append("%s: ts %s outside the test's window [%s, %s]"
                             % (label, ts, args.not_before, args.not_after))
            c = canon(name, params)
            seen[(sid, ts, c)] += 1
            by_session[sid].append((ts, c))

    # Exactly once.
    dups = {k: v for k, v in seen.items() if v > 1}
    for (sid, ts, c), v in sorted(dups.items()):
        fails.append("duplicate x%d: session %s ts %s %s" % (v, sid, ts, c))
    want_total = EVENTS_PER_JOB * args.jobs
    if n_events != want_total:
        fails.append("%d events in %d %s, expected %d (%d jobs x %d)"
                     % (n_events, len(bodies), what, want_total, args.jobs, EVENTS_PER_JOB))

    # One session per job, one job per session, each with exactly its events.
    job_of_session = {}
    for sid, evs in sorted(by_session.items()):
        idx = set()
        for ts, c in evs:
            m = re.search(r'"executionDurationSeconds": (\d+)\.(15|25|35)\b', c)
            if m:
                idx.add(int(m.group(1)))
        if len(idx) != 1:
            fails.append("session %s: cannot be tied to exactly one job (durations say %s)" % (sid, sorted(idx)))
            continue
        i = idx.pop()
        if i in job_of_session.values():
            fails.append("job %d's events are spread over more than one session" % i)
        job_of_session[sid] = i
        want = [canon(n, p) for n, p in expected_events(i)]
        got = sorted(evs)
        missing = collections.Counter(want) - collections.Counter(c for _, c in got)
        extra = collections.Counter(c for _, c in got) - collections.Counter(want)
        for c in missing.elements():
            fails.append("session %s (job %d): missing %s" % (sid, i, c))
        for c in extra.elements():
            fails.append("session %s (job %d): unexpected or extra %s" % (sid, i, c))
        if not missing and not extra:
            # Event times in the order the job recorded them (ties allowed: millisecond times).
            ts_of = {c: ts for ts, c in got}
            order = [ts_of[c] for c in want]
            if order != sorted(order):
                fails.append("session %s (job %d): event times not in recording order: %s" % (sid, i, order))
    # How many jobs were recording at the same moment (information: the spool's writers
    # really were concurrent).
    spans = [(min(ts for ts, _ in evs), max(ts for ts, _ in evs)) for evs in by_session.values() if evs]
    overlap = max((sum(1 for a, b in spans if a <= t <= b) for t, _ in spans), default=0)
    jobs_seen = sorted(job_of_session.values())
    if jobs_seen != list(range(args.jobs)):
        fails.append("sessions map to jobs %s, expected each of 0..%d exactly once" % (jobs_seen, args.jobs - 1))

    if args.compare_exports:
        exp = read_export_tuples(args.compare_exports)
        got = collections.Counter(seen)
        if exp != got:
            fails.append("the bodies' (session, ts, event) tuples differ from the export files': "
                         "%d only exported, %d only received"
                         % (sum((exp - got).values()), sum((got - exp).values())))

    for f in fails:
        print("FAIL: " + f)
    print("%s: %d %s, %d events, %d sessions, largest body %d events, up to %d jobs recording at once, "
          "checked %d forbidden strings: %s"
          % (args.mode, len(bodies), what, n_events, len(by_session), max_batch, overlap,
             len(paths) + len(words) + len(numeric), "FAIL" if fails else "ok"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
