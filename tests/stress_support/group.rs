//! A process group for every child of a stress test, so that none outlives it: a panic,
//! a watchdog or the end of a phase kills them all at once.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A process group for every child of a test, anchored by a `sleep` that keeps the group
/// id alive (and not reusable) until the group is killed.
pub struct ProcessGroup {
    anchor: Child,
}

impl ProcessGroup {
    pub fn new() -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        let anchor = Command::new("sleep")
            .arg("600")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the process-group anchor");
        ProcessGroup { anchor }
    }

    pub fn id(&self) -> i32 {
        self.anchor.id() as i32
    }

    /// Runs `cmd` to completion inside the group; stdout and stderr captured.
    pub fn run(&self, mut cmd: Command) -> Output {
        use std::os::unix::process::CommandExt;
        cmd.process_group(self.id())
            .output()
            .expect("run telespool")
    }

    /// Runs `cmd` inside the group with `input` on its stdin.
    pub fn run_stdin(&self, mut cmd: Command, input: &[u8]) -> Output {
        use std::os::unix::process::CommandExt;
        cmd.process_group(self.id());
        run_stdin(cmd, input)
    }

    /// SIGKILLs every process in the group, the anchor included.
    pub fn kill(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.id()) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
        let _ = self.anchor.wait();
    }
}

/// Runs `cmd` to completion with `input` on its stdin; stdout and stderr captured.
pub fn run_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn telespool");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for telespool")
}

/// Stops the loops and kills the group when the concurrent phase is left by a panic (or
/// normally, when only the anchor is left); the scope then joins the threads.
pub struct StopOnExit<'a> {
    pub stop: &'a AtomicBool,
    pub group: &'a ProcessGroup,
}

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.group.kill();
    }
}

/// Kills the group if the phase is still running at `limit` (a hung child), so the test
/// fails instead of hanging; ends as soon as `stop` is set.
pub fn watchdog(stop: &AtomicBool, group: &ProcessGroup, started: Instant, limit: Duration) {
    while !stop.load(Ordering::SeqCst) {
        if started.elapsed() > limit {
            eprintln!("watchdog: still running after {limit:?}; killing every child");
            stop.store(true, Ordering::SeqCst);
            group.kill();
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
