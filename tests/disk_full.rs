//! A full disk: the spool on a tiny tmpfs mounted by the test (needs root, as CI has;
//! elsewhere the test says loudly that it skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::sandbox::*;

/// A tmpfs mounted for the length of a test, unmounted even if the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn mount_or_skip(sb: &Sandbox, size: &str) -> Option<Tmpfs> {
    if !is_root() {
        eprintln!("SKIPPED: the disk-full tests need root to mount a tmpfs (CI runs them as root)");
        return None;
    }
    let m = Tmpfs::mount(&sb.root().join("tiny"), size);
    if m.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs"
        );
        eprintln!("SKIPPED: could not mount a tmpfs here");
    }
    m
}

fn record(sb: &Sandbox, spool: &Path, task: &str) -> std::process::Output {
    sb.run(&[
        "--spool",
        spool.to_str().unwrap(),
        "record",
        "evaluation-task",
        "--task",
        task,
        "--framework",
        &"f".repeat(200),
        "--model",
        "m",
        "--status",
        "success",
    ])
}

#[test]
fn a_full_disk_gives_73_keeps_earlier_events_and_recovers_when_freed() {
    let sb = Sandbox::new();
    let Some(fs) = mount_or_skip(&sb, "1m") else {
        return;
    };
    let spool = fs.0.join("spool");
    for i in 0..20 {
        assert_ok(&record(&sb, &spool, &format!("before-{i}")));
    }
    // Fill the disk to the last byte.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", filler.display()))
        .output();

    let mut refused = 0;
    for i in 0..50 {
        let out = record(&sb, &spool, &format!("full-{i}"));
        match out.status.code() {
            Some(0) => {}
            Some(73) => {
                refused += 1;
                let err = stderr(&out);
                assert_eq!(err.lines().count(), 1, "{err}");
                assert!(err.contains("full") || err.contains("space"), "{err}");
            }
            other => panic!("unexpected exit {other:?}: {}", stderr(&out)),
        }
    }
    assert!(refused > 0, "a full disk must refuse writes with 73");

    // Every earlier event is intact and readable.
    let out = sb.run(&[
        "--spool",
        spool.to_str().unwrap(),
        "inspect",
        "--json",
        "--events",
        "--limit",
        "0",
    ]);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["parameters"]["task"].as_str().unwrap())
        .collect();
    for i in 0..20 {
        assert!(tasks.contains(&format!("before-{i}").as_str()));
    }

    // Free the space: the database is whole, and writes work again.
    std::fs::remove_file(&filler).unwrap();
    let check: String = rusqlite::Connection::open(spool.join("spool.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert_ok(&record(&sb, &spool, "after"));
    drop(fs);
}

#[test]
fn a_read_only_spool_gives_73_and_changes_nothing() {
    let sb = Sandbox::new();
    let Some(fs) = mount_or_skip(&sb, "4m") else {
        return;
    };
    let spool = fs.0.join("spool");
    assert_ok(&record(&sb, &spool, "one"));
    let before = std::fs::read(spool.join("spool.db")).unwrap();
    let remount = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(remount.success());
    let out = record(&sb, &spool, "two");
    assert_exit(&out, 73);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_eq!(std::fs::read(spool.join("spool.db")).unwrap(), before);
    // Reading still works on a read-only spool.
    let out = sb.run(&["--spool", spool.to_str().unwrap(), "inspect", "--json"]);
    assert_ok(&out);
    drop(fs);
}
