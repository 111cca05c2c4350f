//! telespool: an offline spool for NeMo Evaluator's anonymous usage telemetry.
//!
//! Processes on compute nodes without internet append events to a SQLite spool
//! ([`spool`]); a later `upload` sends them in the request format upstream's client
//! uses ([`wire`]); `inspect` shows exactly what is queued and what would leave.
//! The binary is a thin layer over this library: [`cli`] parses arguments and hands
//! each command to its module under [`cmd`].

pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod event;
pub mod level;
pub mod listen;
pub mod output;
pub mod session;
pub mod settings;
pub mod spool;
pub mod units;
pub mod upload;
pub mod wire;

pub use error::{Error, Result};
