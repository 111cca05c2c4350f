//! `telespool listen`: not built yet in this revision.

use crate::cli::ListenArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};

pub fn run(_args: ListenArgs, _ctx: &Context) -> Result<i32> {
    Err(Error::usage("`listen` is not available in this build yet"))
}
