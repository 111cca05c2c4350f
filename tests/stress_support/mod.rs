//! Helpers for the tests that put telespool under fire (`chaos`, `limits`, `many_writers`,
//! `privacy`): children that cannot outlive the test, a seeded random generator, bounded
//! waits, and the checks such a test ends with.
#![allow(dead_code)] // each test binary uses a different part of this module

mod group;
#[allow(unused_imports)] // not every test binary uses the group
pub use group::*;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::sandbox::{column_of, Sandbox};

/// splitmix64, seeded: enough to pick victims and moments reproducibly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `var` if set, else one from the clock; printed so a failure can be
    /// replayed.
    pub fn seed_from_env(var: &str) -> u64 {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(7, |d| d.as_nanos() as u64)
            });
        eprintln!("seed: {seed} (set {var}={seed} to repeat its random choices)");
        seed
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration uniformly in `0..max`.
    pub fn upto(&mut self, max: Duration) -> Duration {
        let micros = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % micros)
    }
}

/// A child process that is killed (SIGKILL) and reaped if the test lets go of it early,
/// panics included, so no test leaves a process behind.
pub struct Guarded(Option<Child>);

/// How a guarded child ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    /// Whether the test killed it.
    pub killed: bool,
    pub stderr: String,
    /// From the start of `finish` to the end.
    pub elapsed: Duration,
}

impl Guarded {
    /// Starts `cmd` with stdout discarded and stderr captured.
    pub fn spawn(mut cmd: Command) -> Guarded {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn telespool");
        Guarded(Some(child))
    }

    /// Waits for the child, killing it with SIGKILL as soon as `kill` is set (another
    /// thread's decision; checked every millisecond). A child still running at `limit` is
    /// killed too, and the test fails: nothing here may hang.
    pub fn finish_or_kill(mut self, kill: &AtomicBool, limit: Duration) -> Ended {
        let started = Instant::now();
        let mut child = self.0.take().expect("not finished yet");
        let mut killed = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if !killed && kill.load(Ordering::Relaxed) {
                let _ = child.kill(); // SIGKILL, i.e. kill -9
                killed = true;
                continue;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pid {} did not finish within {limit:?}", child.id());
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        ended(child, status, killed, started)
    }
}

fn ended(mut child: Child, status: ExitStatus, killed: bool, started: Instant) -> Ended {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    // A kill sent after the child had exited on its own does not count.
    let killed = killed && status.code().is_none();
    Ended {
        status,
        killed,
        stderr,
        elapsed: started.elapsed(),
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[allow(unused_imports)] // not every test binary polls
pub use crate::common::poll_until;

/// `PRAGMA integrity_check` on the spool's database, read by SQLite itself.
pub fn integrity(sb: &Sandbox) -> String {
    let db = rusqlite::Connection::open(sb.db_file()).expect("open the spool database");
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    column_of::<String>(&db, "PRAGMA integrity_check").join("; ")
}

/// Asserts that no process holds either lock file of the spool `dir` (a `kill -9`
/// must never leave one held).
#[track_caller]
pub fn assert_locks_free(dir: &Path) {
    for name in ["spool.lock", "upload.lock"] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert!(
            file.try_lock().is_ok(),
            "{} is still held by some process",
            path.display()
        );
    }
}
