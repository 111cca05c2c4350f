//! `telespool run -- CMD`: a listener on a loopback port for as long as CMD runs; the
//! work is in [`crate::listen::run_command`].

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;

use crate::cli::RunArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};
use crate::listen::{run_command, Listener, NOT_EXECUTABLE, NOT_FOUND};

pub fn run(args: RunArgs, ctx: &Context) -> Result<i32> {
    match listener(&args, ctx) {
        Ok(listener) => run_command(listener, &args.command, ctx.ui),
        // Telemetry must never stop the job step it wraps: say why nothing will be
        // captured, and run the command anyway.
        Err(e) => {
            ctx.ui.warn(format!(
                "cannot start the telemetry listener ({e}); running the command without it"
            ));
            run_plain(&args)
        }
    }
}

fn listener(args: &RunArgs, ctx: &Context) -> Result<Listener> {
    let level = ctx.level().level;
    let limits = ctx.settings.limits()?;
    let dir = ctx.spool_dir()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    Listener::bind(addr, &dir, level, limits, ctx.ui)
}

/// Runs CMD with nothing changed and returns its exit code as a shell reports it.
fn run_plain(args: &RunArgs) -> Result<i32> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Error::usage("run needs a command after `--`"))?;
    match std::process::Command::new(program).args(rest).status() {
        Ok(status) => Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "telespool: cannot run `{}`: command not found",
                program.to_string_lossy()
            );
            Ok(NOT_FOUND)
        }
        Err(e) => {
            eprintln!("telespool: cannot run `{}`: {e}", program.to_string_lossy());
            Ok(NOT_EXECUTABLE)
        }
    }
}
