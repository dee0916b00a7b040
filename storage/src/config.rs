//! Per-log settings (Kafka topic-config names in the doc of each field).

/// How a log lays out and rolls its segments.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before one would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older than this.
    pub segment_ms: u64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `log.preallocate.bytes` (Sluice): fallocate the active segment in steps of this.
    pub preallocate_bytes: u64,
    /// `log.write.buffer.bytes` (Sluice): size of one aligned write buffer.
    pub write_buffer_bytes: usize,
    /// `producer.id.expiration.ms`: idempotent producer state idle this long is forgotten
    /// (checked when the log rolls).
    pub producer_id_expiration_ms: u64,
    /// `retention.ms`: whole segments whose newest record is older than this are deleted
    /// (-1: kept forever).
    pub retention_ms: i64,
    /// `retention.bytes`: oldest whole segments are deleted while the log is larger than
    /// this (-1: no limit).
    pub retention_bytes: i64,
    /// `message.timestamp.type=LogAppendTime`: batches are stamped with the append time.
    pub log_append_time: bool,
    /// `sluice.log.segment.offsets.max`: the most offsets one segment spans. Index entries
    /// store offsets relative to the segment's base as `u32`, and Kafka keeps them within
    /// `i32::MAX`; the log rolls before an append would pass this.
    pub segment_offsets_max: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            preallocate_bytes: 32 << 20,
            write_buffer_bytes: 1 << 20,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            log_append_time: false,
            segment_offsets_max: SEGMENT_OFFSETS_MAX,
        }
    }
}

/// Hard ceiling on a segment's size: index entries store positions as u32.
pub const SEGMENT_BYTES_MAX: u64 = (1 << 31) - 1;

/// Hard ceiling on the offsets one segment spans: relative offsets fit in an `i32`, as in
/// Kafka's indexes.
pub const SEGMENT_OFFSETS_MAX: u64 = i32::MAX as u64;
