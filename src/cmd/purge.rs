//! `telespool purge`: remove events a person chose, after asking on a terminal.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::PurgeArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};
use crate::spool::{PurgeSelector, Spool};
use crate::wire;

pub fn run(args: PurgeArgs, ctx: &Context) -> Result<i32> {
    let selector = if let Some(age) = args.older_than {
        PurgeSelector::OlderThan(wire::now_millis() - age.as_millis() as i64)
    } else if args.rejected {
        PurgeSelector::Rejected
    } else {
        PurgeSelector::All
    };
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Error::usage(
            "purge asks for confirmation and there is no terminal; add --yes to purge anyway",
        ));
    }
    let dir = ctx.spool_dir()?;
    let Some(mut spool) = Spool::open_existing(&dir)? else {
        println!("removed 0 events (no spool at {})", dir.display());
        return Ok(0);
    };
    let limits = ctx.settings.limits()?;
    if !args.yes {
        let n = spool.count_matching(selector)?;
        if n == 0 {
            println!("removed 0 events (none matched)");
            return Ok(0);
        }
        eprint!(
            "telespool: remove {n} event{} from {}? [y/N] ",
            if n == 1 { "" } else { "s" },
            dir.display()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Error::io(format!("cannot read the answer: {e}")))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            ctx.ui.info("nothing removed");
            return Ok(0);
        }
    }
    let removed = spool.purge(selector, &limits)?;
    println!(
        "removed {removed} event{}",
        if removed == 1 { "" } else { "s" }
    );
    Ok(0)
}
