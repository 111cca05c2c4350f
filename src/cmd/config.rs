//! `telespool config get|set|show`.

use crate::cli::{ConfigAction, ConfigArgs};
use crate::cmd::Context;
use crate::config::FileState;
use crate::error::{Error, Result};
use crate::level::{Level, LevelSource, LEVEL_ENV};
use crate::settings::{Key, Source};

const LEVEL_KEY: &str = "telemetry.level";

pub fn run(args: ConfigArgs, ctx: &Context) -> Result<i32> {
    match args.action {
        ConfigAction::Get { key } => get(&key, ctx),
        ConfigAction::Set { key, value } => set(&key, &value, ctx),
        ConfigAction::Show => show(ctx),
    }
}

fn unknown_key(key: &str) -> Error {
    let keys: Vec<&str> = std::iter::once(LEVEL_KEY)
        .chain(Key::ALL.iter().map(|k| k.name()))
        .collect();
    Error::usage(format!(
        "`{key}` is not a config key; known keys: {}",
        keys.join(", ")
    ))
}

fn get(key: &str, ctx: &Context) -> Result<i32> {
    if key == LEVEL_KEY {
        let level = ctx.level();
        let source = match level.source {
            LevelSource::Env => format!("from the environment ({LEVEL_ENV})"),
            LevelSource::Config => format!("from {}", ctx.settings.file.path.display()),
            LevelSource::Default => "default".to_string(),
        };
        println!("{} {source}", level.level);
        return Ok(0);
    }
    let key = Key::from_name(key).ok_or_else(|| unknown_key(key))?;
    let (value, source) = match key {
        Key::Spool => (
            crate::settings::Value::Path(ctx.spool_dir()?),
            ctx.settings.get(key, None)?.1,
        ),
        _ => ctx.settings.get(key, None)?,
    };
    let source = match source {
        Source::Default => "default".to_string(),
        other => other.to_string(),
    };
    println!("{value} {source}");
    Ok(0)
}

fn set(key: &str, text: &str, ctx: &Context) -> Result<i32> {
    let file = &ctx.settings.file;
    if key == LEVEL_KEY {
        // Stricter than reading: a person typing a level gets told, not guessed at.
        let level = match text.trim() {
            "0" => Level::Off,
            "1" => Level::Minimal,
            "2" => Level::Default,
            _ => {
                return Err(Error::usage(format!(
                "telemetry.level: `{text}` is not a level; use 0 (OFF), 1 (MINIMAL) or 2 (DEFAULT)"
            )))
            }
        };
        file.set_and_save(
            LEVEL_KEY,
            serde_yaml_ng::Value::Number(level.number().into()),
        )?;
        ctx.ui.info(format!(
            "telemetry.level set to {level} in {}",
            file.path.display()
        ));
        if ctx.settings.level().source == LevelSource::Env {
            ctx.ui.warn(format!(
                "{LEVEL_ENV} is set in this environment and overrides the file"
            ));
        }
        return Ok(0);
    }
    let key = Key::from_name(key).ok_or_else(|| unknown_key(key))?;
    let value = key
        .parse(text)
        .map_err(|e| Error::usage(format!("{}: {e}", key.name())))?;
    file.set_and_save(key.name(), value.to_yaml())?;
    ctx.ui.info(format!(
        "{} set to {value} in {}",
        key.name(),
        file.path.display()
    ));
    if ctx.settings.var(key.env()).is_some() {
        ctx.ui.warn(format!(
            "{} is set in this environment and overrides the file",
            key.env()
        ));
    }
    Ok(0)
}

fn show(ctx: &Context) -> Result<i32> {
    let file = &ctx.settings.file;
    match &file.state {
        FileState::Missing => {
            ctx.ui.info(format!(
                "no config file at {}; every setting has its default",
                file.path.display()
            ));
        }
        FileState::Invalid(reason) => {
            return Err(Error::io(format!(
                "cannot read {}: {reason}",
                file.path.display()
            )))
        }
        FileState::Loaded(_) => {
            let text = std::fs::read_to_string(&file.path)
                .map_err(|e| Error::io(format!("cannot read {}: {e}", file.path.display())))?;
            ctx.ui.detail(format!("{}:", file.path.display()));
            print!("{text}");
            if !text.ends_with('\n') && !text.is_empty() {
                println!();
            }
        }
    }
    Ok(0)
}
