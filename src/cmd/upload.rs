//! `telespool upload`: not built yet in this revision.

use crate::cli::UploadArgs;
use crate::cmd::Context;
use crate::error::{Error, Result};

pub fn run(_args: UploadArgs, _ctx: &Context) -> Result<i32> {
    Err(Error::usage("`upload` is not available in this build yet"))
}
