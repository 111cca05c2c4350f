//! Messages for people, on stderr, one line each, prefixed `telespool:` (SPEC §7).
//! Machine output (`--json`) goes to stdout and never through here.

/// How talkative this run is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: bool,
}

impl Ui {
    /// Something went wrong but the command goes on; shown even with `--quiet`.
    pub fn warn(&self, msg: impl std::fmt::Display) {
        eprintln!("telespool: warning: {msg}");
    }

    /// What a person running the command by hand wants to know; hidden by `--quiet`.
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("telespool: {msg}");
        }
    }

    /// Detail for `-v` only.
    pub fn detail(&self, msg: impl std::fmt::Display) {
        if self.verbose && !self.quiet {
            eprintln!("telespool: {msg}");
        }
    }

    /// An error that ends the command.
    pub fn error(&self, msg: impl std::fmt::Display) {
        eprintln!("telespool: {msg}");
    }
}
