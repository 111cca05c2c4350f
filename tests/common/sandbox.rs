#![allow(dead_code)] // each test binary uses a different part of this module

//! A private world for one test: its own HOME, config directory and spool, and the
//! built binary run in it with an environment that holds nothing of the caller's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_telespool");

pub struct Sandbox {
    _root: tempfile::TempDir,
    pub home: PathBuf,
    pub config_home: PathBuf,
    pub spool: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("temp dir");
        let home = root.path().join("home");
        let config_home = root.path().join("config");
        std::fs::create_dir_all(&home).unwrap();
        Sandbox {
            spool: root.path().join("spool"),
            home,
            config_home,
            _root: root,
        }
    }

    pub fn root(&self) -> &Path {
        self._root.path()
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_home.join("nemo-evaluator").join("config.yaml")
    }

    pub fn db_file(&self) -> PathBuf {
        self.spool.join("spool.db")
    }

    /// The binary with a clean environment pointing at this sandbox.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("TELESPOOL_DIR", &self.spool)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run telespool")
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.cmd();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run telespool")
    }

    /// Runs with `stdin` fed to the process.
    pub fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn telespool");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait telespool");
        let _ = writer.join();
        out
    }

    /// Records one EvaluationTaskEvent and asserts success.
    pub fn record_task(&self, task: &str, model: &str, status: &str) {
        let out = self.run(&[
            "record",
            "evaluation-task",
            "--task",
            task,
            "--framework",
            "lm-eval",
            "--model",
            model,
            "--status",
            status,
        ]);
        assert_ok(&out);
    }

    /// `record evaluation-task --task TASK` (framework `f`, model `m`, status `success`)
    /// with `env` added; the output, unchecked.
    pub fn try_record(&self, task: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = self.record_cmd(task, "f", "m");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run telespool")
    }

    /// The command `record evaluation-task` of `task` with this framework and model and
    /// status `success`, to run, spawn or place in a process group.
    pub fn record_cmd(&self, task: &str, framework: &str, model: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.args([
            "record",
            "evaluation-task",
            "--task",
            task,
            "--framework",
            framework,
            "--model",
            model,
            "--status",
            "success",
        ]);
        cmd
    }

    /// `inspect --json --events --limit 0`, parsed.
    pub fn inspect(&self) -> Value {
        self.inspect_env(&[])
    }

    pub fn inspect_env(&self, env: &[(&str, &str)]) -> Value {
        let out = self.run_env(&["inspect", "--json", "--events", "--limit", "0"], env);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).expect("inspect --json is JSON")
    }

    pub fn queued(&self) -> u64 {
        self.inspect()["queued"].as_u64().unwrap()
    }

    /// Every byte of every file in the spool directory, for privacy checks.
    pub fn spool_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.spool) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    all.extend(std::fs::read(e.path()).unwrap_or_default());
                }
            }
        }
        all
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db_file()).expect("open spool db")
    }

    /// Moves the event time of the stored events whose parameters are `LIKE` `pattern`
    /// back by `ms`, wherever the spool holds them: in `events`, or still in the inbox
    /// (whose running oldest and newest times are then recomputed). Returns how many.
    pub fn age_events(&self, pattern: &str, ms: i64) -> usize {
        let db = self.db();
        let mut n = 0;
        for table in ["events", "inbox"] {
            n += db
                .execute(
                    &format!("UPDATE {table} SET ts = ts - ?1 WHERE parameters LIKE ?2"),
                    rusqlite::params![ms, pattern],
                )
                .expect("age events");
        }
        db.execute_batch(
            "UPDATE inbox SET
               run_min_ts = (SELECT min(ts) FROM inbox i WHERE i.id <= inbox.id),
               run_max_ts = (SELECT max(ts) FROM inbox i WHERE i.id <= inbox.id)",
        )
        .expect("recompute the inbox's running times");
        n
    }

    /// Asserts that the spool's running counts agree with its rows: `tally` with the
    /// events by kind, status and rejection, and `leases` with the leases that have not
    /// run out on the events that carry them.
    #[track_caller]
    pub fn assert_counts_agree(&self) {
        let db = self.db();
        let rows = |sql: &str| -> Vec<(i64, i64, i64, i64, i64)> {
            let mut stmt = db.prepare(sql).expect("query the counts");
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .expect("query the counts")
                .collect::<Result<_, _>>()
                .expect("read the counts");
            rows
        };
        assert_eq!(
            rows(
                "SELECT kind, status, rejected, events, bytes FROM tally
                  WHERE events != 0 OR bytes != 0 ORDER BY 1, 2, 3"
            ),
            rows(
                "SELECT kind, status, rejected, count(*), sum(bytes) FROM events
                  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            "tally against the events"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 1_000;
        let leases = |sql: &str| -> Vec<(i64, i64)> {
            let mut stmt = db.prepare(sql).expect("query the leases");
            let rows = stmt
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query the leases")
                .collect::<Result<_, _>>()
                .expect("read the leases");
            rows
        };
        assert_eq!(
            leases("SELECT lease_until, events FROM leases WHERE lease_until > ?1 ORDER BY 1"),
            leases(
                "SELECT lease_until, count(*) FROM events
                 WHERE lease_until > ?1 AND rejected = 0 GROUP BY 1 ORDER BY 1"
            ),
            "leases against the events"
        );
    }

    /// One column of every stored event, in `events` or still in the inbox.
    pub fn stored<T: rusqlite::types::FromSql>(&self, column: &str) -> Vec<T> {
        column_of(
            &self.db(),
            &format!("SELECT {column} FROM events UNION ALL SELECT {column} FROM inbox"),
        )
    }

    /// Every session id the spool holds, in `streams` or still in the inbox.
    pub fn stored_sessions(&self) -> Vec<String> {
        column_of(
            &self.db(),
            "SELECT session_id FROM streams UNION SELECT session_id FROM inbox",
        )
    }
}

/// The first column of every row `sql` selects.
#[track_caller]
pub fn column_of<T: rusqlite::types::FromSql>(db: &rusqlite::Connection, sql: &str) -> Vec<T> {
    let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<Result<_, _>>())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The tasks of the events still queued, from `inspect --json --events --limit 0`.
pub fn queued_tasks(doc: &Value) -> Vec<String> {
    doc["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["parameters"]["task"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}
