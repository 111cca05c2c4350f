//! The telemetry level (SPEC §1) and where it came from.
//!
//! Resolution mirrors NeMo Evaluator's own: the environment variable wins, then the
//! shared config file, then 2. Anything unreadable counts as 1, the privacy-safe choice,
//! because guessing 2 could send a model name the user meant to hide.

use std::fmt;

use crate::config::{ConfigFile, FileState};

pub const LEVEL_ENV: &str = "NEMO_EVALUATOR_TELEMETRY_LEVEL";

/// Ordered from strictest to most permissive, so `min` of two levels is the stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off = 0,
    Minimal = 1,
    Default = 2,
}

impl Level {
    pub fn from_number(n: i64) -> Option<Level> {
        match n {
            0 => Some(Level::Off),
            1 => Some(Level::Minimal),
            2 => Some(Level::Default),
            _ => None,
        }
    }

    /// Parses the way upstream parses the environment variable (Python's `int()`):
    /// surrounding whitespace is ignored, a sign and leading zeros are allowed, and the
    /// result must be 0, 1 or 2. An empty value is not a level.
    pub fn parse(text: &str) -> Option<Level> {
        let t = text.trim();
        let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value = digits.trim_start_matches('0');
        let negative = t.starts_with('-');
        match (negative, value) {
            (_, "") => Some(Level::Off),
            (false, "1") => Some(Level::Minimal),
            (false, "2") => Some(Level::Default),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Minimal => "MINIMAL",
            Level::Default => "DEFAULT",
        }
    }

    /// Whether events at this level carry the model name.
    pub fn keeps_model(self) -> bool {
        self == Level::Default
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.number(), self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelSource {
    Env,
    Config,
    Default,
}

impl LevelSource {
    /// The word `inspect --json` uses.
    pub fn key(self) -> &'static str {
        match self {
            LevelSource::Env => "env",
            LevelSource::Config => "config",
            LevelSource::Default => "default",
        }
    }
}

/// The level in force, with its source and the warning to print if its input was bad.
#[derive(Debug, Clone)]
pub struct EffectiveLevel {
    pub level: Level,
    pub source: LevelSource,
    pub warning: Option<String>,
}

impl EffectiveLevel {
    /// Resolves the level from the environment variable's value (if set) and the
    /// config file.
    pub fn resolve(env_value: Option<&str>, file: &ConfigFile) -> EffectiveLevel {
        if let Some(raw) = env_value {
            return match Level::parse(raw) {
                Some(level) => EffectiveLevel {
                    level,
                    source: LevelSource::Env,
                    warning: None,
                },
                None => EffectiveLevel {
                    level: Level::Minimal,
                    source: LevelSource::Env,
                    warning: Some(format!(
                        "{LEVEL_ENV}={raw:?} is not 0, 1 or 2; using level 1 (MINIMAL)"
                    )),
                },
            };
        }
        match &file.state {
            FileState::Missing => EffectiveLevel {
                level: Level::Default,
                source: LevelSource::Default,
                warning: None,
            },
            FileState::Invalid(reason) => EffectiveLevel {
                level: Level::Minimal,
                source: LevelSource::Config,
                warning: Some(format!(
                    "cannot read {}: {reason}; using level 1 (MINIMAL)",
                    file.path.display()
                )),
            },
            FileState::Loaded(_) => match file.get("telemetry.level") {
                // `telemetry: null` or `telemetry: 5` fails upstream's validation too.
                None if file.get("telemetry").is_some_and(|t| !t.is_mapping()) => EffectiveLevel {
                    level: Level::Minimal,
                    source: LevelSource::Config,
                    warning: Some(format!(
                        "`telemetry` in {} is not a section; using level 1 (MINIMAL)",
                        file.path.display()
                    )),
                },
                None => EffectiveLevel {
                    level: Level::Default,
                    source: LevelSource::Default,
                    warning: None,
                },
                Some(value) => match level_from_yaml(value) {
                    Some(level) => EffectiveLevel {
                        level,
                        source: LevelSource::Config,
                        warning: None,
                    },
                    None => EffectiveLevel {
                        level: Level::Minimal,
                        source: LevelSource::Config,
                        warning: Some(format!(
                            "telemetry.level in {} is not 0, 1 or 2; using level 1 (MINIMAL)",
                            file.path.display()
                        )),
                    },
                },
            },
        }
    }
}

/// A level as the config file may hold it: an integer, or a string of one.
fn level_from_yaml(value: &serde_yaml_ng::Value) -> Option<Level> {
    match value {
        serde_yaml_ng::Value::Number(n) => match n.as_i64() {
            Some(i) => Level::from_number(i),
            None => n
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .and_then(|f| Level::from_number(f as i64)),
        },
        serde_yaml_ng::Value::String(s) => Level::parse(s),
        // pydantic's lax mode reads a boolean as 0 or 1, and so do we.
        serde_yaml_ng::Value::Bool(b) => Some(if *b { Level::Minimal } else { Level::Off }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stricter_is_smaller() {
        assert_eq!(Level::Default.min(Level::Minimal), Level::Minimal);
        assert_eq!(Level::parse(" 1\n"), Some(Level::Minimal));
        assert_eq!(Level::parse("3"), None);
        assert_eq!(Level::parse("one"), None);
        assert_eq!(Level::parse("+1"), Some(Level::Minimal));
        assert_eq!(Level::parse("01"), Some(Level::Minimal));
        assert_eq!(Level::parse("-0"), Some(Level::Off));
        for bad in ["", " ", "-1", "1.0", "1_0", "3"] {
            assert_eq!(Level::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Level::Minimal.to_string(), "1 (MINIMAL)");
    }
}
