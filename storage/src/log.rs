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
//! Read path. [`Log::read`] serves only durable bytes: the index finds a position at or
//! before the wanted offset, whole batches are read from the file and returned as stored.

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
use crate::group_commit::GroupCommit;
use crate::producer_state::{ProducerCheck, ProducerError, ProducerStateManager};
use crate::segment::{align_down, align_up, segment_file_name, LogSegment};
use crate::{LogConfig, Offset};

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
    pub high_watermark: Offset,
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
}

/// The log start offset DeleteRecords set (absent until it is used).
const LOG_START_OFFSET_FILE: &str = "log-start-offset";

pub struct Log {
    dir: PathBuf,
    config: RefCell<LogConfig>,
    inner: RefCell<LogInner>,
    append_lock: Semaphore,
    durable: Event,
    commit: Rc<GroupCommit>,
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(dir: &Path, config: LogConfig, commit: Rc<GroupCommit>) -> Result<Rc<Log>> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create log dir", dir, e))?;
        crate::segment::prime_iopoll_probe(dir).await?;
        let mut bases = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list log dir", dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
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
        let last = segments.values().next_back().expect("one segment");
        let next_offset = last.next_offset;
        // DeleteRecords may have moved the start into the first segment.
        let persisted_start = std::fs::read_to_string(dir.join(LOG_START_OFFSET_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let log_start_offset = Offset(
            (*segments.keys().next().expect("one segment"))
                .max(persisted_start)
                .min(next_offset.0),
        );
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
        tracing::debug!(dir = %dir.display(), %log_start_offset, %next_offset, segments = segments.len(), producers = producers.len(), "log opened");
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
            }),
            append_lock: Semaphore::new(1),
            durable: Event::new(),
            commit,
        }))
    }

    /// Rebuilds producer state: the newest snapshot at or below the recovered end `end`,
    /// then the batch headers from its offset to `end`. Snapshots beyond `end` describe
    /// batches a crash lost and are removed, as are damaged ones.
    async fn recover_producers(
        dir: &Path,
        segments: &BTreeMap<i64, LogSegment>,
        end: Offset,
    ) -> Result<ProducerStateManager> {
        let mut loaded = None;
        for (offset, path) in list_producer_snapshots(dir)?.into_iter().rev() {
            let decoded = (offset <= end)
                .then(|| std::fs::read(&path).ok())
                .flatten()
                .and_then(|b| ProducerStateManager::decode_snapshot(&b));
            match decoded {
                Some((o, state)) if o == offset && loaded.is_none() => loaded = Some((o, state)),
                Some(_) => {}
                None => {
                    tracing::warn!(path = %path.display(), %end, "discarding producer snapshot");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let first_base = Offset(*segments.keys().next().unwrap_or(&0));
        let (from, mut producers) =
            loaded.unwrap_or_else(|| (first_base, ProducerStateManager::default()));
        let from = from.max(first_base);
        for seg in segments.values() {
            if seg.next_offset <= from {
                continue;
            }
            let start = if from > seg.base_offset {
                let rel = (from.0 - seg.base_offset.0) as u32;
                seg.offset_index.lookup(rel).position as u64
            } else {
                0
            };
            let window = READ_WINDOW_MIN_BYTES * 16;
            find_batch(
                &seg.file,
                &seg.path,
                start,
                seg.size_bytes,
                window,
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

    /// Writes the producer state as of `offset` (best effort: a missing snapshot only means
    /// a longer replay at the next start).
    fn write_producer_snapshot(&self, producers: &ProducerStateManager, offset: Offset) {
        let path = self.dir.join(segment_file_name(offset, "snapshot"));
        if let Err(e) =
            crate::index::write_file_atomically(&path, &producers.encode_snapshot(offset))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write producer snapshot");
            return;
        }
        if let Ok(all) = list_producer_snapshots(&self.dir) {
            let keep_from = all.len().saturating_sub(PRODUCER_SNAPSHOTS_KEPT);
            for (_, old) in &all[..keep_from] {
                let _ = std::fs::remove_file(old);
            }
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
        self.maybe_roll(total as u64, now_ms).await?;
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
                leader_epoch,
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
        if !inner.dirty {
            inner.dirty = true;
            drop(inner);
            self.commit.mark_dirty(self.clone());
        }
        Ok(info)
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

    fn append_batch(
        inner: &mut LogInner,
        config: &LogConfig,
        view: RecordBatchView<'_>,
        leader_epoch: i32,
        now_ms: u64,
    ) {
        let size = view.size_bytes();
        let base = inner.next_offset;
        let LogInner {
            segments,
            write,
            pending,
            producers,
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
        set_base_offset(dst, base.0);
        set_partition_leader_epoch(dst, leader_epoch);
        if config.log_append_time {
            protocol::record_batch::set_log_append_time(dst, now_ms as i64);
        }
        w.len += size;
        let stored = RecordBatchView::parse(dst).expect("validated batch");
        producers.record(&stored);
        segment.index_append(&stored, position, config.index_interval_bytes);
        segment.size_bytes += size as u64;
        segment.next_offset = Offset(stored.last_offset() + 1);
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

    async fn maybe_roll(&self, incoming_bytes: u64, now_ms: u64) -> Result<()> {
        let next_base = {
            let inner = self.inner.borrow();
            let seg = inner.segments.values().next_back().expect("active segment");
            let limit = self.config.borrow().segment_bytes.min(SEGMENT_BYTES_MAX);
            let too_big = seg.size_bytes > 0 && seg.size_bytes + incoming_bytes > limit;
            let too_old = seg
                .first_append_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.borrow().segment_ms);
            if !(too_big || too_old) {
                return Ok(());
            }
            inner.next_offset
        };
        let segment = LogSegment::create(&self.dir, next_base).await?;
        tracing::debug!(dir = %self.dir.display(), base = %next_base, "rolled segment");
        let mut inner = self.inner.borrow_mut();
        inner
            .producers
            .expire(now_ms, self.config.borrow().producer_id_expiration_ms);
        // Every batch below `next_base` has been appended. A crash that loses some of them
        // leaves the log ending below `next_base`, and recovery then skips this snapshot.
        self.write_producer_snapshot(&inner.producers, next_base);
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
        if let Err(e) = file.pre_allocate(target, true).await {
            if need >= target {
                return Err(StorageError::io("fallocate segment", &path, e));
            }
            file.pre_allocate(need, true)
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

    /// Writes and fdatasyncs everything appended so far; called by [`GroupCommit`] only, one
    /// round at a time per log.
    pub(crate) async fn flush(self: &Rc<Self>) -> Result<()> {
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
        let result = self.write_and_sync(job).await;
        let mut inner = self.inner.borrow_mut();
        match result {
            Ok(done) => {
                for (base, data_end) in done {
                    if let Some(seg) = inner.segments.get_mut(&base.0) {
                        seg.durable_bytes = seg.durable_bytes.max(data_end);
                        if seg.sealed
                            && !seg.indexes_persisted
                            && seg.durable_bytes == seg.size_bytes
                        {
                            if let Err(e) = seg.persist_indexes() {
                                tracing::warn!(error = %e, "cannot persist sealed segment indexes");
                            }
                        }
                    }
                }
                inner.durable_offset = inner.durable_offset.max(end_offset);
                drop(inner);
                self.durable.notify(usize::MAX);
                Ok(())
            }
            Err(e) => {
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

    /// Writes the pending buffers in order and fdatasyncs each file touched. Returns the
    /// durable data end per segment.
    async fn write_and_sync(&self, job: Vec<PendingWrite>) -> Result<Vec<(Offset, u64)>> {
        let mut done: Vec<(Offset, u64, Rc<DmaFile>)> = Vec::new();
        for w in job {
            let expected = w.buf.len();
            let path = self.dir.join(segment_file_name(w.segment_base, "log"));
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
                        high_watermark: hw,
                        log_start_offset: start,
                    });
                }
                let Some((_, seg)) = inner.segments.range(..=target.0).next_back() else {
                    return Ok(ReadInfo {
                        records: Bytes::new(),
                        high_watermark: hw,
                        log_start_offset: start,
                    });
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
                                high_watermark: hw,
                                log_start_offset: start,
                            })
                        }
                    }
                }
                let rel = (target.0 - seg.base_offset.0) as u32;
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
                            high_watermark: hw,
                            log_start_offset: start,
                        })
                    }
                    Some(f) => {
                        return Ok(ReadInfo {
                            records: Bytes::copy_from_slice(&data[f..end]),
                            high_watermark: hw,
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
                                high_watermark: hw,
                                log_start_offset: start,
                            });
                        }
                        return Ok(ReadInfo {
                            records: Bytes::copy_from_slice(&whole),
                            high_watermark: hw,
                            log_start_offset: start,
                        });
                    }
                }
            }
            // Nothing at or after `target` in this segment's durable bytes.
            return Ok(ReadInfo {
                records: Bytes::new(),
                high_watermark: hw,
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
        for seg in &removed {
            tracing::info!(segment = %seg.path.display(), "retention: segment deleted");
            seg.remove_files();
        }
        Ok(removed.len())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1: the high watermark),
    /// persists it, and deletes the segments wholly below it. Returns the new start.
    pub async fn delete_records(&self, offset: i64) -> Result<Offset> {
        let _permit = self.lock_appends().await?;
        let (start, removed) = {
            let mut inner = self.inner.borrow_mut();
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
            let path = self.dir.join(LOG_START_OFFSET_FILE);
            crate::index::write_file_atomically(&path, target.0.to_string().as_bytes())
                .map_err(|e| StorageError::io("write log start offset", &path, e))?;
            crate::segment::sync_dir(&self.dir)?;
            inner.log_start_offset = target;
            let mut removed = Vec::new();
            while inner.segments.len() > 1 {
                let (&base, seg) = inner.segments.iter().next().expect("non-empty");
                if seg.next_offset > target {
                    break;
                }
                removed.push(inner.segments.remove(&base).expect("present"));
            }
            (target, removed)
        };
        for seg in &removed {
            seg.remove_files();
        }
        Ok(start)
    }

    /// Flushes what is buffered and stops accepting appends.
    pub async fn close(self: &Rc<Self>) -> Result<()> {
        let _permit = self.append_lock.acquire_permit(1).await;
        let result = self.flush().await;
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        if result.is_ok() {
            let end = inner.next_offset;
            self.write_producer_snapshot(&inner.producers, end);
        }
        for seg in inner.segments.values_mut() {
            if let Err(e) = seg.persist_indexes() {
                tracing::warn!(error = %e, "cannot persist indexes on close");
            }
        }
        drop(inner);
        self.append_lock.close();
        self.durable.notify(usize::MAX);
        result
    }

    /// Closes the log and removes its directory.
    pub async fn delete(self: &Rc<Self>) -> Result<()> {
        {
            let mut inner = self.inner.borrow_mut();
            inner.closed = true;
            inner.pending.clear();
            for seg in inner.segments.values() {
                seg.remove_files();
            }
        }
        self.append_lock.close();
        self.durable.notify(usize::MAX);
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| StorageError::io("remove log dir", &self.dir, e))
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
