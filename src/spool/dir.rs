//! The spool directory: creating it private, refusing one that is not safe to write
//! private data into, and telling local disks from network filesystems.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` (0700) if needed, then checks it is a real directory of ours that
/// nobody else can write to: events and the session key are private.
pub fn prepare(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => create(dir)?,
        Err(e) => return Err(Error::cant_write(dir, e)),
        Ok(_) => {}
    }
    check(dir)
}

fn create(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| {
            Error::cant_write(dir, format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // Another process made it between our look and our create: fine.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::cant_write(dir, e)),
    }
}

/// Refuses a symlink, a non-directory, another user's directory, or one that others
/// can write to.
pub fn check(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::cant_write(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(Error::cant_write(
            dir,
            "it is a symbolic link; point --spool or TELESPOOL_DIR at the real directory",
        ));
    }
    if !meta.is_dir() {
        return Err(Error::cant_write(
            dir,
            "it is not a directory; choose another --spool or TELESPOOL_DIR",
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::cant_write(
            dir,
            format!(
                "it belongs to user id {}, not to you ({me}); use a spool directory of your own",
                meta.uid()
            ),
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(Error::cant_write(
            dir,
            format!(
                "others can write to it (mode {:o}); run `chmod 700 {}`",
                meta.permissions().mode() & 0o777,
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// What kind of filesystem the spool is on, which decides the journal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Local,
    /// NFS, Lustre, GPFS, CIFS and friends: no shared memory across hosts, so no WAL.
    Network(&'static str),
}

/// Filesystem magic numbers (`statfs(2)`, `linux/magic.h`) of filesystems that many
/// hosts share, or whose locking and mmap cannot be trusted with WAL.
const NETWORK_FILESYSTEMS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x0BD0_0BD0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x517B, "smb"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "afs"),
    (0x0102_1997, "9p"),
    (0x7375_7245, "coda"),
    (0x564C, "ncp"),
    (0x7461_636F, "ocfs2"),
    (0x0116_1970, "gfs2"),
    (0x1983_0326, "beegfs"),
    (0x6573_5546, "fuse"),
    (0xAAD7_AAEA, "panfs"),
];

pub fn filesystem_kind(dir: &Path) -> FsKind {
    match rustix::fs::statfs(dir) {
        Ok(st) => {
            // `f_type` is a signed word whose width varies by platform; compare the
            // low 32 bits, where the magic numbers live.
            #[allow(clippy::unnecessary_cast)]
            let magic = st.f_type as i64 & 0xFFFF_FFFF;
            NETWORK_FILESYSTEMS
                .iter()
                .find(|(m, _)| *m == magic)
                .map_or(FsKind::Local, |(_, name)| FsKind::Network(name))
        }
        // Unknown: assume the cautious choice.
        Err(_) => FsKind::Network("unknown"),
    }
}

/// Whether the filesystem holding `dir` has (almost) no space left for us.
pub fn nearly_full(dir: &Path) -> bool {
    rustix::fs::statvfs(dir)
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize) < 64 * 1024)
        .unwrap_or(false)
}

/// Whether we may create files in `dir` (false on a read-only filesystem).
pub fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}
