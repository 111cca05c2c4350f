//! One module per command: each turns its parsed arguments into calls on the library
//! and prints the result. Shared here: the [`Context`] every command gets.

pub mod config;
pub mod docs;
pub mod export;
pub mod inspect;
pub mod listen;
pub mod purge;
pub mod record;
pub mod run;
pub mod upload;

use std::cell::OnceCell;
use std::path::PathBuf;

use crate::error::Result;
use crate::level::EffectiveLevel;
use crate::output::Ui;
use crate::settings::Settings;

/// What every command needs: settings, output, and the `--spool` flag.
pub struct Context {
    pub settings: Settings,
    pub ui: Ui,
    spool_flag: Option<PathBuf>,
    level: OnceCell<EffectiveLevel>,
}

impl Context {
    pub fn new(settings: Settings, ui: Ui, spool_flag: Option<PathBuf>) -> Context {
        Context {
            settings,
            ui,
            spool_flag,
            level: OnceCell::new(),
        }
    }

    /// The telemetry level in force; its warning, if any, is printed once per process.
    pub fn level(&self) -> &EffectiveLevel {
        self.level.get_or_init(|| {
            let level = self.settings.level();
            if let Some(w) = &level.warning {
                self.ui.warn(w);
            }
            level
        })
    }

    pub fn spool_dir(&self) -> Result<PathBuf> {
        self.settings.spool_dir(self.spool_flag.clone())
    }
}
