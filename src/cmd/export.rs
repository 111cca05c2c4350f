//! `telespool export`: not built yet in this revision.

use crate::cli::ExportArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};

pub fn run(_args: ExportArgs, _ctx: &Context) -> Result<i32> {
    Err(Error::usage("`export` is not available in this build yet"))
}
