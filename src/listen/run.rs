//! `telespool run -- CMD`: a listener for the lifetime of one command.
//!
//! CMD runs with `NEMO_EVALUATOR_TELEMETRY_ENDPOINT` pointing at the listener and the
//! rest of its environment untouched. telespool stays out of the way: it forwards the
//! signals a job scheduler uses to stop a job (SIGTERM, SIGINT, SIGHUP) to CMD, waits
//! for it, gives requests still in flight [`RUN_DRAIN`] to finish, and exits with CMD's
//! status — 128 + N when CMD died of signal N, as shells report it.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use rustix::process::{kill_process, waitid, Pid, Signal, WaitId, WaitIdOptions};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;

use crate::error::{Error, Result};
use crate::output::Ui;

use super::Listener;

/// The variable upstream's clients read their endpoint from (once, at import).
pub const ENDPOINT_ENV: &str = "NEMO_EVALUATOR_TELEMETRY_ENDPOINT";
/// How long requests still in flight when CMD exits get to finish.
pub const RUN_DRAIN: Duration = Duration::from_secs(5);
/// Exit code when CMD does not exist, as shells use it.
pub const NOT_FOUND: i32 = 127;
/// Exit code when CMD exists but cannot be executed, as shells use it.
pub const NOT_EXECUTABLE: i32 = 126;

/// Runs `command` (program and arguments) with `listener` serving it, and returns the
/// exit code telespool should exit with.
pub fn run_command(listener: Listener, command: &[OsString], ui: Ui) -> Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::usage("run needs a command after `--`"))?;
    let url = listener.url();
    // Catch the signals before CMD exists, so one that arrives while it starts is held
    // and forwarded once it does, rather than killing telespool.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::io(format!("cannot handle signals: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("telespool-listen".into())
            .spawn(move || listener.serve_until(&stop, RUN_DRAIN))
            .map_err(|e| Error::io(format!("cannot start the listener: {e}")))?
    };
    let finish_listener = |stop: &AtomicBool| {
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap_or_default()
    };
    ui.detail(format!(
        "listening on {url} for {}",
        program.to_string_lossy()
    ));

    let mut child = match Command::new(program)
        .args(args)
        .env(ENDPOINT_ENV, &url)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            finish_listener(&stop);
            let name = program.to_string_lossy();
            let (code, why) = match e.kind() {
                ErrorKind::NotFound => (NOT_FOUND, "command not found".to_string()),
                ErrorKind::PermissionDenied => (NOT_EXECUTABLE, "permission denied".to_string()),
                _ => (NOT_EXECUTABLE, e.to_string()),
            };
            ui.error(format!("cannot run `{name}`: {why}"));
            return Ok(code);
        }
    };

    // Forward signals while CMD can receive them. The pid is withdrawn (under the lock)
    // before CMD is reaped, so a late signal can never reach a recycled pid.
    let target = Arc::new(Mutex::new(Some(Pid::from_child(&child))));
    let handle = signals.handle();
    let forwarder = {
        let target = Arc::clone(&target);
        thread::Builder::new()
            .name("telespool-signals".into())
            .spawn(move || {
                for origin in signals.forever() {
                    // A signal from the terminal (Ctrl-C, hangup) went to the whole
                    // foreground process group, CMD included: sending it again would
                    // interrupt CMD's own clean-up, such as its final telemetry POST.
                    if origin.cause == Cause::Kernel {
                        continue;
                    }
                    let pid = *target.lock().unwrap_or_else(PoisonError::into_inner);
                    if let (Some(pid), Some(sig)) = (pid, Signal::from_named_raw(origin.signal)) {
                        let _ = kill_process(pid, sig);
                    }
                }
            })
            .map_err(|e| Error::io(format!("cannot forward signals: {e}")))?
    };

    wait_exited(&child);
    *target.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("cannot wait for the command: {e}")));
    handle.close();
    let _ = forwarder.join();
    let stats = finish_listener(&stop);
    let code = exit_code(status?);
    ui.detail(format!(
        "{} exited with {code}; stored {} event{} from {} request{}",
        program.to_string_lossy(),
        stats.events,
        if stats.events == 1 { "" } else { "s" },
        stats.requests,
        if stats.requests == 1 { "" } else { "s" },
    ));
    if stats.unfinished > 0 {
        ui.warn(format!(
            "{} request{} still in flight after {} s were cut off",
            stats.unfinished,
            if stats.unfinished == 1 { "" } else { "s" },
            RUN_DRAIN.as_secs()
        ));
    }
    Ok(code)
}

/// Blocks until the child has exited, leaving it unreaped (its pid stays ours).
fn wait_exited(child: &std::process::Child) {
    let pid = Pid::from_child(child);
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            // Exited, or an error that `wait` will report.
            _ => return,
        }
    }
}

/// CMD's exit code, or 128 + N when it was killed by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}
