//! The one place where internal errors become Kafka error codes.

use kafka_protocol::ResponseError;
use protocol::record_batch::BatchError;
use storage::producer_state::ProducerError;
use storage::StorageError;

use crate::controller::{
    AlterConfigsError, CreatePartitionsError, CreateTopicError, DeleteTopicError,
};

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
        StorageError::Producer(p) => producer_error(p),
    }
}

/// Idempotent-producer refusals, as Kafka answers them on Produce v3 and later (since
/// Kafka 2.7 a stale epoch is INVALID_PRODUCER_EPOCH rather than the fatal PRODUCER_FENCED).
pub fn producer_error(e: &ProducerError) -> ResponseError {
    match e {
        ProducerError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        ProducerError::TooManyBatches { .. } => ResponseError::InvalidRecord,
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
        CreateTopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CreateTopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn delete_topic_error(e: &DeleteTopicError) -> ResponseError {
    match e {
        DeleteTopicError::Unknown => ResponseError::UnknownTopicOrPartition,
        DeleteTopicError::Internal => ResponseError::InvalidTopicException,
        DeleteTopicError::Disabled => ResponseError::TopicDeletionDisabled,
        DeleteTopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn create_partitions_error(e: &CreatePartitionsError) -> ResponseError {
    match e {
        CreatePartitionsError::Unknown => ResponseError::UnknownTopicOrPartition,
        CreatePartitionsError::NotMore { .. } | CreatePartitionsError::TooMany(_) => {
            ResponseError::InvalidPartitions
        }
        CreatePartitionsError::Internal => ResponseError::InvalidRequest,
        CreatePartitionsError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn alter_configs_error(e: &AlterConfigsError) -> ResponseError {
    match e {
        AlterConfigsError::Unknown => ResponseError::UnknownTopicOrPartition,
        AlterConfigsError::Invalid(_) => ResponseError::InvalidConfig,
        AlterConfigsError::Storage(_) => ResponseError::KafkaStorageError,
    }
}
