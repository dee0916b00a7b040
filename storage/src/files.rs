//! Small-file and directory operations, run on glommio's blocking thread pool so that a
//! shard thread never waits in a `std::fs` call (an fsync of a directory or a small file can
//! take milliseconds on a busy disk, and the shard serves every other partition meanwhile).
//! Segment data goes through glommio's `DmaFile` instead (io_uring, no blocking).
//!
//! No storage code path calls `std::fs` on a shard thread any more. What is left:
//!
//! - `index::write_file_atomically` and `segment::sync_dir` stay public and synchronous
//!   because the broker calls them for its metadata file (`broker/src/metadata.rs`), from
//!   inside `spawn_blocking` on the controller's shard: they never run on a shard thread.
//! - `LogSegment::persist_indexes` and `LogSegment::remove_files` stay public for callers
//!   outside the log; nothing in storage calls them.
//! - `std::fs` inside `spawn_blocking` closures, which run on the blocking pool: listing
//!   and reading producer snapshots (`log.rs`: `load_producer_snapshot`,
//!   `write_producer_snapshot`) and the iopoll probe's write and fallback walk
//!   (`segment::prime_iopoll_probe`).
//!
//! Everything else — the log directory listing and index reads at open, index, snapshot,
//! checkpoint, log-start and marker writes, directory fsyncs, removals — goes through here.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(f).await
}

/// The temporary name a file is written under before it is renamed into place:
/// `<name>.tmp`, so that no two files of a log share one.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically — `<name>.tmp`, fsync, rename, fsync of the
/// directory — off the shard thread. `op` names the operation in the error.
pub async fn write_atomically(op: &'static str, path: &Path, bytes: Vec<u8>) -> Result<()> {
    let path = path.to_owned();
    blocking(move || {
        let tmp = tmp_path(&path);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        written.map_err(|e| StorageError::io(op, &path, e))?;
        sync_dir_now(path.parent().unwrap_or(Path::new(".")))
    })
    .await
}

/// fsyncs a directory off the shard thread.
pub async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_owned();
    blocking(move || sync_dir_now(&dir)).await
}

fn sync_dir_now(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// `create_dir_all` off the shard thread.
pub async fn create_dir_all(dir: &Path) -> Result<()> {
    let dir = dir.to_owned();
    blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create log dir", &dir, e))
    })
    .await
}

/// Removes files off the shard thread; a missing file is not an error.
pub async fn remove_files(op: &'static str, paths: Vec<PathBuf>) -> Result<()> {
    blocking(move || {
        for p in &paths {
            if let Err(e) = std::fs::remove_file(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StorageError::io(op, p, e));
                }
            }
        }
        Ok(())
    })
    .await
}

/// `remove_dir_all` off the shard thread.
pub async fn remove_dir_all(dir: &Path) -> Result<()> {
    let dir = dir.to_owned();
    blocking(move || {
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io("remove log dir", &dir, e))
    })
    .await
}

/// The names of a directory's entries (lossy UTF-8), off the shard thread.
pub async fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let dir = dir.to_owned();
    blocking(move || {
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).map_err(|e| StorageError::io("list log dir", &dir, e))?
        {
            let entry = entry.map_err(|e| StorageError::io("list log dir", &dir, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    })
    .await
}

/// Reads a whole small file off the shard thread; `None` when it does not exist or cannot
/// be read (the callers rebuild what it held).
pub async fn read_optional(path: &Path) -> Option<Vec<u8>> {
    let path = path.to_owned();
    blocking(move || std::fs::read(path).ok()).await
}
