//! Storage errors. Each names the operation and the file; `broker/` maps them to Kafka codes.

use std::path::PathBuf;

use protocol::record_batch::BatchError;
use thiserror::Error;

use crate::producer_state::ProducerError;
use crate::Offset;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid record batch at byte {position} of the request: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: BatchError,
    },
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("batch of {size} bytes exceeds the limit of {max_bytes}")]
    BatchTooLarge { size: usize, max_bytes: usize },
    #[error("a batch spanning {offsets} offsets cannot fit in one segment (at most {max})")]
    OffsetsOverflow { offsets: u64, max: u64 },
    #[error("log {path} is offline after an earlier I/O failure")]
    Offline { path: PathBuf },
    #[error("log {path} is closed")]
    Closed { path: PathBuf },
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

impl StorageError {
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;
