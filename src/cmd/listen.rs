//! `telespool listen`: parse the bind address, refuse a non-loopback one without
//! `--allow-remote`, then hand over to [`crate::listen`] until SIGTERM or SIGINT.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::ListenArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};
use crate::level::Level;
use crate::listen::{Listener, REQUEST_TIMEOUT};
use crate::spool::LOCK_WAIT;

pub fn run(args: ListenArgs, ctx: &Context) -> Result<i32> {
    let addr = parse_bind(&args.bind)?;
    if !addr.ip().is_loopback() && !args.allow_remote {
        return Err(Error::usage(format!(
            "--bind {addr} is reachable from other hosts; add --allow-remote to listen there \
             on purpose, or bind 127.0.0.1"
        )));
    }
    // Read once: changing the level later takes a restart of the listener.
    let level = ctx.level().level;
    let limits = ctx.settings.limits()?;
    let dir = ctx.spool_dir()?;
    let listener = Listener::bind(addr, &dir, level, limits, ctx.ui)?;

    // First signal: stop accepting and finish what is in flight. A second one while
    // that drains: exit at once, 128 + N as a shell would report it.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        let armed = signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&stop),
        )
        .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)));
        armed.map_err(|e| Error::io(format!("cannot handle signals: {e}")))?;
    }

    if !addr.ip().is_loopback() {
        ctx.ui.warn(format!(
            "listening on {} is reachable from other hosts: anyone who can reach this port \
             can add events to this spool (there is no authentication)",
            listener.local_addr()
        ));
    }
    ctx.ui.info(format!(
        "listening on {}, spooling to {}",
        listener.url(),
        dir.display()
    ));
    if level == Level::Off {
        ctx.ui
            .info("telemetry level is 0 (OFF): requests are answered 200 and nothing is stored");
    }
    // In flight at worst: a request still arriving, then a wait for the spool lock.
    let drain = REQUEST_TIMEOUT + LOCK_WAIT + Duration::from_secs(5);
    let stats = listener.serve_until(&stop, drain);
    ctx.ui.detail(format!(
        "stopped: {} request{}, {} event{} stored, {} refused",
        stats.requests,
        if stats.requests == 1 { "" } else { "s" },
        stats.events,
        if stats.events == 1 { "" } else { "s" },
        stats.refused
    ));
    Ok(0)
}

/// `ADDR:PORT`, where ADDR is an IP address (`[::1]` for IPv6) or a host name.
fn parse_bind(text: &str) -> Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| Error::usage(format!("--bind `{text}`: {why}"));
    if !text.contains(':') {
        return Err(bad("expected ADDR:PORT, e.g. 127.0.0.1:8765".into()));
    }
    text.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("the name resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses() {
        assert_eq!(
            parse_bind("127.0.0.1:8765").unwrap(),
            "127.0.0.1:8765".parse().unwrap()
        );
        assert!(parse_bind("[::1]:0").unwrap().ip().is_loopback());
        assert!(parse_bind("localhost:8765").unwrap().ip().is_loopback());
        assert_eq!(parse_bind("8765").unwrap_err().exit_code(), 64);
        assert_eq!(parse_bind("127.0.0.1:http").unwrap_err().exit_code(), 64);
    }
}
