//! The telemetry level and the shared config file: precedence, warnings, and
//! `config get|set|show` keeping the file intact.

mod common;

use common::sandbox::*;

fn write_config(sb: &Sandbox, text: &str) {
    std::fs::create_dir_all(sb.config_file().parent().unwrap()).unwrap();
    std::fs::write(sb.config_file(), text).unwrap();
}

fn level_of(sb: &Sandbox, env: &[(&str, &str)]) -> (String, String, String) {
    let out = sb.run_env(&["inspect", "--json"], env);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        doc["level"].to_string(),
        doc["level_source"].as_str().unwrap().to_string(),
        stderr(&out),
    )
}

#[test]
fn precedence_env_over_config_over_default() {
    // (env value or None, config text or None) -> (level, source, warns)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a str, &'a str, bool);
    let cases: &[Case] = &[
        (None, None, "2", "default", false),
        (None, Some("telemetry:\n  level: 1\n"), "1", "config", false),
        (None, Some("telemetry:\n  level: 0\n"), "0", "config", false),
        (None, Some("other: x\n"), "2", "default", false),
        (None, Some(""), "2", "default", false),
        (
            None,
            Some("telemetry:\n  level: '0'\n"),
            "0",
            "config",
            false,
        ),
        (None, Some("telemetry:\n  level: 7\n"), "1", "config", true),
        (
            None,
            Some("telemetry:\n  level: null\n"),
            "1",
            "config",
            true,
        ),
        (None, Some("telemetry: [\n"), "1", "config", true),
        (None, Some("- a list\n"), "1", "config", true),
        (
            Some("0"),
            Some("telemetry:\n  level: 2\n"),
            "0",
            "env",
            false,
        ),
        (
            Some("2"),
            Some("telemetry:\n  level: 1\n"),
            "2",
            "env",
            false,
        ),
        (Some(" 1 "), None, "1", "env", false),
        (Some("+1"), None, "1", "env", false),
        (
            Some("abc"),
            Some("telemetry:\n  level: 2\n"),
            "1",
            "env",
            true,
        ),
        (Some("3"), None, "1", "env", true),
        (Some(""), None, "1", "env", true),
        (Some("1.0"), None, "1", "env", true),
    ];
    for (env, config, level, source, warns) in cases {
        let sb = Sandbox::new();
        if let Some(text) = config {
            write_config(&sb, text);
        }
        let env: Vec<(&str, &str)> = env
            .map(|v| vec![("NEMO_EVALUATOR_TELEMETRY_LEVEL", v)])
            .unwrap_or_default();
        let (got, got_source, err) = level_of(&sb, &env);
        let what = format!("env {env:?} config {config:?}");
        assert_eq!(&got, level, "{what}");
        assert_eq!(&got_source, source, "{what}");
        assert_eq!(err.contains("warning"), *warns, "{what}: {err}");
        if *warns {
            assert_eq!(err.lines().count(), 1, "warns once: {err}");
        }
    }
}

#[test]
fn an_unreadable_config_counts_as_level_1() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.config_file()).unwrap(); // a directory where the file should be
    let (level, _, err) = level_of(&sb, &[]);
    assert_eq!(level, "1");
    assert!(err.contains("warning"));
}

#[test]
fn telespool_config_env_var_moves_the_file() {
    let sb = Sandbox::new();
    let other = sb.root().join("elsewhere.yaml");
    std::fs::write(&other, "telemetry:\n  level: 0\n").unwrap();
    let (level, source, _) = level_of(&sb, &[("TELESPOOL_CONFIG", other.to_str().unwrap())]);
    assert_eq!((level.as_str(), source.as_str()), ("0", "config"));
}

#[test]
fn set_keeps_other_keys_and_writes_atomically() {
    let sb = Sandbox::new();
    write_config(
        &sb,
        "# comment\nexecution:\n  type: slurm\ntelemetry:\n  level: 2\n  other: kept\n",
    );
    let out = sb.run(&["config", "set", "telemetry.level", "1"]);
    assert_ok(&out);
    let text = std::fs::read_to_string(sb.config_file()).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(yaml["telemetry"]["level"], 1);
    assert_eq!(yaml["telemetry"]["other"], "kept");
    assert_eq!(yaml["execution"]["type"], "slurm");
    assert_ok(&sb.run(&["config", "set", "telespool.max_age", "7d"]));
    assert_ok(&sb.run(&["config", "set", "telespool.max_events", "1000"]));
    let text = std::fs::read_to_string(sb.config_file()).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(yaml["telespool"]["max_age"], "7d");
    assert_eq!(yaml["telespool"]["max_events"], 1000);
    assert_eq!(yaml["telemetry"]["level"], 1);
    // No temporary files left beside it.
    let names: Vec<String> = std::fs::read_dir(sb.config_file().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["config.yaml".to_string()]);

    let get = sb.run(&["config", "get", "telemetry.level"]);
    assert_ok(&get);
    assert!(stdout(&get).starts_with("1 (MINIMAL)"), "{}", stdout(&get));
    let get = sb.run(&["config", "get", "telespool.max_age"]);
    assert!(stdout(&get).starts_with("7d"), "{}", stdout(&get));
    let show = sb.run(&["config", "show"]);
    assert_eq!(stdout(&show), text);
}

#[test]
fn set_creates_directories_and_the_file() {
    let sb = Sandbox::new();
    assert!(!sb.config_file().exists());
    assert_ok(&sb.run(&["config", "set", "telemetry.level", "0"]));
    let text = std::fs::read_to_string(sb.config_file()).unwrap();
    assert_eq!(
        text, "telemetry:\n  level: 0\n",
        "the shape upstream writes"
    );
    let get = sb.run(&["config", "get", "telemetry.level"]);
    assert!(stdout(&get).starts_with("0 (OFF)"));
}

#[test]
fn bad_keys_and_values_are_usage_errors_and_leave_the_file_alone() {
    let sb = Sandbox::new();
    let original = "telemetry:\n  level: 2\nmine: 1\n";
    write_config(&sb, original);
    let cases: &[&[&str]] = &[
        &["config", "set", "telemetry.level", "3"],
        &["config", "set", "telemetry.level", "one"],
        &["config", "set", "telemetry.color", "1"],
        &["config", "set", "nonsense", "1"],
        &["config", "set", "telespool.max_age", "30"],
        &["config", "set", "telespool.max_age", "-1d"],
        &["config", "set", "telespool.max_bytes", "lots"],
        &["config", "set", "telespool.max_events", "0"],
        &["config", "set", "telespool.batch_events", "1.5"],
        &["config", "set", "telespool.endpoint", "ftp://example.com/"],
        &["config", "set", "telespool.timeout", "10 parsecs"],
        &["config", "get", "telespool.nope"],
    ];
    for args in cases {
        let out = sb.run(args);
        assert_exit(&out, 64);
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read_to_string(sb.config_file()).unwrap(),
            original,
            "{args:?}"
        );
    }
}

#[test]
fn every_setting_has_its_env_var_which_wins_over_the_file() {
    let sb = Sandbox::new();
    let keys = [
        ("telespool.max_events", "TELESPOOL_MAX_EVENTS", "123", "456"),
        ("telespool.max_bytes", "TELESPOOL_MAX_BYTES", "1MiB", "2MiB"),
        ("telespool.max_age", "TELESPOOL_MAX_AGE", "2d", "3d"),
        (
            "telespool.batch_events",
            "TELESPOOL_BATCH_EVENTS",
            "10",
            "20",
        ),
        (
            "telespool.batch_bytes",
            "TELESPOOL_BATCH_BYTES",
            "64KiB",
            "128KiB",
        ),
        ("telespool.lease", "TELESPOOL_LEASE", "90s", "2m"),
        ("telespool.timeout", "TELESPOOL_TIMEOUT", "15s", "20s"),
        (
            "telespool.endpoint",
            "NEMO_EVALUATOR_TELEMETRY_ENDPOINT",
            "https://a.example/x",
            "https://b.example/y",
        ),
    ];
    for (key, var, file_value, env_value) in keys {
        assert_ok(&sb.run(&["config", "set", key, file_value]));
        let out = sb.run(&["config", "get", key]);
        assert!(
            stdout(&out).starts_with(file_value),
            "{key}: {}",
            stdout(&out)
        );
        let out = sb.run_env(&["config", "get", key], &[(var, env_value)]);
        assert!(
            stdout(&out).starts_with(env_value),
            "{key}: {}",
            stdout(&out)
        );
        assert!(stdout(&out).contains(var), "{key} names its source");
        let out = sb.run_env(&["config", "get", key], &[(var, "garbage value")]);
        assert_exit(&out, 64);
        assert!(stderr(&out).contains(var), "{key}: {}", stderr(&out));
    }
}

#[test]
fn spool_location_flag_over_env_over_config_over_default() {
    let sb = Sandbox::new();
    let from_config = sb.root().join("from-config");
    let from_flag = sb.root().join("from-flag");
    assert_ok(&sb.run(&[
        "config",
        "set",
        "telespool.spool",
        from_config.to_str().unwrap(),
    ]));
    // Without TELESPOOL_DIR the config decides.
    let mut cmd = sb.cmd();
    cmd.env_remove("TELESPOOL_DIR");
    let out = cmd
        .args([
            "record",
            "evaluation-task",
            "--task",
            "a",
            "--framework",
            "f",
            "--model",
            "m",
            "--status",
            "started",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(from_config.join("spool.db").exists());
    // TELESPOOL_DIR (set by the sandbox) wins over the config.
    sb.record_task("a", "m", "started");
    assert!(sb.spool.join("spool.db").exists());
    // --spool wins over both.
    let out = sb.run(&["--spool", from_flag.to_str().unwrap(), "inspect", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["spool"], from_flag.to_str().unwrap());
    // The default is the platform data directory.
    let mut cmd = sb.cmd();
    cmd.env_remove("TELESPOOL_DIR")
        .env("TELESPOOL_CONFIG", sb.root().join("none.yaml"));
    let out = cmd.args(["inspect", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["spool"],
        sb.home.join(".local/share/telespool").to_str().unwrap()
    );
}
