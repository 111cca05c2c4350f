//! telespool's own settings (SPEC §2): each from a flag, else its environment
//! variable, else the `telespool:` section of the config file, else its default.
//!
//! Settings are resolved one at a time, when a command needs them, so a bad upload
//! setting never fails a `record` inside an evaluation job.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, ConfigFile};
use crate::error::{Error, Result};
use crate::level::{EffectiveLevel, LEVEL_ENV};
use crate::units;

pub const DEFAULT_ENDPOINT: &str = "https://events.telemetry.data.nvidia.com/v1.1/events/json";
pub const ENDPOINT_ENV: &str = "NEMO_EVALUATOR_TELEMETRY_ENDPOINT";

/// One `telespool.*` key of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Spool,
    Endpoint,
    MaxEvents,
    MaxBytes,
    MaxAge,
    BatchEvents,
    BatchBytes,
    Lease,
    Timeout,
}

impl Key {
    pub const ALL: [Key; 9] = [
        Key::Spool,
        Key::Endpoint,
        Key::MaxEvents,
        Key::MaxBytes,
        Key::MaxAge,
        Key::BatchEvents,
        Key::BatchBytes,
        Key::Lease,
        Key::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Key::Spool => "telespool.spool",
            Key::Endpoint => "telespool.endpoint",
            Key::MaxEvents => "telespool.max_events",
            Key::MaxBytes => "telespool.max_bytes",
            Key::MaxAge => "telespool.max_age",
            Key::BatchEvents => "telespool.batch_events",
            Key::BatchBytes => "telespool.batch_bytes",
            Key::Lease => "telespool.lease",
            Key::Timeout => "telespool.timeout",
        }
    }

    pub fn env(self) -> &'static str {
        match self {
            Key::Spool => "TELESPOOL_DIR",
            Key::Endpoint => ENDPOINT_ENV,
            Key::MaxEvents => "TELESPOOL_MAX_EVENTS",
            Key::MaxBytes => "TELESPOOL_MAX_BYTES",
            Key::MaxAge => "TELESPOOL_MAX_AGE",
            Key::BatchEvents => "TELESPOOL_BATCH_EVENTS",
            Key::BatchBytes => "TELESPOOL_BATCH_BYTES",
            Key::Lease => "TELESPOOL_LEASE",
            Key::Timeout => "TELESPOOL_TIMEOUT",
        }
    }

    fn default_value(self) -> Option<Value> {
        Some(match self {
            Key::Spool => return None, // the platform data directory, see `spool_dir`
            Key::Endpoint => Value::Text(DEFAULT_ENDPOINT.to_string()),
            Key::MaxEvents => Value::Count(50_000),
            Key::MaxBytes => Value::Bytes(64 << 20),
            Key::MaxAge => Value::Duration(Duration::from_secs(30 * 86_400)),
            Key::BatchEvents => Value::Count(100),
            Key::BatchBytes => Value::Bytes(256 << 10),
            Key::Lease => Value::Duration(Duration::from_secs(60)),
            Key::Timeout => Value::Duration(Duration::from_secs(30)),
        })
    }

    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Parses and range-checks a value of this key.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let count = |lo: u64, hi: u64| -> Result<Value, String> {
            let n: u64 = text
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a whole number"))?;
            if (lo..=hi).contains(&n) {
                Ok(Value::Count(n))
            } else {
                Err(format!("{n} is out of range {lo}..={hi}"))
            }
        };
        let bytes = |lo: u64, hi: u64| -> Result<Value, String> {
            let n = units::parse_size(text)?;
            if (lo..=hi).contains(&n) {
                Ok(Value::Bytes(n))
            } else {
                Err(format!(
                    "`{text}` is out of range {}..={}",
                    units::format_size(lo),
                    units::format_size(hi)
                ))
            }
        };
        let duration = |lo: u64, hi: u64| -> Result<Value, String> {
            let d = units::parse_duration(text)?;
            if (lo..=hi).contains(&d.as_secs()) {
                Ok(Value::Duration(d))
            } else {
                Err(format!(
                    "`{text}` is out of range {}..={}",
                    units::format_duration(Duration::from_secs(lo)),
                    units::format_duration(Duration::from_secs(hi))
                ))
            }
        };
        match self {
            Key::Spool => {
                if text.trim().is_empty() {
                    Err("is empty".to_string())
                } else {
                    Ok(Value::Path(PathBuf::from(text)))
                }
            }
            Key::Endpoint => parse_endpoint(text).map(Value::Text),
            Key::MaxEvents => count(1, 100_000_000),
            Key::MaxBytes => bytes(64 << 10, 1 << 40),
            Key::MaxAge => duration(60, 10 * 365 * 86_400),
            Key::BatchEvents => count(1, 10_000),
            Key::BatchBytes => bytes(4 << 10, 16 << 20),
            Key::Lease => duration(1, 86_400),
            Key::Timeout => duration(1, 3600),
        }
    }
}

/// An endpoint must be an absolute http(s) URL with a host; whether plain http is
/// allowed is the uploader's decision, not the parser's.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let t = text.trim();
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .ok_or_else(|| format!("`{t}` is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{t}` is not a valid URL"));
    }
    Ok(t.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Path(PathBuf),
    Text(String),
    Count(u64),
    Bytes(u64),
    Duration(Duration),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Path(p) => write!(f, "{}", p.display()),
            Value::Text(t) => f.write_str(t),
            Value::Count(n) => write!(f, "{n}"),
            Value::Bytes(n) => f.write_str(&units::format_size(*n)),
            Value::Duration(d) => f.write_str(&units::format_duration(*d)),
        }
    }
}

impl Value {
    /// How `config set` stores the value in YAML: numbers as numbers, the rest as text.
    pub fn to_yaml(&self) -> serde_yaml_ng::Value {
        match self {
            Value::Count(n) => serde_yaml_ng::Value::Number((*n).into()),
            other => serde_yaml_ng::Value::String(other.to_string()),
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(&'static str),
    Config(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("from the command line"),
            Source::Env(var) => write!(f, "from the environment ({var})"),
            Source::Config(path) => write!(f, "from {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// Answers environment look-ups; injectable so tests need not touch the real one.
type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// The process's view of its settings: the environment and the config file, read once.
pub struct Settings {
    env: EnvLookup,
    pub file: ConfigFile,
}

impl Settings {
    /// Reads the real environment and the config file it points at.
    pub fn from_process_env() -> Settings {
        Settings::new(|name| std::env::var(name).ok())
    }

    /// For tests and embedding: `env` answers environment look-ups.
    pub fn new(env: impl Fn(&str) -> Option<String> + 'static) -> Settings {
        let settings = Settings {
            env: Box::new(env),
            file: ConfigFile {
                path: PathBuf::new(),
                state: config::FileState::Missing,
            },
        };
        let file = ConfigFile::load(config::default_path(|name| settings.var(name)));
        Settings { file, ..settings }
    }

    /// An environment variable; empty counts as unset, as it does for upstream's
    /// session id and endpoint look-ups.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// The telemetry level in force here. Unlike other variables, an empty level
    /// variable is set (and invalid), as upstream treats it.
    pub fn level(&self) -> EffectiveLevel {
        EffectiveLevel::resolve((self.env)(LEVEL_ENV).as_deref(), &self.file)
    }

    /// Resolves `key`: `flag` (already parsed by the caller) > environment > file > default.
    pub fn get(&self, key: Key, flag: Option<Value>) -> Result<(Value, Source)> {
        if let Some(v) = flag {
            return Ok((v, Source::Flag));
        }
        if let Some(text) = self.var(key.env()) {
            return key
                .parse(&text)
                .map(|v| (v, Source::Env(key.env())))
                .map_err(|e| Error::usage(format!("{}: {e}", key.env())));
        }
        if let Some(text) = self.file.get_text(key.name()) {
            let bad = |e: String| {
                Error::usage(format!(
                    "{} in {}: {e}",
                    key.name(),
                    self.file.path.display()
                ))
            };
            let text = text.map_err(bad)?;
            return key
                .parse(&text)
                .map(|v| (v, Source::Config(self.file.path.clone())))
                .map_err(bad);
        }
        match key.default_value() {
            Some(v) => Ok((v, Source::Default)),
            None => Ok((Value::Path(default_spool_dir()?), Source::Default)),
        }
    }

    pub fn count(&self, key: Key) -> Result<u64> {
        match self.get(key, None)?.0 {
            Value::Count(n) | Value::Bytes(n) => Ok(n),
            other => unreachable!("{} is not a number: {other:?}", key.name()),
        }
    }

    pub fn duration(&self, key: Key, flag: Option<Duration>) -> Result<Duration> {
        match self.get(key, flag.map(Value::Duration))?.0 {
            Value::Duration(d) => Ok(d),
            other => unreachable!("{} is not a duration: {other:?}", key.name()),
        }
    }

    pub fn endpoint(&self, flag: Option<String>) -> Result<(String, Source)> {
        let flag = flag
            .map(|f| parse_endpoint(&f).map_err(|e| Error::usage(format!("--endpoint: {e}"))))
            .transpose()?;
        match self.get(Key::Endpoint, flag.map(Value::Text))? {
            (Value::Text(url), source) => Ok((url, source)),
            other => unreachable!("endpoint is not text: {other:?}"),
        }
    }

    /// The spool directory, made absolute so messages and `inspect` name it fully.
    pub fn spool_dir(&self, flag: Option<PathBuf>) -> Result<PathBuf> {
        let path = match self.get(Key::Spool, flag.map(Value::Path))?.0 {
            Value::Path(p) => p,
            other => unreachable!("spool is not a path: {other:?}"),
        };
        Ok(std::path::absolute(&path).unwrap_or(path))
    }

    pub fn limits(&self) -> Result<crate::spool::Limits> {
        Ok(crate::spool::Limits {
            max_events: self.count(Key::MaxEvents)?,
            max_bytes: self.count(Key::MaxBytes)?,
            max_age: self.duration(Key::MaxAge, None)?,
        })
    }
}

fn default_spool_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "telespool")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| {
            Error::usage("cannot find a home directory for the spool; set TELESPOOL_DIR or --spool")
        })
}
