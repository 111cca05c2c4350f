//! The shared config file (SPEC §2): `$XDG_CONFIG_HOME/nemo-evaluator/config.yaml`.
//!
//! The file belongs to NeMo Evaluator as much as to us, so we read it leniently and
//! write it conservatively: every key we do not own is kept, and a write is a
//! temporary file renamed over the old one so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::error::{Error, Result};

pub const CONFIG_ENV: &str = "TELESPOOL_CONFIG";

/// Where the config file lives: `TELESPOOL_CONFIG`, else the XDG location upstream uses.
pub fn default_path(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(p) = env(CONFIG_ENV) {
        return PathBuf::from(p);
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))
        .or_else(|| directories::BaseDirs::new().map(|b| b.config_dir().to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("nemo-evaluator").join("config.yaml")
}

#[derive(Debug, Clone)]
pub enum FileState {
    /// No file: normal, everything takes its default.
    Missing,
    Loaded(Mapping),
    /// The file exists but cannot be read or is not a YAML mapping.
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub state: FileState,
}

impl ConfigFile {
    pub fn load(path: PathBuf) -> ConfigFile {
        let state = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Missing,
            Err(e) => FileState::Invalid(e.to_string()),
            Ok(bytes) => parse_mapping(&bytes).map_or_else(FileState::Invalid, FileState::Loaded),
        };
        ConfigFile { path, state }
    }

    /// The value at a dotted key such as `telemetry.level`, if the file has it.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        let FileState::Loaded(map) = &self.state else {
            return None;
        };
        let mut parts = dotted.split('.');
        let mut value = map.get(parts.next()?)?;
        for part in parts {
            value = value.as_mapping()?.get(part)?;
        }
        Some(value)
    }

    /// The raw text of a scalar at `dotted`, for settings parsed from strings.
    pub fn get_text(&self, dotted: &str) -> Option<Result<String, String>> {
        self.get(dotted).map(|value| match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Null => Err("is empty".to_string()),
            _ => Err("is not a single value".to_string()),
        })
    }

    /// Sets `dotted` to `value` and writes the file atomically, keeping every other key.
    pub fn set_and_save(&self, dotted: &str, value: Value) -> Result<()> {
        let mut root = match &self.state {
            FileState::Missing => Mapping::new(),
            FileState::Loaded(map) => map.clone(),
            FileState::Invalid(reason) => {
                return Err(Error::io(format!(
                    "cannot update {}: {reason}; fix or remove the file first",
                    self.path.display()
                )))
            }
        };
        insert_dotted(&mut root, dotted, value)?;
        let text = serde_yaml_ng::to_string(&Value::Mapping(root))
            .map_err(|e| Error::io(format!("cannot write the config: {e}")))?;
        write_atomically(&self.path, text.as_bytes())
    }
}

fn parse_mapping(bytes: &[u8]) -> Result<Mapping, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    match serde_yaml_ng::from_str::<Value>(text).map_err(|e| e.to_string())? {
        Value::Mapping(map) => Ok(map),
        Value::Null => Ok(Mapping::new()),
        _ => Err("not a YAML mapping".to_string()),
    }
}

fn insert_dotted(root: &mut Mapping, dotted: &str, value: Value) -> Result<()> {
    let (section, key) = dotted
        .split_once('.')
        .ok_or_else(|| Error::usage(format!("`{dotted}` is not a config key")))?;
    let entry = root
        .entry(Value::String(section.to_string()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if entry.is_null() {
        *entry = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(section_map) = entry else {
        return Err(Error::usage(format!(
            "`{section}` in the config file is not a section; fix the file first"
        )));
    };
    section_map.insert(Value::String(key.to_string()), value);
    Ok(())
}

/// Writes a temporary file beside `path`, syncs it and renames it over `path`, so a
/// reader sees the old file or the new one and never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let cant = |e: &dyn std::fmt::Display| Error::cant_write(path, e);
    std::fs::create_dir_all(dir).map_err(|e| cant(&e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.yaml.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| cant(&e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the mode the user gave the file.
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.write_all(bytes).map_err(|e| cant(&e))?;
    tmp.as_file().sync_all().map_err(|e| cant(&e))?;
    tmp.persist(path).map_err(|e| cant(&e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
