//! A partition's log: an ordered set of segments, the write path and the read path.
//!
//! Write path. [`Log::append`] validates every batch (header, CRC32C) before it touches the
//! log, assigns offsets by rewriting each batch's base offset in place while copying it into
//! an aligned write buffer, updates the in-memory indexes, and registers the log with the
//! shard's [`GroupCommit`]. The group-commit task later takes all buffered bytes of the log,
//! writes them with direct I/O, fdatasyncs, and only then advances the durable offset and
//! wakes every waiter ([`Log::wait_durable`]). The partial last 512-byte block stays in the
//! next buffer and is rewritten with the following data.
//!
//! Follower path. [`Log::append_as_follower`] stores a leader's batches byte for byte at
//! the offsets and leader epochs they carry (CRC verified, base offsets increasing, gaps
//! allowed), through the same write buffers and group commit; [`Log::truncate_to`] (in
//! `log/truncate.rs`) cuts the log back to a batch boundary.
//!
//! Leader epochs. Every appended batch whose leader epoch is newer than the latest known
//! one starts an entry of the log's [`LeaderEpochFileCache`], persisted in
//! `leader-epoch-checkpoint` by the flush that makes the batch durable (before the batch is
//! acknowledged). On open the file is reconciled with the log: entries at or after the
//! recovered end are dropped and epochs seen by the recovery scan are added; a missing or
//! unreadable file is rebuilt from every batch header.
//!
//! Read path. [`Log::read`] serves only durable bytes: the index finds a position at or
//! before the wanted offset, whole batches are read from the file and returned as stored. A
//! wanted offset in a gap between batches gets the next batch.
//!
//! Files other than segment data are written off the shard thread (see `files.rs`).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;
use protocol::record_batch::{
    set_base_offset, set_partition_leader_epoch, BatchIter, RecordBatchView,
};

use crate::config::SEGMENT_BYTES_MAX;
use crate::error::{Result, StorageError};
use crate::fault::{FaultPlan, IoOp};
use crate::files;
use crate::group_commit::GroupCommit;
use crate::leader_epoch::{EpochEntry, LeaderEpochFileCache, LEADER_EPOCH_CHECKPOINT_FILE};
use crate::producer_state::{ProducerCheck, ProducerError, ProducerStateManager};
use crate::segment::{align_down, align_up, segment_file_name, LogSegment};
use crate::{LogConfig, Offset};

mod reset;
mod truncate;

/// Bytes read at least per step of a fetch scan.
const READ_WINDOW_MIN_BYTES: usize = 64 << 10;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// Offset after the appended batches: durable once `wait_durable(end_offset)` returns.
    pub end_offset: Offset,
    pub log_start_offset: Offset,
    /// The batch was a retry of one already written (idempotent producer): nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
}

/// Producer-state snapshots kept per log (the newest is used; older ones are fallbacks
/// when a crash leaves the newest beyond the recovered end).
const PRODUCER_SNAPSHOTS_KEPT: usize = 2;

/// Result of a read.
#[derive(Debug, Clone)]
pub struct ReadInfo {
    /// Whole batches as stored, possibly empty.
    pub records: Bytes,
    /// The log's durable offset when it was read (what is visible is the partition's
    /// business: `replication::Partition` holds the high watermark).
    pub durable_offset: Offset,
    pub log_start_offset: Offset,
}

/// An aligned buffer of bytes destined for one segment file.
struct WriteBuffer {
    segment_base: Offset,
    file: Rc<DmaFile>,
    /// File position of `buf[0]`, a multiple of the block size.
    file_pos: u64,
    buf: DmaBuffer,
    /// Bytes of `buf` holding data.
    len: usize,
    /// Bytes of `buf` already handed to the group commit (the carried-over tail block).
    handed_len: usize,
    end_offset: Offset,
}

impl WriteBuffer {
    fn new(segment: &LogSegment, capacity: usize, tail: &[u8], file_pos: u64) -> WriteBuffer {
        let capacity = align_up(capacity.max(tail.len() + 1) as u64) as usize;
        let mut buf = segment.file.alloc_dma_buffer(capacity);
        buf.as_bytes_mut()[..tail.len()].copy_from_slice(tail);
        WriteBuffer {
            segment_base: segment.base_offset,
            file: segment.file.clone(),
            file_pos,
            buf,
            len: tail.len(),
            handed_len: tail.len(),
            end_offset: segment.next_offset,
        }
    }

    fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    fn data_end(&self) -> u64 {
        self.file_pos + self.len as u64
    }
}

/// Sealed bytes waiting to be written.
struct PendingWrite {
    segment_base: Offset,
    file: Rc<DmaFile>,
    file_pos: u64,
    buf: DmaBuffer,
    data_end: u64,
    end_offset: Offset,
}

struct LogInner {
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: Offset,
    next_offset: Offset,
    durable_offset: Offset,
    write: Option<WriteBuffer>,
    pending: VecDeque<PendingWrite>,
    dirty: bool,
    failed: bool,
    closed: bool,
    producers: ProducerStateManager,
    epochs: LeaderEpochFileCache,
    /// The epoch cache changed since its checkpoint was last written.
    epochs_dirty: bool,
}

/// How a log is opened, beyond its settings.
#[derive(Clone, Default)]
pub struct LogOptions {
    /// A disk-fault plan for tests (see [`crate::fault`]); `None` in production, where the
    /// seam costs one branch per segment write, fdatasync and fallocate.
    pub faults: Option<Rc<dyn FaultPlan>>,
}

/// The log start offset DeleteRecords set (absent until it is used): the offset in ASCII
/// decimal, no line end, written atomically. Lowered by a truncation below it.
const LOG_START_OFFSET_FILE: &str = "log-start-offset";

pub struct Log {
    dir: PathBuf,
    config: RefCell<LogConfig>,
    inner: RefCell<LogInner>,
    append_lock: Semaphore,
    /// Held by a flush for its whole round, so that flushes of this log never overlap (the
    /// group commit and `close` both flush) and `truncate_to` can exclude them.
    flush_lock: Semaphore,
    /// Serializes writes of the leader-epoch checkpoint (they share a temporary file).
    checkpoint_lock: Semaphore,
    durable: Event,
    commit: Rc<GroupCommit>,
    faults: Option<Rc<dyn FaultPlan>>,
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(dir: &Path, config: LogConfig, commit: Rc<GroupCommit>) -> Result<Rc<Log>> {
        Self::open_with(dir, config, commit, LogOptions::default()).await
    }

    /// [`Self::open`] with options (a fault plan for tests).
    pub async fn open_with(
        dir: &Path,
        config: LogConfig,
        commit: Rc<GroupCommit>,
        options: LogOptions,
    ) -> Result<Rc<Log>> {
        files::create_dir_all(dir).await?;
        crate::segment::prime_iopoll_probe(dir).await?;
        let mut bases: Vec<i64> = files::list_dir(dir)
            .await?
            .iter()
            .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort_unstable();
        // A reset that a crash interrupted is finished first (see `log/reset.rs`).
        let reset = reset::read_marker(dir).await;
        if let Some(offset) = reset {
            bases = reset::redo(dir, bases, offset).await?;
        }
        // So is a truncation (see `log/truncate.rs`).
        let truncation = truncate::read_marker(dir).await;
        if let Some(offset) = truncation {
            bases = truncate::redo_remove_segments(dir, bases, offset).await?;
        }
        let mut segments = BTreeMap::new();
        for (i, base) in bases.iter().enumerate() {
            let path = dir.join(segment_file_name(Offset(*base), "log"));
            let is_last = i + 1 == bases.len();
            let seg =
                LogSegment::open(path, Offset(*base), config.index_interval_bytes, is_last).await?;
            segments.insert(*base, seg);
        }
        if segments.is_empty() {
            let seg = LogSegment::create(dir, Offset(0)).await?;
            segments.insert(0, seg);
        }
        if let Some(offset) = truncation {
            let (_, last) = segments.iter_mut().next_back().expect("one segment");
            truncate::redo_cut(last, offset).await?;
        }
        let last = segments.values().next_back().expect("one segment");
        let next_offset = last.next_offset;
        // DeleteRecords may have moved the start into the first segment.
        let start_path = dir.join(LOG_START_OFFSET_FILE);
        let persisted_start = files::read_optional(&start_path)
            .await
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let log_start_offset = Offset(
            (*segments.keys().next().expect("one segment"))
                .max(persisted_start)
                .min(next_offset.0),
        );
        if persisted_start > next_offset.0 {
            // Only a truncation below the start moves the end below it: the start follows,
            // durably, so that appends after it are not hidden at the next open.
            files::write_atomically(
                "write log start offset",
                &start_path,
                next_offset.0.to_string().into_bytes(),
            )
            .await?;
        }
        let tail_pos = align_down(last.size_bytes);
        let tail_len = (last.size_bytes - tail_pos) as usize;
        let tail = if tail_len > 0 {
            let r = last
                .file
                .read_at_aligned(tail_pos, crate::segment::BLOCK_BYTES as usize)
                .await
                .map_err(|e| StorageError::io("read tail block", &last.path, e))?;
            r[..tail_len].to_vec()
        } else {
            Vec::new()
        };
        let write = WriteBuffer::new(last, config.write_buffer_bytes, &tail, tail_pos);
        let producers = Self::recover_producers(dir, &segments, next_offset).await?;
        let (epochs, mut epochs_dirty) =
            recover_epochs(dir, &segments, log_start_offset, next_offset).await?;
        if epochs_dirty {
            // Best effort, as for rebuilt indexes: a disk too full to take the file must not
            // keep the log from opening. The next flush tries again, and the next open
            // reconciles the file with the log anyway.
            let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
            match files::write_atomically("write leader-epoch checkpoint", &path, epochs.encode())
                .await
            {
                Ok(()) => epochs_dirty = false,
                Err(e) => tracing::warn!(error = %e, "cannot write the leader-epoch checkpoint"),
            }
        }
        if truncation.is_some() {
            truncate::remove_marker(dir).await?;
        }
        if reset.is_some() {
            reset::finish(dir).await?;
        }
        tracing::debug!(dir = %dir.display(), %log_start_offset, %next_offset, segments = segments.len(), producers = producers.len(), latest_epoch = ?epochs.latest_epoch(), "log opened");
        Ok(Rc::new(Log {
            dir: dir.to_owned(),
            config: RefCell::new(config),
            inner: RefCell::new(LogInner {
                segments,
                log_start_offset,
                next_offset,
                durable_offset: next_offset,
                write: Some(write),
                pending: VecDeque::new(),
                dirty: false,
                failed: false,
                closed: false,
                producers,
                epochs,
                epochs_dirty,
            }),
            append_lock: Semaphore::new(1),
            flush_lock: Semaphore::new(1),
            checkpoint_lock: Semaphore::new(1),
            durable: Event::new(),
            commit,
            faults: options.faults,
        }))
    }

    /// Rebuilds producer state: the newest snapshot at or below the recovered end `end`,
    /// then the batch headers from its offset to `end`. Snapshots beyond `end` describe
    /// batches a crash (or a truncation) removed and are deleted, as are damaged ones.
    async fn recover_producers(
        dir: &Path,
        segments: &BTreeMap<i64, LogSegment>,
        end: Offset,
    ) -> Result<ProducerStateManager> {
        let loaded = load_producer_snapshot(dir, end).await?;
        let first_base = Offset(*segments.keys().next().unwrap_or(&0));
        let (from, producers) =
            loaded.unwrap_or_else(|| (first_base, ProducerStateManager::default()));
        let from = from.max(first_base);
        replay_producers(producers, replay_ranges(segments, from), from).await
    }

    /// Writes the producer state as of `offset` (best effort: a missing snapshot only means
    /// a longer replay at the next start), then removes all but the newest few.
    async fn write_producer_snapshot(&self, bytes: Vec<u8>, offset: Offset) {
        let path = self.dir.join(segment_file_name(offset, "snapshot"));
        if let Err(e) = files::write_atomically("write producer snapshot", &path, bytes).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot write producer snapshot");
            return;
        }
        let dir = self.dir.clone();
        let old = glommio::executor()
            .spawn_blocking(move || {
                let all = list_producer_snapshots(&dir).unwrap_or_default();
                let keep_from = all.len().saturating_sub(PRODUCER_SNAPSHOTS_KEPT);
                all[..keep_from]
                    .iter()
                    .map(|(_, p)| p.clone())
                    .collect::<Vec<_>>()
            })
            .await;
        if let Err(e) = files::remove_files("remove producer snapshot", old).await {
            tracing::warn!(error = %e, "cannot remove an old producer snapshot");
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// Applies changed settings (a topic config was altered): rolling, indexing and retention
    /// follow them from the next append or retention check.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    /// Offset after the last appended batch (log end offset).
    pub fn log_end_offset(&self) -> Offset {
        self.inner.borrow().next_offset
    }

    /// Everything below this offset is on disk; on a single replica it is the high watermark.
    pub fn durable_offset(&self) -> Offset {
        self.inner.borrow().durable_offset
    }

    pub fn log_start_offset(&self) -> Offset {
        self.inner.borrow().log_start_offset
    }

    /// The newest leader epoch any stored batch carries (`None`: no batch with an epoch).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.borrow().epochs.latest_epoch()
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` and the offset where it
    /// ended (the start of the next larger epoch, or the log end offset for the latest);
    /// `None` for Kafka's undefined answer. See [`LeaderEpochFileCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        let inner = self.inner.borrow();
        inner.epochs.end_offset_for(epoch, inner.next_offset)
    }

    /// The leader-epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.inner.borrow().epochs.entries().to_vec()
    }

    /// Forgets idempotent producers idle for `producer.id.expiration.ms`; returns how many.
    pub fn expire_producers(&self, now_ms: u64) -> usize {
        let expiration_ms = self.config.borrow().producer_id_expiration_ms;
        self.inner
            .borrow_mut()
            .producers
            .expire(now_ms, expiration_ms)
    }

    /// The largest record timestamp in the log (-1 when it has none).
    pub fn max_timestamp(&self) -> i64 {
        self.inner
            .borrow()
            .segments
            .values()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(-1)
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .borrow()
            .segments
            .values()
            .map(|s| s.size_bytes)
            .sum()
    }

    /// Excludes other appends, rolls and segment deletions until the permit is dropped.
    async fn lock_appends(&self) -> Result<glommio::sync::Permit<'_>> {
        self.append_lock
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed {
                path: self.dir.clone(),
            })
    }

    /// One flush (or truncation) at a time per log.
    pub(crate) async fn lock_flushes(&self) -> Result<glommio::sync::Permit<'_>> {
        self.flush_lock
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed {
                path: self.dir.clone(),
            })
    }

    fn check_usable(&self, inner: &LogInner) -> Result<()> {
        if inner.closed {
            return Err(StorageError::Closed {
                path: self.dir.clone(),
            });
        }
        if inner.failed {
            return Err(StorageError::Offline {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Validates and appends the batches in `records`. All or nothing: a single bad batch
    /// rejects the whole set before any byte is written.
    pub async fn append(
        self: &Rc<Self>,
        records: &[u8],
        leader_epoch: i32,
        max_batch_bytes: usize,
        now_ms: u64,
    ) -> Result<AppendInfo> {
        let mut total = 0usize;
        let mut batches = 0usize;
        // Offsets the batches take: last_offset_delta + 1 each (never negative: parse checks).
        let mut offsets = 0u64;
        let mut iter = BatchIter::new(records, true);
        for view in iter.by_ref() {
            if view.size_bytes() > max_batch_bytes {
                return Err(StorageError::BatchTooLarge {
                    size: view.size_bytes(),
                    max_bytes: max_batch_bytes,
                });
            }
            total += view.size_bytes();
            batches += 1;
            offsets += view.last_offset_delta() as u64 + 1;
        }
        if let Some(e) = iter.error() {
            return Err(StorageError::InvalidBatch {
                position: iter.consumed(),
                source: e.clone(),
            });
        }
        if batches == 0 {
            return Err(StorageError::InvalidBatch {
                position: 0,
                source: protocol::record_batch::BatchError::Truncated {
                    needed: protocol::record_batch::BATCH_HEADER_BYTES,
                    available: 0,
                },
            });
        }
        let _permit = self.lock_appends().await?;
        self.check_usable(&self.inner.borrow())?;
        let offsets_max = self
            .config
            .borrow()
            .segment_offsets_max
            .min(crate::config::SEGMENT_OFFSETS_MAX);
        if offsets > offsets_max + 1 {
            return Err(StorageError::OffsetsOverflow {
                offsets,
                max: offsets_max,
            });
        }
        let first = self.log_end_offset();
        let last = Offset(first.0.saturating_add(offsets as i64 - 1));
        self.maybe_roll(total as u64, first, last, now_ms).await?;
        self.maybe_preallocate(total as u64).await?;

        let mut inner = self.inner.borrow_mut();
        self.check_usable(&inner)?;
        if let Some(duplicate) = Self::check_producers(&inner, records, batches)? {
            return Ok(duplicate);
        }
        let base_offset = inner.next_offset;
        for view in BatchIter::new(records, false) {
            Self::append_batch(
                &mut inner,
                &self.config.borrow(),
                view,
                Some(leader_epoch),
                now_ms,
            );
        }
        let info = AppendInfo {
            base_offset,
            last_offset: Offset(inner.next_offset.0 - 1),
            end_offset: inner.next_offset,
            log_start_offset: inner.log_start_offset,
            duplicate: false,
        };
        self.mark_dirty(inner);
        Ok(info)
    }

    /// Registers the log with the group commit once per round.
    fn mark_dirty(self: &Rc<Self>, mut inner: std::cell::RefMut<'_, LogInner>) {
        if !inner.dirty {
            inner.dirty = true;
            drop(inner);
            self.commit.mark_dirty(self.clone());
        }
    }

    /// Kafka's `appendAsFollower`: stores a leader's batches at the offsets and leader
    /// epochs they carry. Nothing is assigned, stamped or re-encoded — the bytes are stored
    /// as given — but every batch's header and CRC32C are verified first, and base offsets
    /// must increase: the first batch starts at or after the log end offset, each next one
    /// after the previous one's last offset. Gaps are allowed (a compacted leader log has
    /// them). Producer state is updated from the batches without sequence or duplicate
    /// checks (the leader made them), the leader-epoch cache from their epochs. The bytes go
    /// through the same write buffers and group commit as leader appends: `end_offset` is
    /// durable once `wait_durable(end_offset)` returns.
    ///
    /// All or nothing for validation. A segment roll or fallocate failing between two
    /// batches of one call leaves the batches before it appended (the log end offset says
    /// how far), as a follower refetches from there.
    pub async fn append_as_follower(
        self: &Rc<Self>,
        records: &[u8],
        now_ms: u64,
    ) -> Result<AppendInfo> {
        let offsets_max = self
            .config
            .borrow()
            .segment_offsets_max
            .min(crate::config::SEGMENT_OFFSETS_MAX);
        let mut spans: Vec<(Offset, Offset, usize)> = Vec::new();
        let mut iter = BatchIter::new(records, true);
        let mut position = 0usize;
        for view in iter.by_ref() {
            if let Some((_, prev_last, _)) = spans.last() {
                if view.base_offset() <= prev_last.0 {
                    return Err(StorageError::InvalidBatch {
                        position,
                        source: protocol::record_batch::BatchError::UnexpectedBaseOffset {
                            expected: prev_last.0 + 1,
                            found: view.base_offset(),
                        },
                    });
                }
            }
            let offsets = view.last_offset_delta() as u64 + 1;
            if offsets > offsets_max + 1 {
                return Err(StorageError::OffsetsOverflow {
                    offsets,
                    max: offsets_max,
                });
            }
            spans.push((
                Offset(view.base_offset()),
                Offset(view.last_offset()),
                view.size_bytes(),
            ));
            position += view.size_bytes();
        }
        if let Some(e) = iter.error() {
            return Err(StorageError::InvalidBatch {
                position: iter.consumed(),
                source: e.clone(),
            });
        }
        let (Some(&(first_base, _, _)), Some(&(_, last_offset, _))) = (spans.first(), spans.last())
        else {
            return Err(StorageError::InvalidBatch {
                position: 0,
                source: protocol::record_batch::BatchError::Truncated {
                    needed: protocol::record_batch::BATCH_HEADER_BYTES,
                    available: 0,
                },
            });
        };
        let _permit = self.lock_appends().await?;
        self.check_usable(&self.inner.borrow())?;
        let end = self.log_end_offset();
        if first_base < end {
            return Err(StorageError::InvalidBatch {
                position: 0,
                source: protocol::record_batch::BatchError::UnexpectedBaseOffset {
                    expected: end.0,
                    found: first_base.0,
                },
            });
        }
        for (view, (base, last, size)) in BatchIter::new(records, false).zip(spans) {
            self.maybe_roll(size as u64, base, last, now_ms).await?;
            self.maybe_preallocate(size as u64).await?;
            let mut inner = self.inner.borrow_mut();
            self.check_usable(&inner)?;
            Self::append_batch(&mut inner, &self.config.borrow(), view, None, now_ms);
            self.mark_dirty(inner);
        }
        let inner = self.inner.borrow();
        debug_assert_eq!(inner.next_offset.0, last_offset.0.saturating_add(1));
        Ok(AppendInfo {
            base_offset: first_base,
            last_offset,
            end_offset: inner.next_offset,
            log_start_offset: inner.log_start_offset,
            duplicate: false,
        })
    }

    /// Judges idempotent batches against the producer state: `Some` for a retry of a batch
    /// already written (its original offsets), an error for a refused one. Kafka requires
    /// exactly one batch per partition when a producer id is set; so does this.
    fn check_producers(
        inner: &LogInner,
        records: &[u8],
        batches: usize,
    ) -> Result<Option<AppendInfo>> {
        let mut views = BatchIter::new(records, false);
        let Some(first) = views.next() else {
            return Ok(None);
        };
        if first.producer_id() < 0 {
            if let Some(other) = views.find(|v| v.producer_id() >= 0) {
                tracing::debug!(
                    producer_id = other.producer_id(),
                    "idempotent batch after a plain one"
                );
                return Err(ProducerError::TooManyBatches { batches }.into());
            }
            return Ok(None);
        }
        if batches > 1 {
            return Err(ProducerError::TooManyBatches { batches }.into());
        }
        match inner.producers.check(&first)? {
            ProducerCheck::Append => Ok(None),
            ProducerCheck::Duplicate(meta) if meta.last_offset >= inner.next_offset.0 => {
                // Producer state ahead of the log cannot happen; writing the batch again
                // risks a duplicate, answering with offsets that do not exist loses it.
                tracing::error!(producer_id = first.producer_id(), last_offset = meta.last_offset, log_end = %inner.next_offset, "producer state is ahead of the log; appending");
                Ok(None)
            }
            ProducerCheck::Duplicate(meta) => Ok(Some(AppendInfo {
                base_offset: Offset(meta.first_offset),
                last_offset: Offset(meta.last_offset),
                end_offset: Offset(meta.last_offset + 1),
                log_start_offset: inner.log_start_offset,
                duplicate: true,
            })),
        }
    }

    /// Copies one validated batch into the write buffer and indexes it. `leader_epoch`
    /// `Some`: a leader append — the batch gets the log end offset as its base offset and
    /// the epoch stamped (and the append time, for LogAppendTime). `None`: a follower's
    /// batch, stored byte for byte at its own offsets.
    fn append_batch(
        inner: &mut LogInner,
        config: &LogConfig,
        view: RecordBatchView<'_>,
        leader_epoch: Option<i32>,
        now_ms: u64,
    ) {
        let size = view.size_bytes();
        let base = match leader_epoch {
            Some(_) => inner.next_offset,
            None => Offset(view.base_offset()),
        };
        debug_assert!(base >= inner.next_offset);
        let LogInner {
            segments,
            write,
            pending,
            producers,
            epochs,
            epochs_dirty,
            ..
        } = inner;
        let (_, segment) = segments.iter_mut().next_back().expect("active segment");
        let w = write.as_mut().expect("write buffer");
        debug_assert_eq!(w.segment_base, segment.base_offset);
        if w.room() < size {
            let tail_pos = align_down(w.data_end());
            let tail = w.buf.as_bytes()[(tail_pos - w.file_pos) as usize..w.len].to_vec();
            let fresh = WriteBuffer::new(
                segment,
                config.write_buffer_bytes.max(tail.len() + size),
                &tail,
                tail_pos,
            );
            let full = std::mem::replace(w, fresh);
            if let Some(p) = Self::seal(full) {
                pending.push_back(p);
            }
        }
        let position = segment.size_bytes;
        debug_assert_eq!(position, w.data_end());
        let at = w.len;
        let dst = &mut w.buf.as_bytes_mut()[at..at + size];
        dst.copy_from_slice(view.as_bytes());
        if let Some(leader_epoch) = leader_epoch {
            set_base_offset(dst, base.0);
            set_partition_leader_epoch(dst, leader_epoch);
            if config.log_append_time {
                protocol::record_batch::set_log_append_time(dst, now_ms as i64);
            }
        }
        w.len += size;
        let stored = RecordBatchView::parse(dst).expect("validated batch");
        producers.record(&stored);
        if epochs.assign(stored.partition_leader_epoch(), base) {
            *epochs_dirty = true;
        }
        segment.index_append(&stored, position, config.index_interval_bytes);
        segment.size_bytes += size as u64;
        segment.next_offset = Offset(stored.last_offset().saturating_add(1));
        segment.first_append_ms.get_or_insert(now_ms);
        inner.next_offset = segment.next_offset;
        w.end_offset = inner.next_offset;
    }

    /// Turns a write buffer into a pending write (zero-padded to a whole block), or `None`
    /// when it holds nothing new.
    fn seal(mut w: WriteBuffer) -> Option<PendingWrite> {
        if w.len == w.handed_len {
            return None;
        }
        let padded = align_up(w.len as u64) as usize;
        w.buf.as_bytes_mut()[w.len..padded].fill(0);
        w.buf.trim_to_size(padded);
        Some(PendingWrite {
            segment_base: w.segment_base,
            file: w.file,
            file_pos: w.file_pos,
            data_end: w.file_pos + w.len as u64,
            buf: w.buf,
            end_offset: w.end_offset,
        })
    }

    /// Rolls to a new segment before an append of `incoming_bytes` spanning offsets
    /// `first_offset..=last_offset` when the active one would grow past `segment.bytes`, its
    /// relative offsets past `segment_offsets_max`, or it is older than `segment.ms`. The new
    /// segment's base is `first_offset` (the log end offset for a leader append; a
    /// follower's batch may start after a gap).
    async fn maybe_roll(
        &self,
        incoming_bytes: u64,
        first_offset: Offset,
        last_offset: Offset,
        now_ms: u64,
    ) -> Result<()> {
        let next_base = {
            let inner = self.inner.borrow();
            let seg = inner.segments.values().next_back().expect("active segment");
            let config = self.config.borrow();
            let limit = config.segment_bytes.min(SEGMENT_BYTES_MAX);
            let too_big = seg.size_bytes > 0 && seg.size_bytes + incoming_bytes > limit;
            // The last incoming offset, relative to the segment's base, must fit (a segment
            // based at the incoming batch always takes it: the caller checked its span).
            let offsets_max = config
                .segment_offsets_max
                .min(crate::config::SEGMENT_OFFSETS_MAX);
            let relative_last = last_offset.0.saturating_sub(seg.base_offset.0).max(0) as u64;
            let too_many_offsets = first_offset > seg.base_offset && relative_last > offsets_max;
            let too_old = seg
                .first_append_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= config.segment_ms);
            if !(too_big || too_many_offsets || too_old) {
                return Ok(());
            }
            debug_assert!(first_offset >= inner.next_offset);
            first_offset
        };
        let segment = LogSegment::create(&self.dir, next_base).await?;
        tracing::debug!(dir = %self.dir.display(), base = %next_base, "rolled segment");
        let snapshot = {
            let mut inner = self.inner.borrow_mut();
            inner
                .producers
                .expire(now_ms, self.config.borrow().producer_id_expiration_ms);
            // Every batch below `next_base` has been appended. A crash that loses some of them
            // leaves the log ending below `next_base`, and recovery then skips this snapshot.
            let snapshot = inner.producers.encode_snapshot(next_base);
            let fresh = WriteBuffer::new(&segment, self.config.borrow().write_buffer_bytes, &[], 0);
            if let Some(old) = inner.write.replace(fresh) {
                if let Some(p) = Self::seal(old) {
                    inner.pending.push_back(p);
                }
            }
            if let Some((_, old)) = inner.segments.iter_mut().next_back() {
                old.sealed = true;
            }
            inner.segments.insert(next_base.0, segment);
            snapshot
        };
        self.write_producer_snapshot(snapshot, next_base).await;
        Ok(())
    }

    async fn maybe_preallocate(&self, incoming_bytes: u64) -> Result<()> {
        let (file, path, target) = {
            let inner = self.inner.borrow();
            let seg = inner.segments.values().next_back().expect("active segment");
            let need = align_up(seg.size_bytes + incoming_bytes);
            if need <= seg.preallocated_bytes || self.config.borrow().preallocate_bytes == 0 {
                return Ok(());
            }
            let step = self.config.borrow().preallocate_bytes;
            let target = need.div_ceil(step) * step;
            (seg.file.clone(), seg.path.clone(), target)
        };
        // The space is reserved before anything is written, so a full disk refuses the
        // append here, cleanly: nothing was written, the log stays usable (reads go on,
        // appends succeed again once space is freed). A full step may not fit when what
        // this append needs would: try that before refusing.
        let need = {
            let inner = self.inner.borrow();
            let seg = inner.segments.values().next_back().expect("active segment");
            align_up(seg.size_bytes + incoming_bytes)
        };
        let mut reserved = target;
        if let Err(e) = self.allocate(&file, &path, target).await {
            if need >= target {
                return Err(StorageError::io("fallocate segment", &path, e));
            }
            self.allocate(&file, &path, need)
                .await
                .map_err(|e| StorageError::io("fallocate segment", &path, e))?;
            reserved = need;
        }
        let mut inner = self.inner.borrow_mut();
        if let Some(seg) = inner.segments.values_mut().next_back() {
            seg.preallocated_bytes = seg.preallocated_bytes.max(reserved);
        }
        Ok(())
    }

    /// fallocate(KEEP_SIZE) through the fault seam.
    async fn allocate(&self, file: &DmaFile, path: &Path, len: u64) -> std::io::Result<()> {
        let op = IoOp::Allocate {
            path: path.to_owned(),
            len,
        };
        crate::fault::apply(self.faults.as_ref(), op).await?;
        file.pre_allocate(len, true).await.map_err(Into::into)
    }

    /// Writes and fdatasyncs everything appended so far (and the leader-epoch checkpoint
    /// when it changed, before anything it covers is acknowledged); called by
    /// [`GroupCommit`] and `close`, one flush at a time per log.
    pub(crate) async fn flush(self: &Rc<Self>) -> Result<()> {
        let _flushing = self.lock_flushes().await?;
        let job: Vec<PendingWrite> = {
            let mut inner = self.inner.borrow_mut();
            inner.dirty = false;
            if let Some(w) = inner.write.as_mut() {
                if w.len > w.handed_len {
                    let tail_pos = align_down(w.data_end());
                    let tail = w.buf.as_bytes()[(tail_pos - w.file_pos) as usize..w.len].to_vec();
                    let seg_base = w.segment_base;
                    let seg = inner
                        .segments
                        .get(&seg_base.0)
                        .expect("segment of write buffer");
                    let mut fresh = WriteBuffer::new(
                        seg,
                        self.config.borrow().write_buffer_bytes,
                        &tail,
                        tail_pos,
                    );
                    fresh.end_offset = inner.write.as_ref().expect("write").end_offset;
                    let old = inner.write.replace(fresh).expect("write");
                    if let Some(p) = Self::seal(old) {
                        inner.pending.push_back(p);
                    }
                }
            }
            inner.pending.drain(..).collect()
        };
        let Some(last) = job.last() else {
            return Ok(());
        };
        let end_offset = last.end_offset;
        // Every epoch these batches started is in the cache already; after the data is
        // durable the file gets it too, before anything is acknowledged (a write in flight
        // elsewhere is waited for, not trusted blindly). After, not alongside: the file
        // never names a batch that is not on disk, so at open an entry at the log start is
        // a floor entry, never the epoch of a lost batch.
        let result = match self.write_and_sync(job).await {
            Ok(done) => self.persist_epochs_if_dirty().await.map(|()| done),
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => {
                let sealed: Vec<i64> = {
                    let mut inner = self.inner.borrow_mut();
                    let mut sealed = Vec::new();
                    for (base, data_end) in done {
                        if let Some(seg) = inner.segments.get_mut(&base.0) {
                            seg.durable_bytes = seg.durable_bytes.max(data_end);
                            if seg.sealed
                                && !seg.indexes_persisted
                                && seg.durable_bytes == seg.size_bytes
                            {
                                sealed.push(base.0);
                            }
                        }
                    }
                    sealed
                };
                // Before the acknowledgement, so that a later truncation (which waits for
                // it) never races an index write.
                for base in sealed {
                    self.persist_segment_indexes(base).await;
                }
                let mut inner = self.inner.borrow_mut();
                inner.durable_offset = inner.durable_offset.max(end_offset);
                drop(inner);
                self.durable.notify(usize::MAX);
                Ok(())
            }
            Err(e) => {
                let mut inner = self.inner.borrow_mut();
                // After a failed write or fdatasync the page state is unknown (fsyncgate):
                // the log goes offline rather than risk acknowledging lost data.
                inner.failed = true;
                drop(inner);
                tracing::error!(dir = %self.dir.display(), error = %e, "log write failed; log is offline");
                self.durable.notify(usize::MAX);
                Err(e)
            }
        }
    }

    /// Writes a segment's index files off the shard thread (best effort: indexes missing
    /// at the next open are rebuilt).
    async fn persist_segment_indexes(&self, base: i64) {
        let files = {
            let inner = self.inner.borrow();
            let Some(seg) = inner.segments.get(&base) else {
                return;
            };
            let paths = seg.index_paths();
            [
                (
                    "write offset index",
                    paths[0].clone(),
                    seg.offset_index.encode(),
                ),
                (
                    "write time index",
                    paths[1].clone(),
                    seg.time_index.encode(),
                ),
            ]
        };
        for (op, path, bytes) in files {
            if let Err(e) = files::write_atomically(op, &path, bytes).await {
                tracing::warn!(error = %e, "cannot persist segment indexes");
                return;
            }
        }
        if let Some(seg) = self.inner.borrow_mut().segments.get_mut(&base) {
            seg.indexes_persisted = true;
        }
    }

    /// Writes the leader-epoch checkpoint as the cache is now, off the shard thread.
    async fn persist_epochs(&self) -> Result<()> {
        self.write_epochs(false).await
    }

    /// Waits for a checkpoint write in flight, then writes the cache if it changed since
    /// the last write began: on return every epoch assigned before the call is on disk.
    async fn persist_epochs_if_dirty(&self) -> Result<()> {
        self.write_epochs(true).await
    }

    async fn write_epochs(&self, only_if_dirty: bool) -> Result<()> {
        let _writing =
            self.checkpoint_lock
                .acquire_permit(1)
                .await
                .map_err(|_| StorageError::Closed {
                    path: self.dir.clone(),
                })?;
        if only_if_dirty && !self.inner.borrow().epochs_dirty {
            return Ok(());
        }
        let bytes = {
            let mut inner = self.inner.borrow_mut();
            inner.epochs_dirty = false;
            inner.epochs.encode()
        };
        let path = self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let written = files::write_atomically("write leader-epoch checkpoint", &path, bytes).await;
        if written.is_err() {
            self.inner.borrow_mut().epochs_dirty = true;
        }
        written
    }

    /// Writes the pending buffers in order and fdatasyncs each file touched. Returns the
    /// durable data end per segment.
    async fn write_and_sync(&self, job: Vec<PendingWrite>) -> Result<Vec<(Offset, u64)>> {
        let mut done: Vec<(Offset, u64, Rc<DmaFile>)> = Vec::new();
        for w in job {
            let expected = w.buf.len();
            let path = self.dir.join(segment_file_name(w.segment_base, "log"));
            let op = IoOp::Write {
                path: path.clone(),
                position: w.file_pos,
                len: expected,
            };
            let torn = crate::fault::apply(self.faults.as_ref(), op)
                .await
                .map_err(|e| StorageError::io("write segment", &path, e))?;
            if let Some(keep_bytes) = torn {
                return Err(Self::torn_write(&w, keep_bytes, &path).await);
            }
            let written = w
                .file
                .write_at(w.buf, w.file_pos)
                .await
                .map_err(|e| StorageError::io("write segment", &path, e))?;
            if written != expected {
                return Err(StorageError::io(
                    "write segment",
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write: {written} of {expected} bytes"),
                    ),
                ));
            }
            match done.last_mut() {
                Some((base, end, _)) if *base == w.segment_base => *end = w.data_end,
                _ => done.push((w.segment_base, w.data_end, w.file.clone())),
            }
        }
        for (base, _, file) in &done {
            let path = self.dir.join(segment_file_name(*base, "log"));
            crate::fault::apply(self.faults.as_ref(), IoOp::Sync { path: path.clone() })
                .await
                .map_err(|e| StorageError::io("fdatasync segment", &path, e))?;
            let started = std::time::Instant::now();
            let synced = file.fdatasync().await;
            self.commit.observe_sync(started.elapsed());
            synced.map_err(|e| {
                StorageError::io(
                    "fdatasync segment",
                    self.dir.join(segment_file_name(*base, "log")),
                    e,
                )
            })?;
        }
        Ok(done.into_iter().map(|(b, e, _)| (b, e)).collect())
    }

    /// An injected torn write: the first `keep_bytes` (whole blocks) of the buffer reach
    /// the file, then the write fails, as if the process died in the middle of it.
    async fn torn_write(w: &PendingWrite, keep_bytes: usize, path: &Path) -> StorageError {
        let keep = align_down(keep_bytes.min(w.buf.len()) as u64) as usize;
        if keep > 0 {
            let mut part = w.file.alloc_dma_buffer(keep);
            part.as_bytes_mut()
                .copy_from_slice(&w.buf.as_bytes()[..keep]);
            if let Err(e) = w.file.write_at(part, w.file_pos).await {
                return StorageError::io("write segment", path, e);
            }
        }
        StorageError::io(
            "write segment",
            path,
            std::io::Error::other(format!(
                "injected torn write: {keep} of {} bytes written",
                w.buf.len()
            )),
        )
    }

    /// Waits until every offset below `end_offset` is durable.
    pub async fn wait_durable(&self, end_offset: Offset) -> Result<()> {
        loop {
            {
                let inner = self.inner.borrow();
                if inner.durable_offset >= end_offset {
                    return Ok(());
                }
                self.check_usable(&inner)?;
            }
            let listener = self.durable.listen();
            {
                let inner = self.inner.borrow();
                if inner.durable_offset >= end_offset {
                    return Ok(());
                }
                self.check_usable(&inner)?;
            }
            listener.await;
        }
    }

    /// A listener that fires when the durable offset advances (for fetch long-polls).
    pub fn listen_durable(&self) -> EventListener {
        self.durable.listen()
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (but at least one batch when `min_one`). Only durable data is returned.
    pub async fn read(&self, offset: Offset, max_bytes: usize, min_one: bool) -> Result<ReadInfo> {
        let mut target = offset;
        loop {
            let (file, path, mut pos, limit, hw, start) = {
                let inner = self.inner.borrow();
                self.check_usable(&inner)?;
                let hw = inner.durable_offset;
                let start = inner.log_start_offset;
                if offset < start || offset > inner.next_offset {
                    return Err(StorageError::OffsetOutOfRange {
                        offset,
                        log_start: start,
                        log_end: inner.next_offset,
                    });
                }
                if target >= hw {
                    return Ok(ReadInfo {
                        records: Bytes::new(),
                        durable_offset: hw,
                        log_start_offset: start,
                    });
                }
                let Some((_, seg)) = inner.segments.range(..=target.0).next_back() else {
                    // Below the first segment (the log start is never there; kept for
                    // safety): read from the first segment on.
                    match inner.segments.keys().next() {
                        Some(&base) if base > target.0 => {
                            target = Offset(base);
                            continue;
                        }
                        _ => {
                            return Ok(ReadInfo {
                                records: Bytes::new(),
                                durable_offset: hw,
                                log_start_offset: start,
                            })
                        }
                    }
                };
                if target >= seg.next_offset {
                    // Past this segment: continue with the next one.
                    match inner.segments.range(target.0 + 1..).next() {
                        Some((base, _)) => {
                            target = Offset(*base);
                            continue;
                        }
                        None => {
                            return Ok(ReadInfo {
                                records: Bytes::new(),
                                durable_offset: hw,
                                log_start_offset: start,
                            })
                        }
                    }
                }
                let rel = crate::segment::relative_offset(target.0, seg.base_offset);
                let pos = seg.offset_index.lookup(rel).position as u64;
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    pos,
                    seg.durable_bytes,
                    hw,
                    start,
                )
            };
            let window = max_bytes.max(READ_WINDOW_MIN_BYTES)
                + self.config.borrow().index_interval_bytes as usize;
            while pos < limit {
                let len = window.min((limit - pos) as usize);
                let data = file
                    .read_at(pos, len)
                    .await
                    .map_err(|e| StorageError::io("read segment", &path, e))?;
                let mut skipped = 0usize;
                let mut first: Option<usize> = None;
                let mut end = 0usize;
                for view in BatchIter::new(&data, false) {
                    let size = view.size_bytes();
                    match first {
                        None if view.last_offset() < target.0 => skipped += size,
                        None => {
                            first = Some(skipped);
                            end = skipped + size;
                        }
                        Some(f) => {
                            if end - f + size > max_bytes {
                                break;
                            }
                            end += size;
                        }
                    }
                }
                match first {
                    Some(f) if !min_one && end - f > max_bytes => {
                        return Ok(ReadInfo {
                            records: Bytes::new(),
                            durable_offset: hw,
                            log_start_offset: start,
                        })
                    }
                    Some(f) => {
                        return Ok(ReadInfo {
                            records: Bytes::copy_from_slice(&data[f..end]),
                            durable_offset: hw,
                            log_start_offset: start,
                        })
                    }
                    None if skipped > 0 => pos += skipped as u64,
                    None => {
                        // The batch at `pos` does not fit in the window: read it whole.
                        let size = match protocol::record_batch::batch_size_from_prefix(&data) {
                            Some(Ok(size)) if pos + size as u64 <= limit => size,
                            _ => break,
                        };
                        let whole = file
                            .read_at(pos, size)
                            .await
                            .map_err(|e| StorageError::io("read segment", &path, e))?;
                        let view = RecordBatchView::parse(&whole).map_err(|e| {
                            StorageError::InvalidBatch {
                                position: pos as usize,
                                source: e,
                            }
                        })?;
                        if view.last_offset() < target.0 {
                            pos += size as u64;
                            continue;
                        }
                        if !min_one && size > max_bytes {
                            return Ok(ReadInfo {
                                records: Bytes::new(),
                                durable_offset: hw,
                                log_start_offset: start,
                            });
                        }
                        return Ok(ReadInfo {
                            records: Bytes::copy_from_slice(&whole),
                            durable_offset: hw,
                            log_start_offset: start,
                        });
                    }
                }
            }
            // Nothing at or after `target` in this segment's durable bytes.
            return Ok(ReadInfo {
                records: Bytes::new(),
                durable_offset: hw,
                log_start_offset: start,
            });
        }
    }

    /// For ListOffsets by time: a copy of the first batch whose max timestamp is at or after
    /// `timestamp`, or `None` when no batch reaches it. The caller looks inside the batch for
    /// the first such record.
    pub async fn batch_for_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>> {
        let candidates: Vec<(Rc<DmaFile>, PathBuf, u64, u64)> = {
            let inner = self.inner.borrow();
            self.check_usable(&inner)?;
            inner
                .segments
                .values()
                .filter(|seg| seg.max_timestamp >= timestamp)
                .map(|seg| {
                    let rel = seg.time_index.scan_start(timestamp);
                    let pos = seg.offset_index.lookup(rel).position as u64;
                    (seg.file.clone(), seg.path.clone(), pos, seg.durable_bytes)
                })
                .collect()
        };
        for (file, path, pos, limit) in candidates {
            let found = find_batch(
                &file,
                &path,
                pos,
                limit,
                READ_WINDOW_MIN_BYTES * 4,
                |view| {
                    (view.max_timestamp() >= timestamp)
                        .then(|| Bytes::copy_from_slice(view.as_bytes()))
                },
            )
            .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Deletes the oldest whole segments that `retention.ms` (newest record older than that)
    /// or `retention.bytes` (the log is larger than that without them) no longer keep. The
    /// active segment and anything not yet durable stay. Returns the segments deleted.
    pub async fn enforce_retention(&self, now_ms: u64) -> Result<usize> {
        let (retention_ms, retention_bytes) = {
            let c = self.config.borrow();
            (c.retention_ms, c.retention_bytes)
        };
        if retention_ms < 0 && retention_bytes < 0 {
            return Ok(0);
        }
        let _permit = self.lock_appends().await?;
        let removed = {
            let mut inner = self.inner.borrow_mut();
            self.check_usable(&inner)?;
            let mut total: u64 = inner.segments.values().map(|s| s.size_bytes).sum();
            let mut removed = Vec::new();
            while inner.segments.len() > 1 {
                let (&base, seg) = inner.segments.iter().next().expect("non-empty");
                let too_old = retention_ms >= 0
                    && seg.max_timestamp >= 0
                    && (now_ms as i64).saturating_sub(seg.max_timestamp) > retention_ms;
                let too_big = retention_bytes >= 0
                    && total.saturating_sub(seg.size_bytes) >= retention_bytes as u64;
                if !(too_old || too_big) || seg.next_offset > inner.durable_offset {
                    break;
                }
                total -= seg.size_bytes;
                removed.push(inner.segments.remove(&base).expect("present"));
            }
            if let Some(&first) = inner.segments.keys().next() {
                inner.log_start_offset = inner.log_start_offset.max(Offset(first));
            }
            removed
        };
        self.after_start_moved(&removed, "retention").await;
        Ok(removed.len())
    }

    /// After the log start moved up: trims the leader-epoch cache from the start and
    /// removes the files of the segments dropped. Both best effort: the next open trims the
    /// cache again, and a segment file left behind is below the start and deleted again.
    async fn after_start_moved(&self, removed: &[LogSegment], why: &'static str) {
        let changed = {
            let mut inner = self.inner.borrow_mut();
            let start = inner.log_start_offset;
            inner.epochs.truncate_from_start(start)
        };
        if changed {
            if let Err(e) = self.persist_epochs().await {
                tracing::warn!(error = %e, "cannot write the leader-epoch checkpoint");
            }
        }
        for seg in removed {
            tracing::info!(segment = %seg.path.display(), why, "segment deleted");
            if let Err(e) = files::remove_files("remove segment", seg.file_paths()).await {
                tracing::warn!(error = %e, "cannot remove segment file");
            }
        }
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1: the high watermark),
    /// persists it, and deletes the segments whose successor starts at or below it (Kafka's
    /// rule). Returns the new start.
    pub async fn delete_records(&self, offset: i64) -> Result<Offset> {
        let _permit = self.lock_appends().await?;
        let target = {
            let inner = self.inner.borrow();
            self.check_usable(&inner)?;
            let hw = inner.durable_offset;
            let target = if offset < 0 { hw } else { Offset(offset) };
            if target > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset: target,
                    log_start: inner.log_start_offset,
                    log_end: hw,
                });
            }
            if target <= inner.log_start_offset {
                return Ok(inner.log_start_offset);
            }
            target
        };
        let path = self.dir.join(LOG_START_OFFSET_FILE);
        files::write_atomically(
            "write log start offset",
            &path,
            target.0.to_string().into_bytes(),
        )
        .await?;
        let (start, removed) = {
            let mut inner = self.inner.borrow_mut();
            inner.log_start_offset = target;
            // Kafka's rule: a segment goes when the next one starts at or below the new
            // start. Without gaps that is the same as "ends at or below it"; with a gap
            // after a segment it keeps the segment, so that the start never lies below the
            // first segment's base (a reopen computes the start from both).
            let mut removed = Vec::new();
            while let Some(&second) = inner.segments.keys().nth(1) {
                if second > target.0 {
                    break;
                }
                let (&base, _) = inner.segments.iter().next().expect("non-empty");
                removed.push(inner.segments.remove(&base).expect("present"));
            }
            (target, removed)
        };
        self.after_start_moved(&removed, "delete records").await;
        Ok(start)
    }

    /// Flushes what is buffered and stops accepting appends.
    pub async fn close(self: &Rc<Self>) -> Result<()> {
        let _permit = self.append_lock.acquire_permit(1).await;
        let result = self.flush().await;
        // Wait for a group-commit flush still running; none starts after this.
        let _flushing = self.flush_lock.acquire_permit(1).await;
        let (snapshot, bases, epochs_dirty) = {
            let mut inner = self.inner.borrow_mut();
            inner.closed = true;
            let end = inner.next_offset;
            (
                result
                    .is_ok()
                    .then(|| (inner.producers.encode_snapshot(end), end)),
                inner.segments.keys().copied().collect::<Vec<_>>(),
                inner.epochs_dirty,
            )
        };
        if let Some((bytes, end)) = snapshot {
            self.write_producer_snapshot(bytes, end).await;
        }
        if epochs_dirty && result.is_ok() {
            if let Err(e) = self.persist_epochs_if_dirty().await {
                tracing::warn!(error = %e, "cannot write the leader-epoch checkpoint on close");
            }
        }
        for base in bases {
            self.persist_segment_indexes(base).await;
        }
        self.append_lock.close();
        self.durable.notify(usize::MAX);
        result
    }

    /// Closes the log and removes its directory.
    pub async fn delete(self: &Rc<Self>) -> Result<()> {
        let paths: Vec<PathBuf> = {
            let mut inner = self.inner.borrow_mut();
            inner.closed = true;
            inner.pending.clear();
            inner
                .segments
                .values()
                .flat_map(|seg| seg.file_paths())
                .collect()
        };
        self.append_lock.close();
        self.durable.notify(usize::MAX);
        // Segment files first, so that a crash in between leaves no half-deleted log that
        // looks whole; a failure here is repeated by `remove_dir_all` anyway.
        let _ = files::remove_files("remove segment", paths).await;
        files::remove_dir_all(&self.dir).await
    }
}

/// Producer snapshots in `dir`, oldest first.
fn list_producer_snapshots(dir: &Path) -> Result<Vec<(Offset, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list log dir", dir, e))?;
        let name = entry.file_name();
        if let Some(offset) = name
            .to_string_lossy()
            .strip_suffix(".snapshot")
            .and_then(|stem| stem.parse::<i64>().ok())
        {
            out.push((Offset(offset), entry.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The newest producer snapshot at or below `end` that decodes, off the shard thread;
/// snapshots beyond `end` and damaged ones are removed.
async fn load_producer_snapshot(
    dir: &Path,
    end: Offset,
) -> Result<Option<(Offset, ProducerStateManager)>> {
    let dir = dir.to_owned();
    glommio::executor()
        .spawn_blocking(move || {
            let mut loaded = None;
            for (offset, path) in list_producer_snapshots(&dir)?.into_iter().rev() {
                let decoded = (offset <= end)
                    .then(|| std::fs::read(&path).ok())
                    .flatten()
                    .and_then(|b| ProducerStateManager::decode_snapshot(&b));
                match decoded {
                    Some((o, state)) if o == offset && loaded.is_none() => {
                        loaded = Some((o, state))
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(path = %path.display(), %end, "discarding producer snapshot");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Ok(loaded)
        })
        .await
}

/// Where to read batch headers from to replay producer state from offset `from`: per
/// segment that holds offsets at or after it, the file and the byte range.
fn replay_ranges(
    segments: &BTreeMap<i64, LogSegment>,
    from: Offset,
) -> Vec<(Rc<DmaFile>, PathBuf, u64, u64)> {
    segments
        .values()
        .filter(|seg| seg.next_offset > from)
        .map(|seg| {
            let start = if from > seg.base_offset {
                let rel = crate::segment::relative_offset(from.0, seg.base_offset);
                seg.offset_index.lookup(rel).position as u64
            } else {
                0
            };
            (seg.file.clone(), seg.path.clone(), start, seg.size_bytes)
        })
        .collect()
}

/// Records every batch ending at or after `from` in `ranges` into `producers`.
async fn replay_producers(
    mut producers: ProducerStateManager,
    ranges: Vec<(Rc<DmaFile>, PathBuf, u64, u64)>,
    from: Offset,
) -> Result<ProducerStateManager> {
    for (file, path, start, limit) in ranges {
        find_batch(
            &file,
            &path,
            start,
            limit,
            READ_WINDOW_MIN_BYTES * 16,
            |view| {
                if view.last_offset() >= from.0 {
                    producers.record(view);
                }
                None::<()>
            },
        )
        .await?;
    }
    Ok(producers)
}

/// The leader-epoch cache at open: the checkpoint file, or when it is missing or unreadable
/// a rebuild from every batch header; then reconciled with the recovered log (entries at or
/// after `end` dropped, epochs seen by the recovery scan added, the start trimmed to
/// `start`). Returns whether the file must be rewritten.
async fn recover_epochs(
    dir: &Path,
    segments: &BTreeMap<i64, LogSegment>,
    start: Offset,
    end: Offset,
) -> Result<(LeaderEpochFileCache, bool)> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
    let loaded = files::read_optional(&path)
        .await
        .and_then(|b| LeaderEpochFileCache::decode(&b));
    let (mut cache, mut changed) = match loaded {
        Some(cache) => (cache, false),
        None => {
            // A new log has no checkpoint yet and nothing to rebuild: not worth a line.
            if end > start {
                tracing::info!(path = %path.display(), "leader-epoch checkpoint missing or unreadable; rebuilding from the log");
            }
            (rebuild_epochs(whole_segments(segments)).await?, true)
        }
    };
    // Epochs the file may lack: batches made durable by a flush that died before writing
    // it (never acknowledged). Only what lies at or after the log start counts, as if the
    // cache had been trimmed from the start: a run of an epoch reaching past the start
    // starts there at the earliest; runs wholly below it were trimmed away on purpose.
    for seg in segments.values() {
        for (epoch, first, last) in &seg.recovered_epochs {
            if *last >= start {
                changed |= cache.assign(*epoch, (*first).max(start));
            }
        }
    }
    // Entries at or after the end of the last batch describe batches that are gone (a lost
    // tail). The end of the last batch, not the log end offset: an empty segment a roll
    // created for a lost batch must not keep an epoch alive. Except that an entry at the log
    // start survives when the log shows nothing: trimming from the start puts the floor
    // entry there, and the end trim, which only a reopen applies after it, must not drop
    // it. (The file is written after the data is durable, so it never names a batch that
    // did not reach the disk; an entry at the start is such a floor entry.)
    let batches_end = segments
        .values()
        .rev()
        .find(|seg| seg.size_bytes > 0)
        .map_or(end, |seg| seg.next_offset)
        .min(end);
    let end_trim = if batches_end <= start {
        Offset(start.0 + 1)
    } else {
        batches_end
    };
    changed |= cache.truncate_from_end(end_trim);
    changed |= cache.truncate_from_start(start);
    Ok((cache, changed))
}

/// Every segment's file and byte range, for a walk of all batch headers.
fn whole_segments(segments: &BTreeMap<i64, LogSegment>) -> Vec<(Rc<DmaFile>, PathBuf, u64, u64)> {
    segments
        .values()
        .map(|seg| (seg.file.clone(), seg.path.clone(), 0, seg.size_bytes))
        .collect()
}

/// The leader-epoch cache of the batches in `ranges`, from their headers. The caller trims
/// it to the log's end and start (in that order, as open does).
async fn rebuild_epochs(
    ranges: Vec<(Rc<DmaFile>, PathBuf, u64, u64)>,
) -> Result<LeaderEpochFileCache> {
    let mut cache = LeaderEpochFileCache::default();
    for (file, path, start, limit) in ranges {
        find_batch(
            &file,
            &path,
            start,
            limit,
            READ_WINDOW_MIN_BYTES * 16,
            |view| {
                cache.assign(view.partition_leader_epoch(), Offset(view.base_offset()));
                None::<()>
            },
        )
        .await?;
    }
    Ok(cache)
}

/// Calls `f` on the whole batches of `file` between byte positions `start` and `limit`, in
/// order, reading `window_bytes` at a time, until `f` returns `Some`.
async fn find_batch<T>(
    file: &DmaFile,
    path: &Path,
    start: u64,
    limit: u64,
    window_bytes: usize,
    mut f: impl FnMut(&RecordBatchView<'_>) -> Option<T>,
) -> Result<Option<T>> {
    let mut pos = start;
    while pos < limit {
        let len = window_bytes.min((limit - pos) as usize);
        let data = file
            .read_at(pos, len)
            .await
            .map_err(|e| StorageError::io("read segment", path, e))?;
        let mut consumed = 0usize;
        for view in BatchIter::new(&data, false) {
            if let Some(found) = f(&view) {
                return Ok(Some(found));
            }
            consumed += view.size_bytes();
        }
        if consumed == 0 {
            // One batch larger than the window: read it whole.
            let Some(Ok(size)) = protocol::record_batch::batch_size_from_prefix(&data) else {
                break;
            };
            let whole = file
                .read_at(pos, size)
                .await
                .map_err(|e| StorageError::io("read segment", path, e))?;
            if let Ok(view) = RecordBatchView::parse(&whole) {
                if let Some(found) = f(&view) {
                    return Ok(Some(found));
                }
            }
            consumed = size;
        }
        pos += consumed as u64;
    }
    Ok(None)
}
