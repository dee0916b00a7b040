//! One segment of a partition log: `<base offset, 20 digits>.log` plus its indexes.
//!
//! The `.log` file is a plain concatenation of RecordBatch v2 batches (see
//! `protocol::record_batch` for the byte layout), written with direct I/O. Base offsets
//! increase from batch to batch: a leader's own appends are consecutive (each batch starts
//! right after the previous one's last offset), but a follower copies its leader's batches
//! as they are, and a compacted leader log has gaps, so a batch may start anywhere after
//! the previous one's last offset. The first batch starts at or after the segment's base.
//! Because direct I/O writes whole 512-byte blocks, the file may end with zero padding after
//! the last batch; a zero batch length marks the end of data when scanning. Space is
//! reserved ahead with `fallocate(KEEP_SIZE)` in steps of `log.preallocate.bytes`.
//!
//! Recovery (the scan of [`LogSegment::open`]) keeps the longest prefix of whole batches
//! that each pass the CRC32C check and start after the previous batch's last offset, and
//! cuts the file after it. It stops at: a zero length (padding: the clean end), a length
//! that cannot be a batch, a batch the file ends inside (a torn write), a CRC mismatch, or a
//! base offset at or below the previous batch's last offset (stale or foreign bytes). A gap
//! (base offset beyond the previous last offset + 1) is not a stop.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};
use protocol::record_batch::{batch_size_from_prefix, BatchError, RecordBatchView};

use crate::error::{Result, StorageError};
use crate::index::{write_file_atomically, OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::Offset;

/// Direct-I/O block size assumed for positions and lengths.
pub const BLOCK_BYTES: u64 = 512;
/// Bytes read per step while scanning a segment on recovery.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Kafka's "no timestamp" value, the max timestamp of an empty segment.
pub const NO_TIMESTAMP: i64 = -1;

pub fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}
pub fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK_BYTES - 1)
}

/// `offset` relative to a segment's `base`, clamped into `u32` (the log rolls before relative
/// offsets pass `i32::MAX`; recovered files may still hold anything). A clamped lookup finds
/// an earlier index entry, from which a scan is still correct.
pub fn relative_offset(offset: i64, base: Offset) -> u32 {
    offset.saturating_sub(base.0).clamp(0, u32::MAX as i64) as u32
}

pub fn segment_file_name(base: Offset, ext: &str) -> String {
    format!("{:020}.{ext}", base.0)
}

pub struct LogSegment {
    pub base_offset: Offset,
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
    /// Bytes of whole batches appended, durable or not.
    pub size_bytes: u64,
    /// Bytes known to be on disk (written and fdatasync'ed).
    pub durable_bytes: u64,
    /// Offset after the last batch appended.
    pub next_offset: Offset,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Largest batch max timestamp in the segment (-1 when empty), indexed or not: the time
    /// index is sparse, so this is what says whether a timestamp query can match here.
    pub max_timestamp: i64,
    pub bytes_since_index: u64,
    /// Bytes reserved by fallocate so far.
    pub preallocated_bytes: u64,
    /// Clock value when the segment got its first batch (for `segment.ms`).
    pub first_append_ms: Option<u64>,
    /// Set once the log rolled past this segment.
    pub sealed: bool,
    /// Set once a sealed segment's indexes were persisted.
    pub indexes_persisted: bool,
    /// Runs of one leader epoch seen by the recovery scan at open: per run of consecutive
    /// batches carrying the same epoch (>= 0), the epoch, the first batch's base offset and
    /// the last batch's last offset. Empty for a segment trusted by its indexes and for one
    /// created at run time. The log adds them to its leader-epoch cache, which may have
    /// missed them in a crash.
    pub recovered_epochs: Vec<(i32, Offset, Offset)>,
}

/// What a scan of a segment found.
struct ScanOutcome {
    valid_bytes: u64,
    next_offset: Offset,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    max_timestamp: i64,
    bytes_since_index: u64,
    epochs: Vec<(i32, Offset, Offset)>,
    stop: Option<BatchError>,
}

impl LogSegment {
    fn index_path(&self, ext: &str) -> PathBuf {
        self.path.with_extension(ext)
    }

    /// The `.index` and `.timeindex` paths.
    pub fn index_paths(&self) -> Vec<PathBuf> {
        vec![self.index_path("index"), self.index_path("timeindex")]
    }

    /// The data file and both index files.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.clone()];
        v.extend(self.index_paths());
        v
    }

    /// Writes both index files atomically off the shard thread; see [`Self::persist_indexes`].
    pub async fn persist_indexes_async(&mut self) -> Result<()> {
        let (oi, ti) = (self.index_path("index"), self.index_path("timeindex"));
        crate::files::write_atomically("write offset index", &oi, self.offset_index.encode())
            .await?;
        crate::files::write_atomically("write time index", &ti, self.time_index.encode()).await?;
        self.indexes_persisted = true;
        Ok(())
    }

    async fn open_file(path: &Path, create: bool) -> Result<DmaFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|e| StorageError::io("open segment", path, e))
    }

    pub async fn create(dir: &Path, base_offset: Offset) -> Result<LogSegment> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = Self::open_file(&path, true).await?;
        crate::files::sync_dir(dir).await?;
        Ok(LogSegment {
            base_offset,
            path,
            file: Rc::new(file),
            size_bytes: 0,
            durable_bytes: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: NO_TIMESTAMP,
            bytes_since_index: 0,
            preallocated_bytes: 0,
            first_append_ms: None,
            sealed: false,
            indexes_persisted: false,
            recovered_epochs: Vec::new(),
        })
    }

    /// Opens an existing segment. A sealed segment with sane index files is trusted; the
    /// active one (`is_last`) and any segment with missing or corrupt indexes is scanned,
    /// CRC-checked, and truncated after its last valid batch.
    pub async fn open(
        path: PathBuf,
        base_offset: Offset,
        index_interval_bytes: u64,
        is_last: bool,
    ) -> Result<LogSegment> {
        let file = Self::open_file(&path, false).await?;
        let file_bytes = file
            .file_size()
            .await
            .map_err(|e| StorageError::io("stat segment", &path, e))?;
        let mut seg = LogSegment {
            base_offset,
            path,
            file: Rc::new(file),
            size_bytes: file_bytes,
            durable_bytes: file_bytes,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: NO_TIMESTAMP,
            bytes_since_index: 0,
            preallocated_bytes: file_bytes,
            first_append_ms: None,
            sealed: !is_last,
            indexes_persisted: !is_last,
            recovered_epochs: Vec::new(),
        };
        if !is_last {
            if let Some((oi, ti, next, max_timestamp)) = seg.load_indexes(file_bytes).await? {
                seg.offset_index = oi;
                seg.time_index = ti;
                seg.next_offset = next;
                seg.max_timestamp = max_timestamp;
                seg.size_bytes = file_bytes;
                return Ok(seg);
            }
            tracing::warn!(segment = %seg.path.display(), "index missing or inconsistent; rebuilding");
        }
        let scan = seg.scan(file_bytes, index_interval_bytes).await?;
        if let Some(stop) = &scan.stop {
            let torn = !matches!(stop, BatchError::BadLength { length: 0 });
            if torn {
                tracing::warn!(
                    segment = %seg.path.display(),
                    valid_bytes = scan.valid_bytes,
                    file_bytes,
                    reason = %stop,
                    "truncating torn or corrupt tail"
                );
            }
        }
        if scan.valid_bytes < file_bytes {
            // Cut away whatever follows the last valid batch, so stale bytes beyond the new
            // end can never be mistaken for data after later appends.
            seg.file
                .truncate(scan.valid_bytes)
                .await
                .map_err(|e| StorageError::io("truncate segment", &seg.path, e))?;
            seg.file
                .fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync segment", &seg.path, e))?;
        }
        seg.size_bytes = scan.valid_bytes;
        seg.durable_bytes = scan.valid_bytes;
        seg.preallocated_bytes = scan.valid_bytes;
        seg.next_offset = scan.next_offset;
        seg.offset_index = scan.offset_index;
        seg.time_index = scan.time_index;
        seg.max_timestamp = scan.max_timestamp;
        seg.bytes_since_index = scan.bytes_since_index;
        seg.recovered_epochs = scan.epochs;
        if !is_last {
            // Rebuilt indexes live in memory either way; a disk too full to take them only
            // means another rebuild at the next start.
            if let Err(e) = seg.persist_indexes_async().await {
                tracing::warn!(segment = %seg.path.display(), error = %e, "cannot persist rebuilt indexes");
            }
        }
        Ok(seg)
    }

    /// Loads both index files and finds the segment's next offset and max timestamp from the
    /// batch at the last index entry onward. `None` when anything is off.
    async fn load_indexes(
        &self,
        file_bytes: u64,
    ) -> Result<Option<(OffsetIndex, TimeIndex, Offset, i64)>> {
        let (Some(oi_bytes), Some(ti_bytes)) = (
            crate::files::read_optional(&self.index_path("index")).await,
            crate::files::read_optional(&self.index_path("timeindex")).await,
        ) else {
            return Ok(None);
        };
        let (Some(oi), Some(ti)) = (
            OffsetIndex::decode(&oi_bytes, file_bytes),
            TimeIndex::decode(&ti_bytes),
        ) else {
            return Ok(None);
        };
        // Walk batch headers from the last indexed position to learn the next offset.
        let start = oi.entries().last().map(|e| e.position as u64).unwrap_or(0);
        let mut pos = start;
        let mut next = self.base_offset;
        // Time entries carry the max timestamp so far, so the last one covers every batch
        // before the walk's start.
        let mut max_timestamp = ti.max_timestamp().unwrap_or(NO_TIMESTAMP);
        let mut expected_base = oi
            .entries()
            .last()
            .map(|e| Offset(self.base_offset.0 + e.relative_offset as i64));
        while pos < file_bytes {
            let head = self
                .file
                .read_at(pos, protocol::record_batch::BATCH_HEADER_BYTES)
                .await
                .map_err(|e| StorageError::io("read segment", &self.path, e))?;
            let size = match batch_size_from_prefix(&head) {
                Some(Ok(size)) if head.len() >= protocol::record_batch::BATCH_HEADER_BYTES => {
                    size as u64
                }
                _ => break,
            };
            if pos + size > file_bytes {
                break;
            }
            let base = i64::from_be_bytes(head[0..8].try_into().expect("8 bytes"));
            // The batch at the last index entry must be the one indexed; later ones only
            // have to move forward (gaps allowed).
            match expected_base {
                Some(exp) if pos == start && base != exp.0 => return Ok(None),
                Some(exp) if base < exp.0 => return Ok(None),
                _ => {}
            }
            let last_delta = i32::from_be_bytes(head[23..27].try_into().expect("4 bytes"));
            let batch_max_ts = i64::from_be_bytes(head[35..43].try_into().expect("8 bytes"));
            max_timestamp = max_timestamp.max(batch_max_ts);
            next = Offset(base + last_delta as i64 + 1);
            expected_base = Some(next);
            pos += size;
        }
        Ok(Some((oi, ti, next, max_timestamp)))
    }

    /// Reads the segment front to back, verifying each batch's CRC and that base offsets
    /// move forward.
    async fn scan(&self, file_bytes: u64, index_interval_bytes: u64) -> Result<ScanOutcome> {
        let mut out = ScanOutcome {
            valid_bytes: 0,
            next_offset: self.base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: NO_TIMESTAMP,
            bytes_since_index: 0,
            epochs: Vec::new(),
            stop: None,
        };
        let read = |pos: u64, len: usize| async move {
            self.file
                .read_at(pos, len)
                .await
                .map_err(|e| StorageError::io("read segment", &self.path, e))
        };
        let mut pos = 0u64;
        while pos < file_bytes {
            let want = SCAN_CHUNK_BYTES.min((file_bytes - pos) as usize);
            let chunk = read(pos, want).await?;
            let mut at = 0usize;
            while at < chunk.len() {
                let rest = &chunk[at..];
                match batch_size_from_prefix(rest) {
                    None => break,
                    Some(Err(e)) => {
                        out.stop = Some(e);
                        return Ok(out);
                    }
                    Some(Ok(size)) if size > rest.len() => break,
                    Some(Ok(size)) => {
                        if let Err(e) = self.accept(&rest[..size], &mut out, index_interval_bytes) {
                            out.stop = Some(e);
                            return Ok(out);
                        }
                        at += size;
                    }
                }
            }
            if at > 0 {
                pos += at as u64;
                continue;
            }
            // Not one whole batch in the chunk: either the file ends mid-batch, or a single
            // batch is larger than the chunk.
            if chunk.len() < protocol::record_batch::BATCH_LENGTH_PREFIX_BYTES
                && chunk.iter().all(|b| *b == 0)
            {
                // Zero padding to the block end, shorter than a length field: the end of
                // data, like a zero batch length.
                out.stop = Some(BatchError::BadLength { length: 0 });
                return Ok(out);
            }
            let size = match batch_size_from_prefix(&chunk) {
                Some(Ok(size)) if pos + size as u64 <= file_bytes => size,
                _ => {
                    out.stop = Some(BatchError::Truncated {
                        needed: protocol::record_batch::BATCH_LENGTH_PREFIX_BYTES,
                        available: chunk.len(),
                    });
                    return Ok(out);
                }
            };
            let whole = read(pos, size).await?;
            if let Err(e) = self.accept(&whole, &mut out, index_interval_bytes) {
                out.stop = Some(e);
                return Ok(out);
            }
            pos += size as u64;
        }
        Ok(out)
    }

    /// Validates one recovered batch and adds it to the scan outcome.
    fn accept(
        &self,
        bytes: &[u8],
        out: &mut ScanOutcome,
        index_interval_bytes: u64,
    ) -> std::result::Result<(), BatchError> {
        let view = RecordBatchView::parse_verified(bytes)?;
        // Gaps are allowed (a follower's copy of a compacted log); going back is not.
        if view.base_offset() < out.next_offset.0 {
            return Err(BatchError::UnexpectedBaseOffset {
                expected: out.next_offset.0,
                found: view.base_offset(),
            });
        }
        let relative = relative_offset(view.base_offset(), self.base_offset);
        let epoch = view.partition_leader_epoch();
        let last = Offset(view.last_offset());
        match out.epochs.last_mut() {
            Some((e, _, run_last)) if *e == epoch => *run_last = last,
            _ if epoch >= 0 => out.epochs.push((epoch, Offset(view.base_offset()), last)),
            _ => {}
        }
        out.max_timestamp = out.max_timestamp.max(view.max_timestamp());
        if out.valid_bytes == 0 || out.bytes_since_index >= index_interval_bytes {
            out.offset_index.push(OffsetEntry {
                relative_offset: relative,
                position: out.valid_bytes as u32,
            });
            out.time_index.maybe_push(TimeEntry {
                timestamp: out.max_timestamp,
                relative_offset: relative,
            });
            out.bytes_since_index = 0;
        }
        out.bytes_since_index += view.size_bytes() as u64;
        out.valid_bytes += view.size_bytes() as u64;
        out.next_offset = Offset(view.last_offset().saturating_add(1));
        Ok(())
    }

    /// Writes both index files (atomically) for a sealed segment or at clean shutdown.
    /// Blocking (`std::fs`): the log itself uses [`Self::persist_indexes_async`].
    pub fn persist_indexes(&mut self) -> Result<()> {
        let oi = self.index_path("index");
        write_file_atomically(&oi, &self.offset_index.encode())
            .map_err(|e| StorageError::io("write offset index", &oi, e))?;
        let ti = self.index_path("timeindex");
        write_file_atomically(&ti, &self.time_index.encode())
            .map_err(|e| StorageError::io("write time index", &ti, e))?;
        self.indexes_persisted = true;
        Ok(())
    }

    /// Records index entries for a batch appended at `position`.
    pub fn index_append(
        &mut self,
        view: &RecordBatchView<'_>,
        position: u64,
        index_interval_bytes: u64,
    ) {
        let relative = relative_offset(view.base_offset(), self.base_offset);
        self.max_timestamp = self.max_timestamp.max(view.max_timestamp());
        if position == 0 || self.bytes_since_index >= index_interval_bytes {
            self.offset_index.push(OffsetEntry {
                relative_offset: relative,
                position: position as u32,
            });
            self.time_index.maybe_push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: relative,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += view.size_bytes() as u64;
    }

    /// Removes the data and index files. Blocking (`std::fs`): the log itself removes
    /// [`Self::file_paths`] through `files::remove_files`.
    pub fn remove_files(&self) {
        for ext in ["log", "index", "timeindex"] {
            let p = self.path.with_extension(ext);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove segment file");
                }
            }
        }
    }
}

/// fsyncs a directory so that a created or renamed entry in it survives a crash.
/// Blocking: kept for the broker's metadata file; storage uses `files::sync_dir`.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

thread_local! {
    static IOPOLL_PROBED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// glommio decides once per block device whether its polled ring works by reading the first
/// 512 bytes of the first DMA file opened there. If that file is empty the read succeeds
/// without touching the device, polled I/O is wrongly enabled, and every later read fails
/// with EOPNOTSUPP. Opening a non-empty file first makes the probe see the device.
pub async fn prime_iopoll_probe(dir: &Path) -> Result<()> {
    if IOPOLL_PROBED.with(|p| p.get()) {
        return Ok(());
    }
    let path = dir.join(".iopoll-probe");
    let (p, d) = (path.clone(), dir.to_owned());
    // Both on the blocking pool: the write, and the fallback's directory walk.
    let opened = glommio::executor()
        .spawn_blocking(move || match std::fs::write(&p, [0u8; BLOCK_BYTES as usize]) {
            Ok(()) => Some(p),
            // A full disk (or a read-only one) must not keep the broker from starting: a
            // segment that already holds data serves the probe just as well.
            Err(e) => {
                let existing = first_nonempty_segment(&d);
                tracing::warn!(path = %p.display(), error = %e, fallback = ?existing, "cannot write the iopoll probe");
                existing
            }
        })
        .await;
    if let Some(probe) = opened {
        let file = DmaFile::open(&probe)
            .await
            .map_err(|e| StorageError::io("open iopoll probe", &probe, e))?;
        let _ = file.close().await;
    }
    let _ = crate::files::remove_files("remove iopoll probe", vec![path]).await;
    IOPOLL_PROBED.with(|p| p.set(true));
    Ok(())
}

/// A `.log` file of at least one block in `dir` or in another partition directory beside
/// it (the same filesystem), if there is one.
fn first_nonempty_segment(dir: &Path) -> Option<PathBuf> {
    let in_dir = |d: &Path| -> Option<PathBuf> {
        std::fs::read_dir(d)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|x| x == "log")
                    && std::fs::metadata(p).is_ok_and(|m| m.len() >= BLOCK_BYTES)
            })
    };
    in_dir(dir).or_else(|| {
        std::fs::read_dir(dir.parent()?)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .find_map(|p| in_dir(&p))
    })
}
