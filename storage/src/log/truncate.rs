//! `Log::truncate_to`: a follower cutting its log back to where it agrees with the leader
//! (Kafka's `UnifiedLog.truncateTo`), crash safe through a marker file.
//!
//! What it removes. `truncate_to(offset)` removes every batch whose last offset is at or
//! after `offset`: the batch that contains `offset` goes whole (a batch is never split, so
//! the log is cut at that batch's base), and so does everything after it, including later
//! segments. When `offset` lies in a gap between batches, the cut is at the next batch.
//! The log end offset becomes the end of the last batch kept — the value a reopen computes —
//! or the base of the segment cut when none of its batches is kept; it is at most `offset`.
//! `offset` at or beyond the log end offset changes nothing; below the log start offset it
//! is refused (`OffsetOutOfRange`). The segment holding the cut (the last one whose base is
//! at or below `offset`) becomes the active segment: its file is cut at the first removed
//! batch, its indexes lose the entries of removed batches, and its index files are deleted
//! (an active segment's indexes are rebuilt by the recovery scan at open). Producer state is
//! rebuilt from the newest snapshot at or below the new end plus a replay of the batches
//! after it; snapshots beyond the new end are deleted. The leader-epoch cache drops the
//! epochs that start at or after the new end. The durable offset moves down with the end;
//! a log start offset above the new end moves down to it (and is persisted).
//!
//! It first waits until everything appended is durable and holds the append and flush
//! locks, so no append, roll, retention or flush runs meanwhile.
//!
//! Crash safety. The commit point is the marker file `truncate-to` in the log directory:
//! ASCII, the requested `offset` in decimal and a `\n`, written atomically (tmp, fsync,
//! rename, directory fsync) before any file is touched. Then, in order: later segments'
//! files are deleted (newest first), the cut segment's file is truncated and fdatasync'ed,
//! its index files deleted, the log start offset file rewritten when the start moved, the
//! leader-epoch checkpoint rewritten, producer snapshots beyond the new end deleted, the
//! directory fsync'ed, and the marker removed (and the directory fsync'ed again) before
//! `truncate_to` returns, so no append can precede its removal. A kill before the marker is
//! durable leaves the old log; after it, `Log::open` finds the marker and redoes every step
//! — each is idempotent: deleting a deleted file, cutting a file already cut at the same
//! batch — before anything else, giving the truncated log. A failure of any step after the
//! marker takes the log offline, so the next open finishes the job.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::{
    find_batch, load_producer_snapshot, replay_producers, replay_ranges, Log, WriteBuffer,
    LOG_START_OFFSET_FILE, READ_WINDOW_MIN_BYTES,
};
use crate::error::{Result, StorageError};
use crate::fault::{FaultPlan, IoOp};
use crate::files;
use crate::index::OffsetIndex;
use crate::producer_state::ProducerStateManager;
use crate::segment::{align_down, relative_offset, LogSegment, BLOCK_BYTES, NO_TIMESTAMP};
use crate::Offset;

/// The marker of a truncation in progress.
pub const TRUNCATION_MARKER_FILE: &str = "truncate-to";

/// What cutting one segment at an offset does, worked out before anything changes.
struct CutPlan {
    /// Byte position of the first removed batch (the segment's size when none is).
    position: u64,
    /// Base offset of the first removed batch.
    removed_base: Option<Offset>,
    /// The segment's next offset after the cut.
    next_offset: Offset,
    /// Largest max timestamp of the kept batches after the last kept index entry.
    tail_max_timestamp: i64,
    bytes_since_index: u64,
    /// The bytes of the partial last block before `position`, carried into the write
    /// buffer.
    tail: Vec<u8>,
}

/// What planning needs of a segment, copied out so that no borrow of the log is held
/// across reads.
struct SegmentCopy {
    base: Offset,
    file: Rc<DmaFile>,
    path: PathBuf,
    size: u64,
    index: OffsetIndex,
}

impl SegmentCopy {
    fn of(seg: &LogSegment) -> SegmentCopy {
        SegmentCopy {
            base: seg.base_offset,
            file: seg.file.clone(),
            path: seg.path.clone(),
            size: seg.size_bytes,
            index: seg.offset_index.clone(),
        }
    }
}

async fn plan_cut(seg: &SegmentCopy, offset: Offset) -> Result<CutPlan> {
    let window = READ_WINDOW_MIN_BYTES * 16;
    let start = seg
        .index
        .lookup(relative_offset(offset.0, seg.base))
        .position as u64;
    let mut at = start;
    let found = find_batch(&seg.file, &seg.path, start, seg.size, window, |v| {
        if v.last_offset() >= offset.0 {
            Some((at, Offset(v.base_offset())))
        } else {
            at += v.size_bytes() as u64;
            None
        }
    })
    .await?;
    let removed_base = found.map(|(_, base)| base);
    let limit = found.map_or(seg.size, |(position, _)| position);
    let mut index = seg.index.clone();
    index.truncate_to_position(limit);
    let from = index.entries().last().map_or(0, |e| e.position as u64);
    let mut next_offset = seg.base;
    let mut tail_max_timestamp = NO_TIMESTAMP;
    let mut kept_end = from;
    find_batch(&seg.file, &seg.path, from, limit, window, |v| {
        next_offset = Offset(v.last_offset().saturating_add(1));
        tail_max_timestamp = tail_max_timestamp.max(v.max_timestamp());
        kept_end += v.size_bytes() as u64;
        None::<()>
    })
    .await?;
    // The cut is right after the last kept batch. When no batch of this segment goes, that
    // is still before the size when the segment was trusted by its indexes at open: its
    // size then counts the zero padding of the last block, which appends must not follow.
    let position = kept_end;
    debug_assert!(found.is_none_or(|(p, _)| p == kept_end));
    let tail_pos = align_down(position);
    let tail = if position > tail_pos {
        let block = seg
            .file
            .read_at_aligned(tail_pos, BLOCK_BYTES as usize)
            .await
            .map_err(|e| StorageError::io("read tail block", &seg.path, e))?;
        block[..(position - tail_pos) as usize].to_vec()
    } else {
        Vec::new()
    };
    Ok(CutPlan {
        position,
        removed_base,
        next_offset,
        tail_max_timestamp,
        bytes_since_index: position - from,
        tail,
    })
}

/// Applies a plan to the segment's in-memory state; it becomes the active segment.
fn apply_cut(seg: &mut LogSegment, plan: &CutPlan) {
    seg.offset_index.truncate_to_position(plan.position);
    if let Some(base) = plan.removed_base {
        seg.time_index
            .truncate_from(relative_offset(base.0, seg.base_offset));
    }
    seg.max_timestamp = seg
        .time_index
        .max_timestamp()
        .unwrap_or(NO_TIMESTAMP)
        .max(plan.tail_max_timestamp);
    seg.next_offset = plan.next_offset;
    seg.size_bytes = plan.position;
    seg.durable_bytes = seg.durable_bytes.min(plan.position);
    // ftruncate frees the blocks fallocate reserved beyond the new size.
    seg.preallocated_bytes = plan.position;
    seg.bytes_since_index = plan.bytes_since_index;
    seg.sealed = false;
    seg.indexes_persisted = false;
    if plan.position == 0 {
        seg.first_append_ms = None;
    }
    seg.recovered_epochs
        .retain(|(_, first, _)| *first < plan.next_offset);
    for run in &mut seg.recovered_epochs {
        run.2 = run.2.min(Offset(plan.next_offset.0 - 1));
    }
}

/// Cuts the segment's file at `position`, durably, and deletes its index files.
async fn cut_files(
    faults: Option<&Rc<dyn FaultPlan>>,
    file: &DmaFile,
    path: &Path,
    position: u64,
    index_paths: Vec<PathBuf>,
) -> Result<()> {
    let op = IoOp::Truncate {
        path: path.to_owned(),
        len: position,
    };
    crate::fault::apply(faults, op)
        .await
        .map_err(|e| StorageError::io("truncate segment", path, e))?;
    file.truncate(position)
        .await
        .map_err(|e| StorageError::io("truncate segment", path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| StorageError::io("fdatasync segment", path, e))?;
    files::remove_files("remove segment index", index_paths).await
}

/// The offset of an interrupted truncation, if its marker is there.
pub(super) async fn read_marker(dir: &Path) -> Option<Offset> {
    let path = dir.join(TRUNCATION_MARKER_FILE);
    let bytes = files::read_optional(&path).await?;
    let parsed = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    if parsed.is_none() {
        // Written atomically, so this is foreign damage; the log is a prefix of the old
        // one either way.
        tracing::warn!(path = %path.display(), "ignoring an unreadable truncation marker");
    }
    parsed.map(Offset)
}

async fn write_marker(dir: &Path, offset: Offset) -> Result<()> {
    let path = dir.join(TRUNCATION_MARKER_FILE);
    files::write_atomically(
        "write truncation marker",
        &path,
        format!("{offset}\n").into_bytes(),
    )
    .await
}

pub(super) async fn remove_marker(dir: &Path) -> Result<()> {
    files::remove_files(
        "remove truncation marker",
        vec![dir.join(TRUNCATION_MARKER_FILE)],
    )
    .await?;
    files::sync_dir(dir).await
}

/// Open, redoing an interrupted truncation: deletes the segments based after `offset`
/// (the first one always stays) and returns the bases kept.
pub(super) async fn redo_remove_segments(
    dir: &Path,
    bases: Vec<i64>,
    offset: Offset,
) -> Result<Vec<i64>> {
    let first = bases.first().copied();
    let (kept, doomed): (Vec<i64>, Vec<i64>) = bases
        .into_iter()
        .partition(|b| *b <= offset.0 || Some(*b) == first);
    for base in doomed.into_iter().rev() {
        let log = dir.join(crate::segment::segment_file_name(Offset(base), "log"));
        tracing::warn!(segment = %log.display(), %offset, "finishing an interrupted truncation");
        files::remove_files(
            "remove truncated segment",
            vec![
                log.clone(),
                log.with_extension("index"),
                log.with_extension("timeindex"),
            ],
        )
        .await?;
    }
    Ok(kept)
}

/// Open, redoing an interrupted truncation: cuts the (now last) segment at `offset`.
pub(super) async fn redo_cut(seg: &mut LogSegment, offset: Offset) -> Result<()> {
    let plan = plan_cut(&SegmentCopy::of(seg), offset).await?;
    apply_cut(seg, &plan);
    cut_files(None, &seg.file, &seg.path, plan.position, seg.index_paths()).await
}

/// The files a truncation still has to change once memory says it is done.
struct Pending {
    removed: Vec<LogSegment>,
    file: Rc<DmaFile>,
    path: PathBuf,
    position: u64,
    index_paths: Vec<PathBuf>,
    start_lowered: bool,
    new_end: Offset,
}

impl Log {
    /// Removes every batch whose last offset is at or after `offset` — the batch containing
    /// `offset` whole, never part of it — and returns the new log end offset. The exact
    /// rules and the crash-safety argument are in the module doc of `log/truncate.rs`.
    pub async fn truncate_to(self: &Rc<Self>, offset: Offset) -> Result<Offset> {
        let _permit = self.lock_appends().await?;
        let (end, start) = {
            let inner = self.inner.borrow();
            self.check_usable(&inner)?;
            (inner.next_offset, inner.log_start_offset)
        };
        if offset >= end {
            return Ok(end);
        }
        if offset < start {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        // Quiet: everything appended is on disk and no flush runs until this returns.
        self.wait_durable(end).await?;
        let _flushing = self.lock_flushes().await?;
        let (base, copy) = {
            let inner = self.inner.borrow();
            let (&base, seg) = inner
                .segments
                .range(..=offset.0)
                .next_back()
                .or_else(|| inner.segments.iter().next())
                .expect("one segment");
            (base, SegmentCopy::of(seg))
        };
        let plan = plan_cut(&copy, offset).await?;
        drop(copy);
        write_marker(&self.dir, offset).await?;
        let pending = self.apply_truncation(base, &plan);
        let new_end = pending.new_end;
        if let Err(e) = self.finish_truncation(pending).await {
            self.inner.borrow_mut().failed = true;
            tracing::error!(dir = %self.dir.display(), error = %e, "truncation failed; log is offline until reopened");
            self.durable.notify(usize::MAX);
            return Err(e);
        }
        tracing::info!(dir = %self.dir.display(), %offset, %new_end, "log truncated");
        Ok(new_end)
    }

    /// The in-memory half of a truncation: from here on reads and the log end offset see
    /// the truncated log.
    fn apply_truncation(&self, base: i64, plan: &CutPlan) -> Pending {
        let capacity = self.config.borrow().write_buffer_bytes;
        let mut inner = self.inner.borrow_mut();
        let removed: Vec<LogSegment> = inner
            .segments
            .split_off(&(base + 1))
            .into_values()
            .rev()
            .collect();
        let seg = inner.segments.get_mut(&base).expect("cut segment");
        apply_cut(seg, plan);
        let write = WriteBuffer::new(seg, capacity, &plan.tail, align_down(plan.position));
        let (file, path, index_paths) = (seg.file.clone(), seg.path.clone(), seg.index_paths());
        let new_end = seg.next_offset;
        inner.write = Some(write);
        inner.pending.clear();
        inner.next_offset = new_end;
        inner.durable_offset = inner.durable_offset.min(new_end);
        let start_lowered = inner.log_start_offset > new_end;
        if start_lowered {
            inner.log_start_offset = new_end;
        }
        inner.epochs.truncate_from_end(new_end);
        inner.epochs_dirty = true;
        Pending {
            removed,
            file,
            path,
            position: plan.position,
            index_paths,
            start_lowered,
            new_end,
        }
    }

    /// The on-disk half, in the order the module doc gives.
    async fn finish_truncation(&self, p: Pending) -> Result<()> {
        for seg in &p.removed {
            files::remove_files("remove truncated segment", seg.file_paths()).await?;
        }
        drop(p.removed);
        cut_files(
            self.faults.as_ref(),
            &p.file,
            &p.path,
            p.position,
            p.index_paths,
        )
        .await?;
        if p.start_lowered {
            files::write_atomically(
                "write log start offset",
                &self.dir.join(LOG_START_OFFSET_FILE),
                p.new_end.0.to_string().into_bytes(),
            )
            .await?;
        }
        self.persist_epochs().await?;
        // Deletes the snapshots beyond the new end as it looks for one at or below it.
        let loaded = load_producer_snapshot(&self.dir, p.new_end).await?;
        files::sync_dir(&self.dir).await?;
        let (from, ranges) = {
            let inner = self.inner.borrow();
            let first_base = Offset(*inner.segments.keys().next().unwrap_or(&0));
            let from = loaded
                .as_ref()
                .map_or(first_base, |(o, _)| *o)
                .max(first_base);
            (from, replay_ranges(&inner.segments, from))
        };
        let state = loaded.map_or_else(ProducerStateManager::default, |(_, s)| s);
        let producers = replay_producers(state, ranges, from).await?;
        self.inner.borrow_mut().producers = producers;
        remove_marker(&self.dir).await
    }
}
