//! Error kinds and the sysexits code each one maps to (SPEC §7).
//!
//! Every failure a user can cause or meet is one of these variants, carrying enough
//! context to print one line that says what went wrong and what to do next. The binary
//! prints `telespool: {error}` and exits with [`Error::exit_code`]; nothing else decides
//! exit codes, so the mapping lives in exactly one place.

use std::path::PathBuf;

/// Process exit codes, from `sysexits.h`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 64;
    pub const DATA: i32 = 65;
    pub const UNAVAILABLE: i32 = 69;
    pub const CANT_CREATE: i32 = 73;
    pub const IO: i32 = 74;
    pub const TEMP_FAIL: i32 = 75;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag, config key or config value.
    #[error("{0}")]
    Usage(String),

    /// Event data that breaks a rule of SPEC §3; the message names the field.
    #[error("{0}")]
    BadEvent(String),

    /// The spool directory or database cannot be created or written.
    #[error("cannot write the spool at {}: {reason}", path.display())]
    CantWrite { path: PathBuf, reason: String },

    /// An I/O error, or a spool that cannot be used and cannot be moved aside.
    #[error("{0}")]
    Io(String),

    /// The spool database is damaged. Caught by the spool, which moves the file aside
    /// and starts afresh; it reaches the user only if that fails.
    #[error("{0}")]
    Corrupt(String),

    /// The spool lock could not be had in time, or the database stayed busy.
    #[error("{0}")]
    TempFail(String),

    /// The endpoint refused us for a reason a retry will not fix.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::BadEvent(_) => exit::DATA,
            Error::CantWrite { .. } => exit::CANT_CREATE,
            Error::Io(_) | Error::Corrupt(_) => exit::IO,
            Error::TempFail(_) => exit::TEMP_FAIL,
            Error::Unavailable(_) => exit::UNAVAILABLE,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn bad_event(msg: impl Into<String>) -> Self {
        Error::BadEvent(msg.into())
    }

    pub fn cant_write(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::CantWrite {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub fn io(msg: impl Into<String>) -> Self {
        Error::Io(msg.into())
    }

    pub fn temp_fail(msg: impl Into<String>) -> Self {
        Error::TempFail(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
