#!/usr/bin/env python3
"""telespool benchmarks (issue 7): every measure next to its baseline, in the same run.

Run through bench/run, which installs the tools and builds telespool; see --help.
Standard library only. Each section measures telespool and its baseline alternately
(rounds of A, B, then B, A, ...) so that drifting background load hits both alike.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import shlex
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")

# The event `record` and the sqlite3 baseline store in the one-row benchmarks.
ONE_EVENT_ARGS = [
    "record", "evaluation-task", "--task", "mmlu", "--framework", "lm-eval",
    "--model", "meta/llama-3.1-8b-instruct", "--status", "success", "--duration", "12.5",
]
ONE_EVENT_PARAMS = ('{"task":"mmlu","frameworkName":"lm-eval","model":"meta/llama-3.1-8b-instruct",'
                    '"executionDurationSeconds":12.5,"status":"success"}')
BASE_SCHEMA = ("CREATE TABLE events (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
               "name TEXT NOT NULL, parameters TEXT NOT NULL);")
TS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

MIB = 1 << 20


# ----------------------------------------------------------------------------- utils

T0 = time.monotonic()


def log(msg):
    print(f"bench [{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class StepFailed(Exception):
    pass


def sh(cmd, env=None, check=True, capture=True, stdin=None, input=None, timeout=None):
    """Runs a command (list), returning CompletedProcess; raises StepFailed on failure."""
    try:
        p = subprocess.run(cmd, env=env, stdin=stdin, input=input, timeout=timeout,
                           stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StepFailed(f"{cmd[0]}: {e}")
    if check and p.returncode != 0:
        err = (p.stderr or b"").decode(errors="replace").strip()[-2000:]
        raise StepFailed(f"`{' '.join(map(str, cmd))[:300]}` exited {p.returncode}: {err}")
    return p


def out(cmd, env=None):
    try:
        return sh(cmd, env=env).stdout.decode(errors="replace").strip()
    except StepFailed:
        return "?"


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def iqr(xs):
    if len(xs) < 4:
        return (min(xs), max(xs)) if xs else (float("nan"),) * 2
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def cpu_snapshot():
    """(wall, machine busy CPU-seconds, this process tree's CPU-seconds)."""
    busy = 0.0
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def fmt_s(s):
    if s != s:
        return "n/a"
    if s < 0.1:
        return f"{s * 1000:.2f} ms"
    return f"{s:.3f} s"


def fmt_n(x):
    if x != x:
        return "n/a"
    return f"{x:,.0f}"


def fmt_mib(kib):
    return f"{kib / 1024:.1f} MiB"


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def copy_spool(src, dst):
    rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    os.chmod(dst, 0o700)


# ---------------------------------------------------------------------- the harness

class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = os.path.abspath(args.bin)
        self.w = os.path.abspath(args.workdir)
        self.rows = []        # summary table rows
        self.details = {}     # per-section raw numbers, for results.json and the report
        self.notes = []       # things the reader must know (skips, noise, checks)
        self.failures = []    # steps that failed to run
        self.load = {}        # load average per section

        marker = os.path.join(self.w, ".telespool-bench")
        default = os.path.join(REPO, "target", "bench-work")
        if (self.w != default and os.path.isdir(self.w) and os.listdir(self.w)
                and not os.path.exists(marker)):
            sys.exit(f"bench: {self.w} exists and was not made by bench/run; refusing to wipe it "
                     "(choose another --workdir)")
        rmtree(self.w)
        os.makedirs(self.w)
        open(marker, "w").close()
        for d in ("home", "xdg", "data", "bin", "run", "tpl", "logs"):
            os.makedirs(os.path.join(self.w, d), exist_ok=True)
        # Default settings: no config file, no telemetry or Slurm variables.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NEMO_EVALUATOR_", "TELESPOOL_", "SLURM_"))}
        env.update(HOME=os.path.join(self.w, "home"), XDG_CONFIG_HOME=os.path.join(self.w, "xdg"),
                   XDG_DATA_HOME=os.path.join(self.w, "data"), LC_ALL="C")
        self.env = env
        # Spools of up to a million events need the bounds raised (the defaults would
        # drop events); every command that touches such a spool runs with these.
        self.big_env = dict(env, TELESPOOL_MAX_EVENTS=str(max(2_000_000, 2 * max(args.sizes))),
                            TELESPOOL_MAX_BYTES="4GiB")

    def path(self, *p):
        return os.path.join(self.w, *p)

    def ts(self, *args, env=None, **kw):
        return sh([self.bin, *args], env=env or self.env, **kw)

    # hyperfine, in alternating rounds; returns {name: [seconds...]}
    def hyperfine(self, tag, cmds, runs, warmup, rounds, shell=False, env=None):
        times = {name: [] for name, _, _ in cmds}
        for r in range(rounds):
            order = cmds if r % 2 == 0 else list(reversed(cmds))
            js = self.path("logs", f"{tag}-{r}.json")
            argv = ["hyperfine", "--style", "basic", "--runs", str(runs), "--warmup", str(warmup),
                    "--export-json", js]
            if not shell:
                argv.append("-N")
            if any(p for _, _, p in order):
                for _, _, p in order:
                    argv += ["--prepare", p or "true"]
            for name, cmd, _ in order:
                argv += ["-n", name, cmd]
            p = sh(argv, env=env or self.env)
            with open(self.path("logs", f"{tag}-{r}.txt"), "wb") as f:
                f.write(p.stdout + p.stderr)
            with open(js) as f:
                for res in json.load(f)["results"]:
                    times[res["command"]] += res["times"]
        return times

    def peak_rss(self, cmd, env=None, stdin_path=None):
        """Runs cmd under GNU time; returns (rc, peak RSS in KiB, wall seconds, stdout)."""
        f = self.path("logs", "time.out")
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        t = time.perf_counter()
        try:
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f, *cmd], env=env or self.env,
                               stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finally:
            if stdin_path:
                stdin.close()
        wall = time.perf_counter() - t
        with open(f) as fh:
            lines = [ln for ln in fh.read().split() if ln.isdigit()]
        rss = int(lines[-1]) if lines else 0
        return p.returncode, rss, wall, p.stdout, p.stderr

    def row(self, measure, baseline, base_val, ts_val, ratio, target, met):
        self.rows.append(dict(measure=measure, baseline=baseline, baseline_value=base_val,
                              telespool=ts_val, ratio=ratio, target=target, met=met))

    def section(self, name, fn):
        if self.a.only and name not in self.a.only and name != "fill":
            return
        log(f"== {name} (load average {loadavg()})")
        before = loadavg()
        w0, b0, o0 = cpu_snapshot()
        try:
            fn()
        except StepFailed as e:
            log(f"FAILED: {name}: {e}")
            self.failures.append(f"{name}: {e}")
        w1, b1, o1 = cpu_snapshot()
        ncpu = os.cpu_count() or 1
        wall = max(w1 - w0, 1e-9)
        other = max(0.0, (b1 - b0) - (o1 - o0))
        self.load[name] = dict(seconds=wall, ours=(o1 - o0) / (wall * ncpu),
                               others=other / (wall * ncpu), loadavg=f"{before} → {loadavg()}")
        log(f"   {name}: {wall:.1f} s; CPU used by other processes: {100 * other / (wall * ncpu):.0f}% "
            f"of the machine")

    # ------------------------------------------------------------------ machine

    def machine(self):
        lscpu = out(["lscpu"])
        get = lambda key: next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines()
                                if ln.startswith(key + ":")), "?")
        free = out(["free", "-m"]).splitlines()
        mem = next((ln.split()[1] for ln in free if ln.startswith("Mem:")), "?")
        os_name = "?"
        try:
            with open("/etc/os-release") as f:
                os_name = next((ln.split("=", 1)[1].strip().strip('"') for ln in f
                                if ln.startswith("PRETTY_NAME=")), "?")
        except OSError:
            pass
        fs = " ".join(out(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", self.w]).split())
        git = out(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"])
        dirty = sh(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                   check=False).stdout.strip()
        sqlite_id = "?"
        try:
            with open(self.bin, "rb") as f:
                m = re.search(rb"(20\d\d-\d\d-\d\d \d\d:\d\d:\d\d [0-9a-f]{12})[0-9a-f]+", f.read())
                sqlite_id = m.group(1).decode() if m else "?"
        except OSError:
            pass
        libsqlite = "?"
        try:
            with open(os.path.join(REPO, "Cargo.lock")) as f:
                m = re.search(r'name = "libsqlite3-sys"\nversion = "([^"]+)"', f.read())
                libsqlite = m.group(1) if m else "?"
        except OSError:
            pass
        self.info = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "smoke" if self.a.smoke else "full",
            "cpu": get("Model name"),
            "arch": get("Architecture"),
            "cpus": get("CPU(s)"),
            "threads_per_core": get("Thread(s) per core"),
            "hypervisor": get("Hypervisor vendor"),
            "nproc": out(["nproc"]),
            "mem_mib": mem,
            "kernel": platform.release(),
            "os": os_name,
            "workdir": self.w,
            "filesystem": fs,
            "telespool": out([self.bin, "--version"]) + f" (git {git}{', uncommitted changes' if dirty else ''})",
            "telespool_sqlite": f"bundled SQLite (libsqlite3-sys {libsqlite}, source id {sqlite_id}…)",
            "rustc": out(["rustc", "--version"]),
            "hyperfine": out(["hyperfine", "--version"]),
            "sqlite3": "sqlite3 " + out(["sqlite3", "--version"]).split(" ")[0],
            "gnu_time": (out(["dpkg-query", "-W", "-f=${Version}", "time"]) or "?"),
            "python3": out(["python3", "--version"]),
            "load_start": loadavg(),
        }
        self.info["lscpu"] = lscpu
        log(f"machine: {self.info['cpu']}, {self.info['nproc']} CPUs, {mem} MiB, "
            f"kernel {self.info['kernel']}, spool fs: {fs}")

    def build_helpers(self):
        for name in ("collector", "floor_sender"):
            sh(["rustc", "-O", "--edition", "2021", "-o", self.path("bin", name),
                os.path.join(BENCH, name + ".rs")])

    # ------------------------------------------------------------------ data

    def generate(self):
        """Deterministic events, the mix the two upstream clients send."""
        n = max(max(self.a.sizes), self.a.json_events)
        tasks = ["mmlu", "gsm8k", "hellaswag", "arc_challenge", "truthfulqa_mc2", "winogrande",
                 "humaneval", "mbpp", "ifeval", "gpqa_diamond", "math_500", "aime_2024", "bbh",
                 "drop", "mmlu_pro", "livecodebench"]
        frameworks = ["lm-evaluation-harness", "simple-evals", "bigcode-evaluation-harness",
                      "helm", "nemo-skills"]
        models = ["meta/llama-3.1-8b-instruct", "meta/llama-3.1-70b-instruct",
                  "mistralai/mixtral-8x7b-instruct-v0.1", "nvidia/llama-3.1-nemotron-70b-instruct",
                  "qwen/qwen2.5-7b-instruct", "deepseek-ai/deepseek-r1-distill-llama-8b", "redacted"]
        rnd = random.Random(7)
        path = self.path("data", "events.jsonl")
        self.raw_bytes = {}
        sizes = set(self.a.sizes) | {self.a.json_events}
        total = 0
        with open(path, "w") as f:
            for i in range(1, n + 1):
                status = rnd.choices(["started", "success", "failure"], [45, 45, 10])[0]
                if rnd.random() < 0.8:
                    p = {"task": rnd.choice(tasks), "frameworkName": rnd.choice(frameworks),
                         "model": rnd.choice(models),
                         "executionDurationSeconds": 0.0 if status == "started"
                         else round(rnd.uniform(1, 20000), 3),
                         "status": status}
                    ev = {"name": "EvaluationTaskEvent", "parameters": p}
                else:
                    p = {"executorType": rnd.choice(["local", "slurm", "lepton"]),
                         "deploymentType": rnd.choice(["none", "vllm", "sglang", "nim"]),
                         "model": rnd.choice(models),
                         "tasks": rnd.sample(tasks, rnd.randint(1, 6)),
                         "exporters": rnd.sample(["wandb", "mlflow", "gsheets", "local"],
                                                 rnd.randint(0, 2)),
                         "status": status}
                    ev = {"name": "LauncherJobEvent", "parameters": p}
                line = json.dumps(ev, separators=(",", ":"))
                total += len(line)
                f.write(line + "\n")
                if i in sizes:
                    self.raw_bytes[i] = total
        self.data = path
        log(f"generated {n:,} events ({total / n:.0f} bytes of JSON each on average)")

    def head(self, n, name):
        """The first n lines of the data, as a file."""
        path = self.path("data", name)
        with open(self.data, "rb") as src, open(path, "wb") as dst:
            for _ in range(n):
                dst.write(src.readline())
        return path

    def new_spool(self, path, env=None):
        """A spool that exists (created by one `record`), as the issue asks."""
        rmtree(path)
        self.ts("--spool", path, *ONE_EVENT_ARGS, env=env)
        return path

    def new_base_db(self, path, mode):
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        sh(["sqlite3", "-batch", path, f"PRAGMA journal_mode={mode};", BASE_SCHEMA])
        return path

    def insert_sql(self, mode, sync, rows=1, params=None):
        """The sqlite3 baseline's script: the same pragmas telespool uses, one transaction."""
        path = self.path("data", f"insert-{mode}-{sync}-{rows}.sql")
        with open(path, "w") as f:
            f.write(f"PRAGMA journal_mode={mode};\nPRAGMA synchronous={sync};\n")
            if rows == 1:
                f.write(f"INSERT INTO events (ts, name, parameters) VALUES ({TS_SQL}, "
                        f"'EvaluationTaskEvent', '{ONE_EVENT_PARAMS}');\n")
            else:
                f.write("BEGIN IMMEDIATE;\n")
                for line in params:
                    ev = json.loads(line)
                    pj = json.dumps(ev["parameters"], separators=(",", ":")).replace("'", "''")
                    f.write(f"INSERT INTO events (ts, name, parameters) VALUES ({TS_SQL}, "
                            f"'{ev['name']}', '{pj}');\n")
                f.write("COMMIT;\n")
        return path

    # ------------------------------------------------------------------ 1 + 2: one record

    def one_record(self):
        a = self.a
        spool = self.new_spool(self.path("run", "one"))
        mode = out(["sqlite3", "-batch", os.path.join(spool, "spool.db"), "PRAGMA journal_mode;"])
        fs_kind = "local" if mode == "wal" else "network"
        self.journal = mode
        self.sync = "FULL" if mode == "wal" else "EXTRA"
        log(f"telespool's spool here: journal_mode={mode}, synchronous={self.sync} "
            f"({fs_kind} filesystem rule in src/spool/mod.rs)")
        wal_db = self.new_base_db(self.path("run", "base-wal.db"), "WAL")
        del_db = self.new_base_db(self.path("run", "base-delete.db"), "DELETE")
        wal_sql = self.insert_sql("WAL", "FULL")
        del_sql = self.insert_sql("DELETE", "EXTRA")
        t_cmd = shlex.join([self.bin, "--spool", spool, *ONE_EVENT_ARGS])
        s_cmd = shlex.join(["sqlite3", "-batch", wal_db, f".read {wal_sql}"])
        d_cmd = shlex.join(["sqlite3", "-batch", del_db, f".read {del_sql}"])
        cmds = [("telespool", t_cmd, None), ("sqlite3-wal-full", s_cmd, None),
                ("sqlite3-delete-extra", d_cmd, None)]
        times = self.hyperfine("record", cmds, a.record_runs, a.record_warmup, a.rounds)
        t, s, d = (times[n] for n in ("telespool", "sqlite3-wal-full", "sqlite3-delete-extra"))
        # Sanity: every run stored its row.
        q = json.loads(self.ts("--spool", spool, "inspect", "--json").stdout)
        expect = 1 + (a.record_runs + a.record_warmup) * a.rounds
        if q["queued"] != expect:
            raise StepFailed(f"record: expected {expect} queued events, found {q['queued']}")
        self.details["record"] = {k: {"median": med(v), "min": min(v), "iqr": iqr(v), "n": len(v)}
                                  for k, v in times.items()}
        self.details["record"]["commands"] = {n: c for n, c, _ in cmds}
        self.row("one `record` process, median wall time",
                 f"`sqlite3` CLI, one INSERT, journal_mode={mode.upper()} + synchronous={self.sync}",
                 fmt_s(med(s)), fmt_s(med(t)), med(t) / med(s), "≤ 1.0×",
                 med(t) / med(s) <= 1.0)
        self.row("(context) the same `sqlite3` insert, rollback journal",
                 "`sqlite3`, journal_mode=DELETE + synchronous=EXTRA (what telespool uses on NFS/Lustre/GPFS)",
                 fmt_s(med(d)), "—", None, "—", None)

        # 2: peak RSS of the same two, alternately.
        rss = {"telespool": [], "sqlite3": []}
        for _ in range(a.rss_runs):
            rc, k, *_ = self.peak_rss([self.bin, "--spool", spool, *ONE_EVENT_ARGS])
            if rc:
                raise StepFailed(f"record exited {rc}")
            rss["telespool"].append(k)
            rc, k, *_ = self.peak_rss(["sqlite3", "-batch", wal_db, f".read {wal_sql}"])
            if rc:
                raise StepFailed(f"sqlite3 exited {rc}")
            rss["sqlite3"].append(k)
        self.details["record_rss_kib"] = {k: {"median": med(v), "min": min(v), "max": max(v)}
                                          for k, v in rss.items()}
        tr, sr = med(rss["telespool"]), med(rss["sqlite3"])
        self.row("peak RSS of one `record`", "the same `sqlite3` insert (WAL + FULL)",
                 fmt_mib(sr), fmt_mib(tr), tr / sr, "≤ 1.0×", tr / sr <= 1.0)

    # ------------------------------------------------------------------ 3: concurrency

    def concurrent(self):
        a = self.a
        W, E = a.writers, a.writer_events
        wal_sql = self.insert_sql("WAL", "FULL")
        results = {"telespool": [], "sqlite3": []}
        for rep in range(a.conc_reps):
            for who in (["telespool", "sqlite3"] if rep % 2 == 0 else ["sqlite3", "telespool"]):
                d = self.path("run", f"conc-{who}")
                rmtree(d)
                os.makedirs(d)
                if who == "telespool":
                    spool = self.new_spool(os.path.join(d, "spool"))
                    cmd = shlex.join([self.bin, "--spool", spool, *ONE_EVENT_ARGS])
                else:
                    db = self.new_base_db(os.path.join(d, "base.db"), "WAL")
                    cmd = shlex.join(["sqlite3", "-batch", "-bail", "-cmd", ".timeout 30000", db,
                                      f".read {wal_sql}"])
                script = os.path.join(d, "writers.sh")
                with open(script, "w") as f:
                    f.write(f"""#!/bin/bash
# {W} concurrent writers, each running {E} separate processes one after the other.
for w in $(seq {W}); do
  ( for i in $(seq {E}); do
      {cmd} >/dev/null 2>>"{d}/err.$w" || echo "$?" >>"{d}/fail.$w"
    done ) &
done
wait
""")
                t = time.perf_counter()
                sh(["bash", script], env=self.env)
                wall = time.perf_counter() - t
                fails, codes, errs = 0, {}, set()
                for name in os.listdir(d):
                    if name.startswith("fail."):
                        with open(os.path.join(d, name)) as f:
                            for c in f.read().split():
                                fails += 1
                                codes[c] = codes.get(c, 0) + 1
                    if name.startswith("err."):
                        with open(os.path.join(d, name), errors="replace") as f:
                            errs |= {ln.strip()[:200] for ln in f if ln.strip()}
                if who == "telespool":
                    stored = json.loads(self.ts("--spool", spool, "inspect", "--json").stdout)["queued"] - 1
                else:
                    stored = int(out(["sqlite3", "-batch", db, "SELECT count(*) FROM events"]))
                results[who].append(dict(seconds=wall, events_per_s=stored / wall, stored=stored,
                                         failed_processes=fails, exit_codes=codes,
                                         lost=W * E - stored, errors=sorted(errs)[:5]))
                log(f"  {who}: {W}×{E} in {wall:.2f} s, {stored} stored, {fails} failed")
        self.details["concurrent"] = results
        te = med([r["events_per_s"] for r in results["telespool"]])
        se = med([r["events_per_s"] for r in results["sqlite3"]])
        def failed(rs):
            f = sum(r["failed_processes"] for r in rs)
            lost = sum(max(0, r["lost"]) for r in rs)
            return f, lost, f"{f} failed" + (f", {lost} events missing" if lost else "")
        tf, tl, tt = failed(results["telespool"])
        _, _, st = failed(results["sqlite3"])
        self.row(f"{W} concurrent writer processes × {E} events, events/s (failures summed over {a.conc_reps} runs)",
                 f"{W} concurrent `sqlite3` processes × {E} inserts, WAL + FULL, `.timeout 30000`",
                 f"{fmt_n(se)}/s, {st}", f"{fmt_n(te)}/s, {tt}", te / se,
                 "≥ 0.8×, 0 failures", te / se >= 0.8 and tf == 0 and tl == 0)

    # ------------------------------------------------------------------ 4: record --json -

    def json_batch(self):
        a = self.a
        n = a.json_events
        lines = self.head(n, f"json-{n}.jsonl")
        tpl = self.new_spool(self.path("tpl", "one"))
        run = self.path("run", "json")
        db_tpl = self.new_base_db(self.path("tpl", "base-wal.db"), "WAL")
        db = self.path("run", "json-base.db")
        with open(lines) as f:
            sql = self.insert_sql("WAL", "FULL", rows=n, params=f.readlines())
        q = shlex.quote
        cmds = [("telespool", f"{q(self.bin)} --spool {q(run)} record --json - < {q(lines)}",
                 f"rm -rf {q(run)} && cp -a {q(tpl)} {q(run)}"),
                ("sqlite3", shlex.join(["sqlite3", "-batch", db, f".read {sql}"]),
                 f"rm -f {q(db + '-wal')} {q(db + '-shm')} && cp {q(db_tpl)} {q(db)}")]
        times = self.hyperfine("json", cmds, a.json_runs, 1, max(1, a.rounds // 3), shell=True)
        q = json.loads(self.ts("--spool", run, "inspect", "--json").stdout)["queued"]
        if q != n + 1:
            raise StepFailed(f"record --json -: expected {n + 1} queued, found {q}")
        t, s = med(times["telespool"]), med(times["sqlite3"])
        self.details["json"] = {k: {"median": med(v), "min": min(v), "iqr": iqr(v), "n": len(v)}
                                for k, v in times.items()}
        self.row(f"`record --json -` of {n:,} events in one call, events/s",
                 f"(context, no target) `sqlite3` inserting the same {n:,} rows in one transaction, WAL + FULL",
                 f"{fmt_n(n / s)}/s ({fmt_s(s)})", f"{fmt_n(n / t)}/s ({fmt_s(t)})", None,
                 "≥ 50,000/s", n / t >= 50_000)

    # ------------------------------------------------------------------ spools of N events

    def fill(self):
        """Template spools of each size, filled by `record --json -` in chunks."""
        self.templates = {}
        fill = {}
        for size in self.a.sizes:
            spool = self.path("tpl", f"spool-{size}")
            rmtree(spool)
            chunk = min(self.a.chunk, size)
            t_total = 0.0
            with open(self.data, "rb") as src:
                for i, start in enumerate(range(0, size, chunk)):
                    count = min(chunk, size - start)
                    body = b"".join(src.readline() for _ in range(count))
                    env = dict(self.big_env, NEMO_EVALUATOR_TELEMETRY_SESSION_ID=f"bench-{size}-{i}",
                               NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION="0.2.8")
                    t = time.perf_counter()
                    self.ts("--spool", spool, "record", "--json", "-", env=env, input=body)
                    t_total += time.perf_counter() - t
            q = json.loads(self.ts("--spool", spool, "inspect", "--json", env=self.big_env).stdout)
            if q["queued"] != size or q["dropped"] != 0:
                raise StepFailed(f"fill {size}: queued {q['queued']}, dropped {q['dropped']}")
            files = {f: os.path.getsize(os.path.join(spool, f)) for f in os.listdir(spool)}
            fill[size] = dict(seconds=t_total, events_per_s=size / t_total, chunk=chunk,
                              size_bytes=q["size_bytes"], files=files,
                              raw_json_bytes=self.raw_bytes[size])
            self.templates[size] = spool
            log(f"  spool of {size:,}: filled in {t_total:.2f} s ({size / t_total:,.0f}/s), "
                f"{q['size_bytes'] / size:.0f} bytes/event on disk")
        self.details["fill"] = fill

    def size(self):
        if not getattr(self, "templates", None):
            self.fill()
        n = max(self.a.sizes)
        f = self.details["fill"][n]
        per = f["size_bytes"] / n
        raw = f["raw_json_bytes"] / n
        self.row(f"spool bytes per event ({n:,} events)",
                 "the raw JSON of the events (the compact `record --json` lines)",
                 f"{raw:.0f} B", f"{per:.0f} B", per / raw, "≤ 1.5×", per / raw <= 1.5)

    # ------------------------------------------------------------------ 6: inspect

    def inspect(self):
        a = self.a
        if not getattr(self, "templates", None):
            self.fill()
        n = max(a.sizes)
        spool = self.path("run", "inspect")
        copy_spool(self.templates[n], spool)
        db = os.path.join(spool, "spool.db")
        cmds = [("inspect", shlex.join([self.bin, "--spool", spool, "inspect"]), None),
                ("inspect --json", shlex.join([self.bin, "--spool", spool, "inspect", "--json"]), None),
                ("sqlite3 count", shlex.join(["sqlite3", "-batch", db, "SELECT count(*) FROM events"]), None)]
        times = self.hyperfine("inspect", cmds, a.inspect_runs, 2, max(1, a.rounds // 3), env=self.big_env)
        self.details["inspect"] = {k: {"median": med(v), "min": min(v), "iqr": iqr(v), "n": len(v)}
                                   for k, v in times.items()}
        c = med(times["sqlite3 count"])
        for name in ("inspect", "inspect --json"):
            t = med(times[name])
            self.row(f"`{name}` on {n:,} events", "`sqlite3 spool.db 'SELECT count(*) FROM events'`",
                     fmt_s(c), fmt_s(t), t / c, "≤ 0.5 s and ≤ 3×", t <= 0.5 and t / c <= 3)

    # ------------------------------------------------------------------ 5: upload

    def _get(self, what):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{what}") as r:
            return json.load(r)

    def reset_stats(self):
        self._get("stats?reset")

    def collector_stats(self, expect):
        """The collector's counts once `expect` events arrived (it counts each request just
        after answering it) or the counts stop changing."""
        deadline = time.monotonic() + 3
        last = None
        while True:
            s = self._get("stats")
            if s["events"] >= expect or s == last or time.monotonic() > deadline:
                return s
            last = s
            time.sleep(0.05)

    def start_collector(self, delay_ms=0):
        self.collector = subprocess.Popen([self.path("bin", "collector"), "0", str(delay_ms)],
                                          stdout=subprocess.PIPE)
        self.port = int(self.collector.stdout.readline())
        self.endpoint = f"http://127.0.0.1:{self.port}/v1.1/events/json"

    def upload_works(self):
        spool = self.path("run", "probe")
        rmtree(spool)
        with open(self.head(10, "ten.jsonl"), "rb") as f:
            self.ts("--spool", spool, "record", "--json", "-", input=f.read())
        self.reset_stats()
        p = self.ts("--spool", spool, "upload", "--endpoint", self.endpoint, "--now", check=False)
        s = self.collector_stats(expect=10)
        if p.returncode == 0 and s["events"] == 10:
            return None
        return (f"`telespool upload --endpoint {self.endpoint} --now` exited {p.returncode} "
                f"(collector got {s['events']} of 10 events): "
                f"{p.stderr.decode(errors='replace').strip()[:300]}")

    def bodies(self, size):
        """The exact request bodies telespool would send for the spool of `size` events."""
        path = self.path("data", f"bodies-{size}.jsonl")
        spool = self.path("run", "export")
        copy_spool(self.templates[size], spool)
        p = self.ts("--spool", spool, "export", "--output", "-", env=self.big_env, check=False)
        how = "`telespool export --output -` (the bodies `upload` sends, byte for byte)"
        text = p.stdout if p.returncode == 0 else b""
        if p.returncode != 0:
            p = self.ts("--spool", spool, "upload", "--dry-run", "--endpoint", self.endpoint,
                        env=self.big_env, check=False)
            how = "`telespool upload --dry-run` (the bodies `upload` sends)"
            text = b"\n".join(ln for ln in p.stdout.splitlines() if ln.startswith(b"{"))
        count = 0
        lines = []
        for ln in text.splitlines():
            try:
                body = json.loads(ln)
            except ValueError:
                continue
            if isinstance(body, dict) and isinstance(body.get("events"), list):
                count += len(body["events"])
                lines.append(ln)
        if count != size:
            raise StepFailed(f"could not get the request bodies for {size} events "
                             f"(export/dry-run gave {count})")
        with open(path, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
        self.bodies_how = how
        return path, len(lines)

    def sqlite_drain_sql(self, size):
        """The SQLite part of an upload, done by the sqlite3 CLI as cheaply as SQL allows:
        read each batch of 100 events of a stream (with its stream row) and delete it by
        id range, 32 batches per transaction, WAL + FULL, on a copy of the same spool
        (telespool's schema, triggers included). Sends nothing."""
        path = self.path("data", f"drain-{size}.sql")
        db = os.path.join(self.templates[size], "spool.db")
        rows = sh(["sqlite3", "-batch", db, "SELECT stream, id FROM events ORDER BY stream, id"]).stdout
        batches, cur = [], None
        for ln in rows.decode().split():
            stream, eid = map(int, ln.split("|"))
            if cur and cur[0] == stream and cur[3] < 100:
                cur[2] = eid
                cur[3] += 1
            else:
                cur = [stream, eid, eid, 1]
                batches.append(cur)
        with open(path, "w") as f:
            f.write("PRAGMA journal_mode=WAL;\nPRAGMA synchronous=FULL;\n")
            for w in range(0, len(batches), 32):
                f.write("BEGIN IMMEDIATE;\n")
                for stream, lo, hi, _ in batches[w:w + 32]:
                    f.write("SELECT count(*), sum(length(parameters) + length(session_id) + ts + kind + status) FROM "
                            "(SELECT e.id, e.kind, e.status, e.ts, e.level, e.parameters, s.session_id, "
                            "s.client_ver, s.schema_ver FROM events e JOIN streams s ON s.id = e.stream "
                            f"WHERE e.stream = {stream} AND e.id BETWEEN {lo} AND {hi} AND e.rejected = 0 "
                            "ORDER BY e.id);\n")
                    f.write(f"DELETE FROM events WHERE stream = {stream} AND id BETWEEN {lo} AND {hi};\n")
                f.write("COMMIT;\n")
            f.write("DELETE FROM streams WHERE NOT EXISTS (SELECT 1 FROM events WHERE events.stream = streams.id);\n")
        return path

    def send_once(self, who, size, bodies):
        """One timed delivery of the spool of `size` events to the running collector, by
        telespool or by the floor sender; checks that every event arrived."""
        self.reset_stats()
        if who == "telespool":
            spool = self.path("run", "upload")
            copy_spool(self.templates[size], spool)
            rc, rss, wall, _, err = self.peak_rss(
                [self.bin, "--spool", spool, "upload", "--endpoint", self.endpoint,
                 "--now", "--quiet"], env=self.big_env)
            if rc != 0:
                raise StepFailed(f"upload of {size} exited {rc}: {err.decode(errors='replace')[:300]}")
            left = json.loads(self.ts("--spool", spool, "inspect", "--json",
                                      env=self.big_env).stdout)["queued"]
            s = self.collector_stats(expect=size)
            if s["events"] != size or left != 0:
                raise StepFailed(f"upload of {size}: collector got {s['events']}, {left} left in the spool")
            return dict(seconds=wall, rss_kib=rss, received=s["events"], requests=s["requests"],
                        left_in_spool=left)
        rc, rss, wall, so, err = self.peak_rss(
            [self.path("bin", "floor_sender"), f"127.0.0.1:{self.port}", "/v1.1/events/json", bodies])
        if rc != 0:
            raise StepFailed(f"floor sender exited {rc}: {err.decode(errors='replace')[:300]}")
        fs = json.loads(so)
        s = self.collector_stats(expect=size)
        if s["events"] != size:
            raise StepFailed(f"floor sender: collector got {s['events']} of {size}")
        return dict(seconds=fs["seconds"], process_seconds=wall, rss_kib=rss, received=s["events"])

    def upload(self):
        a = self.a
        if not getattr(self, "templates", None):
            self.fill()
        self.start_collector()
        try:
            why = self.upload_works()
            if why:
                self.notes.append(f"**upload not measured**: {why}. The rest of the table was measured; "
                                  "re-run `bench/run` once `upload` is in the build.")
                log(f"upload SKIPPED: {why}")
                self.details["upload"] = {"skipped": why}
                for what, target in (("time vs the floor", "≤ 1.5×"), ("events/s vs upstream", "≥ 10×"),
                                     ("peak RSS", "≤ 64 MiB")):
                    self.row(f"`upload` of {max(a.sizes):,} events, {what}", "—", "—",
                             "not measured (upload not in this build)", None, target, None)
                return
            self._upload()
        finally:
            self.collector.terminate()
            self.collector.wait()

    def _upload(self):
        a = self.a
        upstream_py = self.upstream_python()
        res = {}
        up_runs = {}
        for size in a.sizes:
            bodies, nreq = self.bodies(size)
            drain = self.sqlite_drain_sql(size)
            reps = a.upload_reps
            r = dict(telespool=[], floor=[], sqlite=[], requests=nreq)
            for rep in range(reps):
                # The SQLite-only part (context): same spool, no network.
                spool = self.path("run", "drain")
                copy_spool(self.templates[size], spool)
                rc, rss, wall, _, err = self.peak_rss(["sqlite3", "-batch", os.path.join(spool, "spool.db"),
                                                       f".read {drain}"])
                left = int(out(["sqlite3", "-batch", os.path.join(spool, "spool.db"),
                                "SELECT count(*) FROM events"]))
                if rc != 0 or left != 0:
                    raise StepFailed(f"sqlite3 drain of {size}: exit {rc}, {left} left: {err.decode()[:300]}")
                r["sqlite"].append(dict(seconds=wall, rss_kib=rss))
                for who in (["telespool", "floor"] if rep % 2 == 0 else ["floor", "telespool"]):
                    r[who].append(self.send_once(who, size, bodies))
            # The upstream client, on the same events (the first --upstream-max of them).
            if upstream_py and size == max(a.sizes):
                n = min(size, a.upstream_max) if a.upstream_max else size
                if n not in up_runs:
                    self.reset_stats()
                    env = dict(self.env, NEMO_EVALUATOR_TELEMETRY_ENDPOINT=self.endpoint, LOG_LEVEL="ERROR")
                    rc, rss, wall, so, err = self.peak_rss(
                        [upstream_py, os.path.join(BENCH, "upstream_sender.py"), self.data,
                         "--limit", str(n), "--batch", str(a.upstream_batch)], env=env)
                    if rc != 0:
                        raise StepFailed(f"upstream sender exited {rc}: {err.decode(errors='replace')[-500:]}")
                    u = json.loads(so.decode().strip().splitlines()[-1])
                    s = self.collector_stats(expect=n)
                    if s["events"] != n:
                        raise StepFailed(f"upstream sender: collector got {s['events']} of {n}")
                    up_runs[n] = dict(u, rss_kib=rss, process_seconds=wall, events_per_s=n / u["seconds"])
                    log(f"  upstream: {n:,} events in {u['seconds']:.2f} s ({n / u['seconds']:,.0f}/s)")
                r["upstream"] = up_runs[n]
            tm = med([x["seconds"] for x in r["telespool"]])
            fm = med([x["seconds"] for x in r["floor"]])
            sm = med([x["seconds"] for x in r["sqlite"]])
            r["summary"] = dict(telespool_s=tm, floor_s=fm, ratio=tm / fm, events_per_s=size / tm,
                                sqlite_s=sm, sqlite_plus_floor_ratio=tm / (sm + fm),
                                rss_kib=max(x["rss_kib"] for x in r["telespool"]),
                                floor_rss_kib=med([x["rss_kib"] for x in r["floor"]]))
            res[size] = r
            log(f"  upload {size:,}: telespool {tm:.3f} s, floor {fm:.3f} s ({tm / fm:.2f}×), "
                f"RSS {r['summary']['rss_kib'] / 1024:.1f} MiB")
        self.details["upload"] = res
        self.details["upload_bodies"] = self.bodies_how
        n = max(a.sizes)
        big = res[n]["summary"]
        self.row(f"`upload` of {n:,} events to a loopback collector, wall time",
                 "(a) floor: compiled keep-alive sender posting the same bodies from memory",
                 fmt_s(big["floor_s"]), fmt_s(big["telespool_s"]), big["ratio"], "≤ 1.5×",
                 big["ratio"] <= 1.5)
        if "upstream" in res[n]:
            u = res[n]["upstream"]
            ratio = big["events_per_s"] / u["events_per_s"]
            label = "(b) upstream `TelemetryHandler`, 50-event start/enqueue/stop cycles"
            if u["events"] != n:
                label += f" (first {u['events']:,} of the events)"
            self.row(f"`upload` of {n:,} events, events/s", label,
                     f"{fmt_n(u['events_per_s'])}/s", f"{fmt_n(big['events_per_s'])}/s", ratio,
                     "≥ 10×", ratio >= 10)
        else:
            self.row(f"`upload` of {n:,} events, events/s", "(b) upstream client", "not measured",
                     f"{fmt_n(big['events_per_s'])}/s", None, "≥ 10×", None)
        self.row(f"(context) `upload` of {n:,} events, wall time",
                 "(c) SQLite's own part: `sqlite3` reading the same batches and deleting them by id range, "
                 "32 per transaction, WAL + FULL, on a copy of the same spool; sends nothing",
                 fmt_s(big["sqlite_s"]), fmt_s(big["telespool_s"]), big["telespool_s"] / big["sqlite_s"],
                 "—", None)
        if a.delay_ms:
            self.delayed(res)
        worst = max(res[s]["summary"]["rss_kib"] for s in a.sizes)
        self.row("`upload` peak RSS, largest of " + ", ".join(f"{s:,}" for s in a.sizes) + " events",
                 "—", "—", fmt_mib(worst), None, "≤ 64 MiB", worst <= 64 * 1024)

    def delayed(self, res):
        """(context) The same delivery to a collector that answers each request after
        --delay-ms, as an endpoint across a network would: what the floor ratio becomes
        once the network, not the loopback, sets the pace."""
        a = self.a
        size = sorted(a.sizes)[len(a.sizes) // 2]
        fast = (self.collector, self.port, self.endpoint)
        self.start_collector(a.delay_ms)
        try:
            bodies = self.path("data", f"bodies-{size}.jsonl")
            r = dict(telespool=[], floor=[])
            for rep in range(max(1, a.upload_reps - 1)):
                for who in (["telespool", "floor"] if rep % 2 == 0 else ["floor", "telespool"]):
                    r[who].append(self.send_once(who, size, bodies))
        finally:
            self.collector.terminate()
            self.collector.wait()
            self.collector, self.port, self.endpoint = fast
        tm = med([x["seconds"] for x in r["telespool"]])
        fm = med([x["seconds"] for x in r["floor"]])
        r["summary"] = dict(size=size, delay_ms=a.delay_ms, telespool_s=tm, floor_s=fm, ratio=tm / fm)
        self.details["upload_delayed"] = r
        log(f"  upload {size:,} with {a.delay_ms} ms answers: telespool {tm:.3f} s, floor {fm:.3f} s ({tm / fm:.2f}×)")
        self.row(f"(context) `upload` of {size:,} events to a collector answering after {a.delay_ms} ms, wall time",
                 "(a) the floor, same collector", fmt_s(fm), fmt_s(tm), tm / fm, "—", None)

    def upstream_python(self):
        if self.a.no_upstream:
            self.notes.append("upstream client not measured (--no-upstream)")
            return None
        py = os.environ.get("TELESPOOL_TEST_PYTHON")  # CI's venv, if it made one already
        if not py or sh([py, "-c", "import nemo_evaluator.telemetry"], check=False).returncode != 0:
            p = sh(["bash", os.path.join(REPO, ".ci", "lib", "python-venv.sh")], env=dict(os.environ))
            py = p.stdout.decode().strip().splitlines()[-1]
        vers = out([py, "-c", "from importlib.metadata import version as v; "
                    "print(' '.join(f'{p}=={v(p)}' for p in ('nemo-evaluator','nemo-evaluator-launcher','httpx','pydantic')))"])
        self.info["upstream"] = f"{vers} ({out([py, '--version'])}, venv {os.path.dirname(os.path.dirname(py))})"
        return py

    # ------------------------------------------------------------------ report

    def table(self):
        lines = ["| measure | baseline (same run) | baseline | telespool | ratio | target | met? |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
            met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
            lines.append(f"| {r['measure']} | {r['baseline']} | {r['baseline_value']} | "
                         f"{r['telespool']} | {ratio} | {r['target']} | {met} |")
        return "\n".join(lines)

    def scaling_table(self):
        up = self.details.get("upload")
        if not up or "skipped" in up:
            return None
        lines = ["| events | requests | telespool time | telespool events/s | telespool peak RSS | "
                 "floor time | ratio to floor | SQLite's own part | upstream events/s (events sent) | upstream peak RSS |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for size in self.a.sizes:
            r = up[size]
            s = r["summary"]
            u = r.get("upstream")
            lines.append(f"| {size:,} | {r['requests']:,} | {fmt_s(s['telespool_s'])} | "
                         f"{fmt_n(s['events_per_s'])}/s | {fmt_mib(s['rss_kib'])} | {fmt_s(s['floor_s'])} | "
                         f"{s['ratio']:.2f}× | {fmt_s(s['sqlite_s'])} | "
                         + (f"{fmt_n(u['events_per_s'])}/s ({u['events']:,}) | {fmt_mib(u['rss_kib'])} |"
                            if u else "— | — |"))
        return "\n".join(lines)

    def report(self):
        i = self.info
        a = self.a
        d = self.details
        md = []
        md.append("# telespool benchmarks\n")
        md.append(f"Measured by `bench/run{' --smoke' if a.smoke else ''}` on {i['date']} ({i['mode']} run). "
                  "Every figure is measured next to its baseline in the same run, alternating between "
                  "them; times are medians. Issue 7 sets the targets; targets are reported here, "
                  "not asserted.\n")
        md.append(self.table() + "\n")
        if self.notes:
            md.append("Notes on this run:\n")
            md += [f"- {n}" for n in self.notes]
            md.append("")
        sc = self.scaling_table()
        if sc:
            md.append("## Upload scaling\n")
            md.append("Time should grow linearly with the spool and memory stay flat.\n")
            md.append(sc + "\n")
        md.append("## Machine\n")
        md.append(f"- CPU: {i['cpu']} ({i['arch']}), {i['cpus']} CPUs (`nproc`: {i['nproc']}), "
                  f"{i['threads_per_core']} thread(s) per core, hypervisor: {i['hypervisor']}")
        md.append(f"- Memory: {i['mem_mib']} MiB (`free -m`)")
        md.append(f"- OS: {i['os']}, kernel {i['kernel']}")
        md.append(f"- Spool and databases on: `{i['filesystem']}` (`findmnt -T {i['workdir']}`); "
                  f"telespool picks journal_mode={getattr(self, 'journal', '?').upper()}, "
                  f"synchronous={getattr(self, 'sync', '?')} there")
        md.append("")
        md.append("## Noise\n")
        md.append("How busy the machine was with other work while each section ran (CPU time of every process "
                  "outside the benchmark's own process tree, from `/proc/stat`, as a share of all CPUs), "
                  "and the load average. Figures from a section where others used much of the machine are "
                  "less reliable; re-run on a quiet machine.\n")
        md.append("| section | wall time | benchmark's own CPU | other processes' CPU | load average (before → after) |")
        md.append("|---|---|---|---|---|")
        for k, v in self.load.items():
            md.append(f"| {k} | {v['seconds']:.1f} s | {100 * v['ours']:.0f}% | {100 * v['others']:.0f}% | "
                      f"{v['loadavg']} |")
        md.append("")
        md.append("## Tools\n")
        for k in ("telespool", "telespool_sqlite", "rustc", "hyperfine", "sqlite3", "gnu_time", "python3",
                  "upstream"):
            if k in i:
                md.append(f"- {k.replace('_', ' ')}: {i[k]}")
        md.append("")
        md.append("## What each figure is\n")
        md.append(self.method())
        md.append("## How to reproduce\n")
        md.append("```sh\nbench/run            # full run: installs hyperfine, time, sqlite3 with apt-get if "
                  "missing,\n                     # builds telespool (cargo build --release), writes BENCHMARKS.md\n"
                  "bench/run --smoke    # 1-2 min, small sizes; prints the table only (add --write to write it)\n"
                  "bench/run --help     # sizes, repetitions, --only SECTION, --workdir\n```\n")
        md.append("Raw numbers (every run of every command): `target/bench-work/results.json` and the "
                  "hyperfine exports in `target/bench-work/logs/`.\n")
        md.append("## What we found\n")
        misses = [r for r in self.rows if r["met"] is False]
        if misses:
            md.append("Targets missed in this run: " + "; ".join(r["measure"] for r in misses) + ".\n")
        else:
            md.append("Every measured target was met in this run.\n")
        findings = os.path.join(BENCH, "findings.md")
        if os.path.exists(findings):
            with open(findings) as f:
                md.append(f.read().strip() + "\n")
        return "\n".join(md)

    def method(self):
        a = self.a
        d = self.details
        bodies_how = d.get("upload_bodies", "`telespool export --output -`")
        return f"""- **Events.** {max(max(a.sizes), a.json_events):,} deterministic events (seed 7): 80%
  `EvaluationTaskEvent`, 20% `LauncherJobEvent` with 1–6 tasks and 0–2 exporters, real task,
  framework and model names; written as compact `record --json` lines
  (`target/bench-work/data/events.jsonl`). Spools of {", ".join(f"{s:,}" for s in a.sizes)}
  events are filled with `record --json -` in calls of at most {a.chunk:,} lines, each call its own session
  (so `upload` fills every request with the default 100 events), with
  `TELESPOOL_MAX_EVENTS` and `TELESPOOL_MAX_BYTES=4GiB` raised so the default bounds drop nothing;
  every command that touches those spools runs with the same two variables.
- **Settings.** No config file and no `NEMO_EVALUATOR_*`, `TELESPOOL_*` or `SLURM_*` variables
  (default settings, level 2), `HOME`/`XDG_CONFIG_HOME` pointed into the work directory.
- **One `record`**: `hyperfine -N` (no shell), {a.rounds} rounds × {a.record_runs} runs (+{a.record_warmup} warm-up)
  of each command, alternating, median of all. telespool: `telespool --spool DIR {' '.join(ONE_EVENT_ARGS)}`
  into a spool created beforehand, a fresh process each run. Baseline: `sqlite3 -batch base.db '.read insert.sql'`
  where the database was created in WAL mode with one table
  `{BASE_SCHEMA}` and `insert.sql` is `PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
  INSERT INTO events (ts, name, parameters) VALUES (<now in ms>, 'EvaluationTaskEvent', '<the same parameters JSON>');`
  — the journal mode and `synchronous` telespool itself uses on a local disk (WAL + FULL; on NFS/Lustre/GPFS
  it uses DELETE + EXTRA, shown as a context row). Both sides pay the same SQLite costs (open, WAL recovery
  and the checkpoint when the last connection closes).
- **Peak RSS**: GNU `/usr/bin/time -f %M` (maximum resident set size), {a.rss_runs} runs of each, alternating; median.
- **Concurrency**: a bash script starts {a.writers} background writers at once, each running
  {a.writer_events} separate processes one after another (telespool: the `record` above into one fresh spool;
  baseline: `sqlite3 -batch -bail -cmd '.timeout 30000' base.db '.read insert.sql'` into one fresh WAL
  database); events/s = events found stored afterwards / wall time of the script; failures = non-zero exits
  plus events missing. {a.conc_reps} repetitions, alternating, median.
- **`record --json -`**: `hyperfine` (shell, for the `<` redirection), {max(1, a.rounds // 3)} rounds × {a.json_runs} runs;
  each run into a fresh copy of a spool holding one event (`--prepare rm -rf … && cp -a …`). The context
  baseline is `sqlite3` running the same rows as INSERTs in one `BEGIN IMMEDIATE … COMMIT`.
- **`upload`**: a loopback collector (`bench/collector.rs`, standard-library Rust, a thread per connection,
  HTTP/1.1 keep-alive, answers `200` with an empty body as soon as it has read a request, then counts the
  request's events; the benchmark checks that every event arrived). Each run copies the template spool and times
  `telespool --spool COPY upload --endpoint http://127.0.0.1:PORT/v1.1/events/json --now --quiet` as a whole
  process (start-up, reading, claiming, sending and deleting), {a.upload_reps} runs per size, alternating
  with the floor; the spool is checked empty afterwards.
  (a) **Floor**: `bench/floor_sender.rs` (standard-library Rust, `rustc -O`): reads the request bodies
  of {bodies_how}, builds every request in memory before the clock starts, then sends them in
  order on one keep-alive connection (TCP_NODELAY), one write per request and a blocking read of each
  answer; the time is from connect to the last answer.
  (c) **SQLite's own part** (context, no target): `sqlite3 -batch spool.db '.read drain.sql'` on a fresh copy
  of the same spool, where `drain.sql` does, with WAL + FULL, what SQL needs at the least to drain it the way
  `upload` does: for each batch (100 events of one stream, in id order) a `SELECT` of its rows joined with their
  stream, and a `DELETE … WHERE stream = ? AND id BETWEEN ? AND ?` (telespool's schema and tally triggers
  included), 32 batches per transaction. The difference between telespool and floor + this is telespool's own code.
  A context row repeats (a) for the middle spool size with the collector answering each request
  {a.delay_ms} ms after reading it (`--delay-ms`), like an endpoint one network hop away, to show the ratio once the
  network rather than loopback sets the pace.
  (b) **Upstream**: `bench/upstream_sender.py` with nemo-evaluator's own `TelemetryHandler` from PyPI,
  the fastest way its callers can send: one handler, and per batch of {a.upstream_batch} events the public
  `start()`, `enqueue()` × {a.upstream_batch}, `stop()` cycle. With its synchronous API the handler posts only at
  `stop()` (its flush timer dies with `start()`'s event loop), one POST per cycle on a fresh
  `httpx.AsyncClient`. Building the pydantic events is outside the clock; `LOG_LEVEL=ERROR` silences the two
  warnings it logs per event. It is run once, on the largest spool's events
  ({"all of them" if not a.upstream_max else f"the first {a.upstream_max:,}"}; `--upstream-max N` sends only the first N, as its cost per event is constant).
- **`inspect`**: `hyperfine -N`, {max(1, a.rounds // 3)} rounds × {a.inspect_runs} runs of `telespool inspect`,
  `telespool inspect --json` and `sqlite3 -batch spool.db 'SELECT count(*) FROM events'` on a copy of the
  largest spool.
- **Bytes per event**: what `inspect --json` reports as `size_bytes` (every file in the spool directory)
  divided by the events, against the bytes of the compact `record --json` lines (name + parameters).
"""


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="telespool benchmarks (issue 7). Full run by default; --smoke for CI.")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "telespool"),
                    help="telespool binary (bench/run builds it and passes it)")
    ap.add_argument("--smoke", action="store_true", help="small sizes, 1-2 min; does not write BENCHMARKS.md")
    ap.add_argument("--write", action="store_true", help="write the report even in --smoke mode")
    ap.add_argument("--no-write", action="store_true", help="do not write the report (full mode)")
    ap.add_argument("--output", default=os.path.join(REPO, "BENCHMARKS.md"), help="report file")
    ap.add_argument("--workdir", default=os.path.join(REPO, "target", "bench-work"),
                    help="scratch directory, on the filesystem to measure (wiped first)")
    ap.add_argument("--only", nargs="+", metavar="SECTION",
                    choices=["record", "concurrent", "json", "size", "inspect", "upload"],
                    help="run only these sections: record (and its RSS), concurrent, json, size, inspect, upload")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="upload/inspect spool sizes")
    ap.add_argument("--no-upstream", action="store_true", help="skip the upstream Python client")
    ap.add_argument("--upstream-max", type=int, help="send at most this many events through upstream")
    ap.add_argument("--delay-ms", type=int,
                    help="also measure upload vs the floor with a collector answering after this many ms "
                         "(0: skip; default 2)")
    args = ap.parse_args()

    full = not args.smoke
    defaults = dict(
        sizes=[10_000, 100_000, 1_000_000] if full else [1_000, 5_000],
        rounds=12 if full else 2, record_runs=10 if full else 5, record_warmup=2 if full else 1,
        rss_runs=15 if full else 3, writers=64 if full else 16, writer_events=50 if full else 3,
        conc_reps=5 if full else 1, json_events=10_000 if full else 2_000, json_runs=10 if full else 3,
        inspect_runs=10 if full else 3, upload_reps=3 if full else 1, chunk=100_000,
        upstream_max=0, upstream_batch=50, delay_ms=2,
    )
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.sizes = sorted(args.sizes)

    b = Bench(args)
    b.machine()
    try:
        b.build_helpers()
        b.generate()
    except StepFailed as e:
        log(f"FAILED: setup: {e}")
        sys.exit(1)
    b.section("record", b.one_record)
    b.section("concurrent", b.concurrent)
    b.section("json", b.json_batch)
    if not args.only or set(args.only) & {"size", "inspect", "upload"}:
        b.section("fill", b.fill)
    b.section("size", b.size)
    b.section("inspect", b.inspect)
    b.section("upload", b.upload)
    b.info["load_end"] = loadavg()

    for f in b.failures:
        b.notes.append(f"**step failed**: {f}")
    with open(b.path("results.json"), "w") as f:
        json.dump(dict(info=b.info, rows=b.rows, details=b.details, notes=b.notes,
                       load=b.load, failures=b.failures), f, indent=1, default=str)
    print()
    print(b.table())
    sc = b.scaling_table()
    if sc:
        print()
        print(sc)
    for n in b.notes:
        print(f"- {n}")
    print(f"\nload average: start {b.info['load_start']}, end {b.info['load_end']}; "
          f"raw numbers: {b.path('results.json')}")
    if (full and not args.no_write) or args.write:
        with open(args.output, "w") as f:
            f.write(b.report())
        log(f"wrote {args.output}")
    if b.failures:
        log(f"{len(b.failures)} step(s) failed to run")
        sys.exit(1)


if __name__ == "__main__":
    main()
