//! `telespool run`: not built yet in this revision.

use crate::cli::RunArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};

pub fn run(_args: RunArgs, _ctx: &Context) -> Result<i32> {
    Err(Error::usage("`run` is not available in this build yet"))
}
