//! `Log::reset_to`: a follower whose whole log is older than its leader's log start (the
//! leader's retention or DeleteRecords removed what the follower would fetch next) empties
//! its log and starts again at the leader's log start offset (Kafka's
//! `UnifiedLog.truncateFullyAndStartAt`), crash safe through a marker file.
//!
//! What it does. Every segment goes, with its indexes, every producer snapshot and the
//! leader-epoch checkpoint's entries; one empty segment based at `offset` takes their place;
//! log start, log end and durable offsets all become `offset` (the start persisted in
//! `log-start-offset`); producer state and the epoch cache start empty (the leader's batches
//! refill them). `offset` at the log end offset changes nothing; below it is refused (cutting
//! the log back is `truncate_to`'s job).
//!
//! Crash safety. The commit point is the marker file `reset-to` (ASCII decimal offset and a
//! `\n`, written atomically) before any file changes. Then: the new segment file is created,
//! the old segments' files and all producer snapshots are deleted, the log start offset file
//! and the (empty) epoch checkpoint are written, the directory is fsync'ed and the marker
//! removed. A kill before the marker is durable leaves the old log (the follower is out of
//! range again and resets again); after it, `Log::open` finds the marker and redoes the file
//! steps — each idempotent — before anything else.

use std::path::Path;
use std::rc::Rc;

use super::{list_producer_snapshots, Log, WriteBuffer, LOG_START_OFFSET_FILE};
use crate::error::{Result, StorageError};
use crate::files;
use crate::leader_epoch::LeaderEpochFileCache;
use crate::producer_state::ProducerStateManager;
use crate::segment::{segment_file_name, LogSegment};
use crate::Offset;

/// The marker of a reset in progress.
pub const RESET_MARKER_FILE: &str = "reset-to";

impl Log {
    /// Empties the log and starts it again at `offset` (at or above the log end offset); the
    /// rules and the crash-safety argument are in the module doc of `log/reset.rs`.
    pub async fn reset_to(self: &Rc<Self>, offset: Offset) -> Result<()> {
        let _permit = self.lock_appends().await?;
        let (end, start) = {
            let inner = self.inner.borrow();
            self.check_usable(&inner)?;
            (inner.next_offset, inner.log_start_offset)
        };
        if offset == end {
            // Nothing to skip: the log goes on from there as it is.
            return Ok(());
        }
        if offset < end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        // Quiet: nothing of the old log is still being written when its files go.
        self.wait_durable(end).await?;
        let _flushing = self.lock_flushes().await?;
        files::write_atomically(
            "write reset marker",
            &self.dir.join(RESET_MARKER_FILE),
            format!("{offset}\n").into_bytes(),
        )
        .await?;
        let result = self.reset_files(offset).await;
        if let Err(e) = result {
            self.inner.borrow_mut().failed = true;
            tracing::error!(dir = %self.dir.display(), error = %e, "log reset failed; log is offline until reopened");
            self.durable.notify(usize::MAX);
            return Err(e);
        }
        tracing::info!(dir = %self.dir.display(), from = %end, to = %offset, "log emptied and restarted (behind the leader's log start)");
        Ok(())
    }

    async fn reset_files(&self, offset: Offset) -> Result<()> {
        let segment = LogSegment::create(&self.dir, offset).await?;
        let capacity = self.config.borrow().write_buffer_bytes;
        let old: Vec<LogSegment> = {
            let mut inner = self.inner.borrow_mut();
            let write = WriteBuffer::new(&segment, capacity, &[], 0);
            let old = std::mem::take(&mut inner.segments);
            inner.segments.insert(offset.0, segment);
            inner.write = Some(write);
            inner.pending.clear();
            inner.dirty = false;
            inner.log_start_offset = offset;
            inner.next_offset = offset;
            inner.durable_offset = offset;
            inner.producers = ProducerStateManager::default();
            inner.epochs = LeaderEpochFileCache::default();
            inner.epochs_dirty = true;
            old.into_values().collect()
        };
        self.durable.notify(usize::MAX);
        for seg in &old {
            files::remove_files("remove reset segment", seg.file_paths()).await?;
        }
        drop(old);
        redo_files(&self.dir, offset).await?;
        self.persist_epochs().await?;
        files::sync_dir(&self.dir).await?;
        remove_marker(&self.dir).await
    }
}

/// The steps after the new segment that a reopen repeats too: the producer snapshots go,
/// the log start is written.
async fn redo_files(dir: &Path, offset: Offset) -> Result<()> {
    let listing = dir.to_owned();
    let snapshots: Vec<_> = glommio::executor()
        .spawn_blocking(move || list_producer_snapshots(&listing))
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    files::remove_files("remove producer snapshot", snapshots).await?;
    files::write_atomically(
        "write log start offset",
        &dir.join(LOG_START_OFFSET_FILE),
        offset.0.to_string().into_bytes(),
    )
    .await
}

/// The offset of an interrupted reset, if its marker is there.
pub(super) async fn read_marker(dir: &Path) -> Option<Offset> {
    let bytes = files::read_optional(&dir.join(RESET_MARKER_FILE)).await?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(Offset)
}

async fn remove_marker(dir: &Path) -> Result<()> {
    files::remove_files("remove reset marker", vec![dir.join(RESET_MARKER_FILE)]).await?;
    files::sync_dir(dir).await
}

/// Open, redoing an interrupted reset to `offset`: every segment but the one based at
/// `offset` is deleted (that one created if missing), snapshots removed, the start written.
/// Returns the bases left: `[offset]`. The caller removes the marker once the log is open
/// (the epoch checkpoint is rebuilt from the empty log by then).
pub(super) async fn redo(dir: &Path, bases: Vec<i64>, offset: Offset) -> Result<Vec<i64>> {
    let have_new = bases.contains(&offset.0);
    for base in bases.into_iter().filter(|b| *b != offset.0) {
        let log = dir.join(segment_file_name(Offset(base), "log"));
        let index = dir.join(segment_file_name(Offset(base), "index"));
        let timeindex = dir.join(segment_file_name(Offset(base), "timeindex"));
        files::remove_files("remove reset segment", vec![log, index, timeindex]).await?;
    }
    if !have_new {
        LogSegment::create(dir, offset).await?;
    }
    files::remove_files(
        "remove epoch checkpoint",
        vec![dir.join(crate::leader_epoch::LEADER_EPOCH_CHECKPOINT_FILE)],
    )
    .await?;
    redo_files(dir, offset).await?;
    files::sync_dir(dir).await?;
    Ok(vec![offset.0])
}

pub(super) async fn finish(dir: &Path) -> Result<()> {
    remove_marker(dir).await
}
