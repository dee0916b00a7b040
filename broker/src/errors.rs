//! The one place where internal errors become Kafka error codes.

use kafka_protocol::ResponseError;
use protocol::record_batch::BatchError;
use storage::StorageError;

use crate::controller::{CreateTopicError, DeleteTopicError};

pub fn storage_error(e: &StorageError) -> ResponseError {
    match e {
        StorageError::InvalidBatch { source, .. } => match source {
            BatchError::UnsupportedMagic { .. } => ResponseError::UnsupportedForMessageFormat,
            BatchError::BadRecordCount { .. } => ResponseError::InvalidRecord,
            _ => ResponseError::CorruptMessage,
        },
        StorageError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::Closed { .. } => ResponseError::NotLeaderOrFollower,
        StorageError::Io { .. } | StorageError::Offline { .. } => ResponseError::KafkaStorageError,
    }
}

pub fn create_topic_error(e: &CreateTopicError) -> ResponseError {
    match e {
        CreateTopicError::AlreadyExists => ResponseError::TopicAlreadyExists,
        CreateTopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        CreateTopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CreateTopicError::InvalidReplicationFactor { .. } => {
            ResponseError::InvalidReplicationFactor
        }
        CreateTopicError::UnknownConfig(_) => ResponseError::InvalidConfig,
        CreateTopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn delete_topic_error(e: &DeleteTopicError) -> ResponseError {
    match e {
        DeleteTopicError::Unknown => ResponseError::UnknownTopicOrPartition,
        DeleteTopicError::Disabled => ResponseError::TopicDeletionDisabled,
        DeleteTopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}
