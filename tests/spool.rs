//! The spool on disk: permissions, damage, schema versions, limits, the lock, and
//! the shape of `inspect`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::sandbox::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn directory_is_0700_and_files_0600() {
    let sb = Sandbox::new();
    sb.record_task("a", "m", "success");
    assert_eq!(mode(&sb.spool), 0o700);
    for entry in std::fs::read_dir(&sb.spool).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn inspect_json_has_exactly_the_spec_keys() {
    let sb = Sandbox::new();
    sb.record_task("a", "m", "success");
    sb.record_task("b", "m", "started");
    let out = sb.run(&["inspect", "--json"]);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    let mut expected = vec![
        "level",
        "level_name",
        "level_source",
        "spool",
        "size_bytes",
        "queued",
        "in_flight",
        "rejected",
        "dropped",
        "by_kind",
        "oldest",
        "newest",
        "last_upload",
        "next_attempt",
        "quarantined",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(doc["level"], 2);
    assert_eq!(doc["level_name"], "DEFAULT");
    assert_eq!(doc["level_source"], "default");
    assert_eq!(doc["spool"], sb.spool.to_str().unwrap());
    assert!(doc["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["queued"], 2);
    assert_eq!(doc["in_flight"], 0);
    assert_eq!(doc["rejected"], 0);
    assert_eq!(doc["dropped"], 0);
    assert_eq!(
        doc["by_kind"],
        serde_json::json!({
            "EvaluationTaskEvent": {"started": 1, "success": 1, "failure": 0},
            "LauncherJobEvent": {"started": 0, "success": 0, "failure": 0},
        })
    );
    for key in ["oldest", "newest"] {
        let ts = doc[key].as_str().unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'));
    }
    assert!(doc["last_upload"].is_null());
    assert!(doc["next_attempt"].is_null());
    assert_eq!(doc["quarantined"], serde_json::json!([]));

    // --events adds exactly `events`, each with exactly five keys.
    let doc = sb.inspect();
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    for e in events {
        let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["clientVer", "name", "parameters", "sessionId", "ts"]);
    }
}

#[test]
fn inspect_of_a_missing_spool_creates_nothing() {
    let sb = Sandbox::new();
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 0);
    assert_eq!(doc["oldest"], serde_json::Value::Null);
    assert!(!sb.spool.exists());
    let out = sb.run(&["inspect"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("queued           0 events"));
}

#[test]
fn inspect_limit_caps_the_list_oldest_first() {
    let sb = Sandbox::new();
    let input: String = (0..150)
        .map(|i| format!("{{\"name\":\"EvaluationTaskEvent\",\"parameters\":{{\"task\":\"t{i:03}\",\"frameworkName\":\"f\",\"model\":\"m\",\"status\":\"success\"}}}}\n"))
        .collect();
    assert_ok(&sb.run_stdin(&["record", "--json", "-"], input.as_bytes()));
    let list = |args: &[&str]| -> Vec<String> {
        let out = sb.run(args);
        assert_ok(&out);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["parameters"]["task"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        list(&["inspect", "--json", "--events"]).len(),
        100,
        "default 100"
    );
    let five = list(&["inspect", "--json", "--events", "--limit", "5"]);
    assert_eq!(five, ["t000", "t001", "t002", "t003", "t004"]);
    assert_eq!(
        list(&["inspect", "--json", "--events", "--limit", "0"]).len(),
        150
    );
    let human = sb.run(&["inspect", "--events", "--limit", "3"]);
    assert_eq!(
        stdout(&human)
            .lines()
            .filter(|l| l.starts_with('{'))
            .count(),
        3
    );
}

#[test]
fn garbage_truncated_and_zeroed_databases_are_moved_aside() {
    type Harm = fn(&std::path::Path);
    let damage: &[(&str, Harm)] = &[
        ("garbage", |db| {
            std::fs::write(db, vec![0x5a; 8192]).unwrap()
        }),
        ("zeroed header", |db| {
            let mut bytes = std::fs::read(db).unwrap();
            bytes[..100].fill(0);
            std::fs::write(db, bytes).unwrap();
        }),
        ("truncated", |db| {
            let bytes = std::fs::read(db).unwrap();
            std::fs::write(db, &bytes[..bytes.len() / 3]).unwrap();
        }),
    ];
    for (what, harm) in damage {
        let sb = Sandbox::new();
        // Enough events that the database spans many pages.
        let input: String = (0..400)
            .map(|i| format!("{{\"name\":\"EvaluationTaskEvent\",\"parameters\":{{\"task\":\"t{i}\",\"frameworkName\":\"f\",\"model\":\"{}\",\"status\":\"success\"}}}}\n", "m".repeat(200)))
            .collect();
        assert_ok(&sb.run_stdin(&["record", "--json", "-"], input.as_bytes()));
        harm(&sb.db_file());
        let damaged = std::fs::read(sb.db_file()).unwrap();

        let out = sb.try_record("after", &[]);
        assert_ok(&out);
        assert!(stderr(&out).contains("moved"), "{what}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{what}: one warning line");
        let doc = sb.inspect();
        let quarantined = doc["quarantined"].as_array().unwrap();
        assert_eq!(quarantined.len(), 1, "{what}");
        let name = quarantined[0].as_str().unwrap();
        assert!(name.starts_with("spool.db.corrupt-20"), "{name}");
        // Nothing deleted: the damaged bytes are all still there.
        assert_eq!(
            std::fs::read(sb.spool.join(name)).unwrap(),
            damaged,
            "{what}"
        );
        assert_eq!(
            doc["queued"], 1,
            "{what}: the fresh spool holds the new event"
        );
    }
}

#[test]
fn inspect_also_moves_a_damaged_database_aside() {
    let sb = Sandbox::new();
    sb.record_task("a", "m", "success");
    std::fs::write(sb.db_file(), b"this is not a database, it is a plain text file....................................................").unwrap();
    let out = sb.run(&["inspect", "--json"]);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["quarantined"].as_array().unwrap().len(), 1);
    assert!(stderr(&out).contains("warning"));
}

#[test]
fn an_empty_database_file_is_a_fresh_spool() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(&sb.spool).unwrap();
    std::fs::set_permissions(&sb.spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(sb.db_file(), b"").unwrap();
    sb.record_task("a", "m", "success");
    assert_eq!(sb.queued(), 1);
}

#[test]
fn a_spool_from_a_newer_telespool_is_refused_and_untouched() {
    let sb = Sandbox::new();
    sb.record_task("a", "m", "success");
    sb.db().pragma_update(None, "user_version", 99).unwrap();
    let before = std::fs::read(sb.db_file()).unwrap();
    for args in [
        &[
            "record",
            "evaluation-task",
            "--task",
            "a",
            "--framework",
            "f",
            "--model",
            "m",
            "--status",
            "success",
        ][..],
        &["inspect"][..],
        &["inspect", "--json"][..],
    ] {
        let out = sb.run(args);
        assert_exit(&out, 74);
        assert!(stderr(&out).contains("newer telespool"), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read(sb.db_file()).unwrap(), before);
}

#[test]
fn unsafe_spool_directories_are_refused() {
    // A file where the directory should be.
    let sb = Sandbox::new();
    std::fs::write(&sb.spool, b"x").unwrap();
    let out = sb.try_record("a", &[]);
    assert_exit(&out, 73);
    assert!(stderr(&out).contains("not a directory"));

    // A symlink to somewhere else.
    let sb = Sandbox::new();
    let real = sb.root().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &sb.spool).unwrap();
    let out = sb.try_record("a", &[]);
    assert_exit(&out, 73);
    assert!(stderr(&out).contains("symbolic link"));
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);

    // A directory others can write to.
    let sb = Sandbox::new();
    std::fs::create_dir(&sb.spool).unwrap();
    std::fs::set_permissions(&sb.spool, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = sb.try_record("a", &[]);
    assert_exit(&out, 73);
    assert!(stderr(&out).contains("chmod 700"));
    assert_eq!(std::fs::read_dir(&sb.spool).unwrap().count(), 0);

    // A parent that is a file: nothing can be created below it.
    let sb = Sandbox::new();
    let parent = sb.root().join("plainfile");
    std::fs::write(&parent, b"x").unwrap();
    let out = sb.run(&[
        "--spool",
        parent.join("spool").to_str().unwrap(),
        "record",
        "evaluation-task",
        "--task",
        "a",
        "--framework",
        "f",
        "--model",
        "m",
        "--status",
        "success",
    ]);
    assert_exit(&out, 73);
}

#[test]
fn a_lock_file_that_is_a_directory_is_refused_with_74() {
    let sb = Sandbox::new();
    sb.record_task("a", "m", "success");
    std::fs::remove_file(sb.spool.join("spool.lock")).unwrap();
    std::fs::create_dir(sb.spool.join("spool.lock")).unwrap();
    let out = sb.try_record("b", &[]);
    assert_exit(&out, 74);
    assert!(stderr(&out).contains("is a directory"));
    std::fs::remove_dir(sb.spool.join("spool.lock")).unwrap();
    sb.record_task("c", "m", "success");
    assert_eq!(sb.queued(), 2, "a missing lock file is simply made again");
}

#[test]
fn limits_drop_the_oldest_and_count_them() {
    let sb = Sandbox::new();
    for i in 0..8 {
        let out = sb.try_record(&format!("t{i}"), &[("TELESPOOL_MAX_EVENTS", "5")]);
        assert_ok(&out);
    }
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 5);
    assert_eq!(doc["dropped"], 3);
    let tasks: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["parameters"]["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        ["t3", "t4", "t5", "t6", "t7"],
        "the oldest went first"
    );

    // A byte bound: each event counts its parameters plus a fixed row cost.
    let big = "x".repeat(250);
    for i in 0..400 {
        let out = sb.run_env(
            &[
                "record",
                "evaluation-task",
                "--task",
                &format!("b{i}"),
                "--framework",
                &big,
                "--model",
                "m",
                "--status",
                "success",
            ],
            &[("TELESPOOL_MAX_BYTES", "64KiB")],
        );
        assert_ok(&out);
    }
    let doc = sb.inspect();
    let queued = doc["queued"].as_u64().unwrap();
    assert!(queued < 400 && queued > 100, "{queued}");
    assert_eq!(doc["dropped"].as_u64().unwrap() + queued, 408);
    let bytes: i64 = sb.stored::<i64>("bytes").iter().sum();
    assert!(bytes <= 64 * 1024, "{bytes}");
}

#[test]
fn expired_events_are_dropped_at_the_next_write() {
    let sb = Sandbox::new();
    sb.record_task("old", "m", "success");
    // Age the event by 2 days, as if recorded long ago.
    assert_eq!(sb.age_events("%", 2 * 86_400_000), 1);
    let out = sb.try_record("new", &[("TELESPOOL_MAX_AGE", "1d")]);
    assert_ok(&out);
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 1);
    assert_eq!(doc["dropped"], 1);
    assert_eq!(doc["events"][0]["parameters"]["task"], "new");
}

#[test]
fn a_held_lock_makes_record_wait_30s_then_exit_75_writing_nothing() {
    let sb = Sandbox::new();
    sb.record_task("a", "m", "success");
    let lock = std::fs::File::open(sb.spool.join("spool.lock")).unwrap();
    lock.lock().unwrap();
    let start = Instant::now();
    let out = sb.try_record("b", &[]);
    let waited = start.elapsed();
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    assert!(waited >= Duration::from_secs(29), "{waited:?}");
    assert!(waited < Duration::from_secs(60), "{waited:?}");
    drop(lock);
    assert_eq!(sb.queued(), 1);
    assert!(!stderr(&out).contains("database is locked"));
}

#[test]
fn purge_asks_without_yes_and_removes_with_it() {
    let sb = Sandbox::new();
    for i in 0..3 {
        sb.record_task(&format!("t{i}"), "m", "success");
    }
    let out = sb.run(&["purge", "--all"]);
    assert_exit(&out, 64);
    assert!(stderr(&out).contains("--yes"));
    assert_eq!(sb.queued(), 3);
    let out = sb.run(&["purge", "--older-than", "1d", "--yes"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("removed 0 events"));
    sb.assert_counts_agree();
    let out = sb.run(&["purge", "--all", "--yes"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("removed 3 events"));
    assert_eq!(sb.queued(), 0);
    sb.assert_counts_agree();
    assert_exit(&sb.run(&["purge", "--yes"]), 64);
    assert_exit(&sb.run(&["purge", "--older-than", "soon", "--yes"]), 64);
}

#[test]
fn non_utf8_arguments_are_usage_errors() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let out = sb
        .cmd()
        .args([
            "record",
            "evaluation-task",
            "--framework",
            "f",
            "--model",
            "m",
            "--status",
            "success",
            "--task",
        ])
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe"))
        .output()
        .unwrap();
    assert_exit(&out, 64);
    assert_eq!(stderr(&out).lines().count(), 1);
}

#[test]
fn a_spool_owned_by_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: chown needs root (CI runs this as root)");
        return;
    }
    let sb = Sandbox::new();
    std::fs::create_dir(&sb.spool).unwrap();
    std::fs::set_permissions(&sb.spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&sb.spool, Some(65534), Some(65534)).unwrap();
    let out = sb.try_record("a", &[]);
    assert_exit(&out, 73);
    assert!(
        stderr(&out).contains("belongs to user id 65534"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_dir(&sb.spool).unwrap().count(),
        0,
        "nothing written there"
    );
}

#[test]
fn a_hot_journal_left_by_a_killed_writer_is_rolled_back() {
    let sb = Sandbox::new();
    for i in 0..50 {
        sb.record_task(&format!("kept-{i}"), "m", "success");
    }
    // A writer dies mid-transaction in rollback-journal mode, after SQLite has already
    // written changed pages into the database file: the journal it leaves is "hot".
    let script = r#"
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("PRAGMA cache_size=1")
c.execute("BEGIN IMMEDIATE")
for i in range(2000):
    c.execute("INSERT INTO inbox (session_id, client_ver, schema_ver, kind, status, ts, level, "
              "parameters, bytes, run_events, run_bytes, run_min_ts, run_max_ts) "
              "VALUES ('s', 'v', '1', 1, 1, 0, 2, hex(randomblob(500)), 1048, 1, 1048, 0, 0)")
os._exit(0)
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(sb.db_file())
        .status()
        .expect("python3 runs");
    assert!(status.success());
    assert!(
        sb.spool.join("spool.db-journal").exists(),
        "the journal is hot"
    );

    sb.record_task("after", "m", "success");
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 51, "the dead writer's rows were rolled back");
    assert!(!sb.spool.join("spool.db-journal").exists());
    let check: String = sb
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert_eq!(
        doc["quarantined"],
        serde_json::json!([]),
        "recovered, not quarantined"
    );
}

#[test]
fn a_writer_is_not_starved_by_a_crowd_that_keeps_the_lock_busy() {
    // Eight holders take spool.lock, hold it 2 ms, let go and queue again at once, as a
    // crowd of writers does. A record arriving meanwhile must still get its turn well
    // within its 30 s bound (a polling waiter used to lose every race and exit 75).
    let sb = Sandbox::new();
    sb.record_task("first", "m", "success");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holders: Vec<_> = (0..8)
        .map(|_| {
            let file = std::fs::File::open(sb.spool.join("spool.lock")).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    file.lock().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                    file.unlock().unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = sb.try_record("in-the-crowd", &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in holders {
        h.join().unwrap();
    }
    assert_ok(&out);
    assert_eq!(sb.queued(), 2);
}

#[test]
fn a_spool_of_the_first_schema_gains_the_inbox_and_keeps_its_events() {
    // Make a spool as the first schema left it: its events in `events`, no inbox,
    // user_version 1. (Folding is what every write but a small record does.)
    let sb = Sandbox::new();
    for i in 0..3 {
        sb.record_task(&format!("v1-{i}"), "m", "success");
    }
    assert_ok(&sb.run(&["purge", "--older-than", "3650d", "--yes"]));
    let db = sb.db();
    let in_events: i64 = db
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(in_events, 3);
    // Back to the first schema's objects: no inbox and no lease ledger, the delete
    // trigger and the lease index back; and one event claimed by a (dead) upload.
    db.execute_batch(
        "DROP TABLE inbox; DROP TABLE leases;
         CREATE TRIGGER events_tally_delete AFTER DELETE ON events BEGIN
             UPDATE tally SET events = events - 1, bytes = bytes - old.bytes
             WHERE kind = old.kind AND status = old.status AND rejected = old.rejected;
         END;
         CREATE INDEX events_leased ON events (lease_until) WHERE lease_until IS NOT NULL;
         UPDATE events SET lease_until = 32503680000000
             WHERE id = (SELECT min(id) FROM events);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(db);

    sb.record_task("v2", "m", "success");
    let version: i64 = sb
        .db()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let doc = sb.inspect();
    assert_eq!(doc["queued"], 4);
    assert_eq!(queued_tasks(&doc), ["v1-0", "v1-1", "v1-2", "v2"]);
    assert_eq!(
        doc["in_flight"], 1,
        "the claim made under the first schema still counts"
    );
    sb.assert_counts_agree();
    // Deletes keep the counts without the trigger the first schema had.
    assert_ok(&sb.run(&["purge", "--all", "--yes"]));
    assert_eq!(sb.inspect()["queued"], 0);
    sb.assert_counts_agree();
}
