//! The one place where internal errors become Kafka error codes.

use kafka_protocol::ResponseError;
use protocol::compression::DecompressError;
use protocol::record_batch::BatchError;
use protocol::validate::ClientBatchError;
use storage::producer_state::ProducerError;
use storage::StorageError;

use crate::controller::{
    AlterConfigsError, CreatePartitionsError, CreateTopicError, DeleteTopicError,
};
use crate::controller_client::{ControllerUnavailable, ProducerIdsError};
use crate::metadata_log::CommitError;

/// An admin request whose controller could not be reached: NOT_CONTROLLER, which Kafka's
/// admin clients retry after refreshing metadata (as when the active controller moved).
pub fn controller_unavailable(_: &ControllerUnavailable) -> ResponseError {
    ResponseError::NotController
}

/// InitProducerId without a producer-id block: COORDINATOR_NOT_AVAILABLE (retried by
/// clients) while the controller cannot be reached, KAFKA_STORAGE_ERROR when it could not
/// store the block.
pub fn producer_ids_error(e: &ProducerIdsError) -> ResponseError {
    match e {
        ProducerIdsError::Unavailable(_) => ResponseError::CoordinatorNotAvailable,
        ProducerIdsError::Failed(_) => ResponseError::KafkaStorageError,
    }
}

pub fn storage_error(e: &StorageError) -> ResponseError {
    match e {
        StorageError::InvalidBatch { source, .. } => batch_error(source),
        StorageError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetsOverflow { .. } => ResponseError::InvalidRecord,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::Closed { .. } => ResponseError::NotLeaderOrFollower,
        StorageError::Io { .. } | StorageError::Offline { .. } => ResponseError::KafkaStorageError,
        StorageError::Producer(p) => producer_error(p),
    }
}

/// A record batch that is not a valid v2 batch (header or CRC).
pub fn batch_error(e: &BatchError) -> ResponseError {
    match e {
        BatchError::UnsupportedMagic { .. } => ResponseError::UnsupportedForMessageFormat,
        BatchError::BadRecordCount { .. } => ResponseError::InvalidRecord,
        _ => ResponseError::CorruptMessage,
    }
}

/// A client batch refused by `protocol::validate`, answered as Kafka's LogValidator does:
/// structural faults are INVALID_RECORD, records that cannot be decompressed are
/// CORRUPT_MESSAGE, timestamps out of bounds INVALID_TIMESTAMP. A transactional batch with no
/// transaction open is INVALID_TXN_STATE (KIP-890's answer), a producer id nobody issued
/// UNKNOWN_PRODUCER_ID.
pub fn client_batch_error(e: &ClientBatchError) -> ResponseError {
    match e {
        ClientBatchError::ControlBatch
        | ClientBatchError::RecordCount { .. }
        | ClientBatchError::Sequence { .. }
        | ClientBatchError::Record { .. }
        | ClientBatchError::MissingKeys { .. } => ResponseError::InvalidRecord,
        ClientBatchError::Transactional { .. } => ResponseError::InvalidTxnState,
        ClientBatchError::UnknownProducerId { .. } => ResponseError::UnknownProducerId,
        ClientBatchError::ProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ClientBatchError::Timestamp { .. } => ResponseError::InvalidTimestamp,
        ClientBatchError::Decompress(d) => match d {
            DecompressError::TooLarge { .. } => ResponseError::MessageTooLarge,
            DecompressError::UnknownCodec(_) => ResponseError::InvalidRecord,
            DecompressError::Corrupt { .. } => ResponseError::CorruptMessage,
        },
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

/// A metadata change that did not commit: NOT_CONTROLLER when this node is not (or stopped
/// being) the active controller — admin clients retry it after refreshing metadata —
/// REQUEST_TIMED_OUT when no quorum committed it (or no controller answered) in time, KAFKA_STORAGE_ERROR when the
/// metadata log cannot be written.
pub fn commit_error(e: &CommitError) -> ResponseError {
    match e {
        CommitError::NotLeader { .. } | CommitError::Lost => ResponseError::NotController,
        CommitError::Timeout(_) | CommitError::Unreachable(_) => ResponseError::RequestTimedOut,
        CommitError::TooLarge(_) => ResponseError::PolicyViolation,
        CommitError::Refused(_) => ResponseError::UnknownServerError,
        CommitError::Storage(_) => ResponseError::KafkaStorageError,
        CommitError::StaleBroker(_) | CommitError::Duplicate(_) => {
            ResponseError::UnknownServerError
        }
    }
}

pub fn elect_error(e: &crate::controller::ElectError) -> ResponseError {
    use crate::controller::ElectError;
    match e {
        ElectError::Unknown => ResponseError::UnknownTopicOrPartition,
        ElectError::NotNeeded => ResponseError::ElectionNotNeeded,
        ElectError::PreferredNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectError::EligibleNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ElectError::Commit(e) => commit_error(e),
    }
}

pub fn create_topic_error(e: &CreateTopicError) -> ResponseError {
    match e {
        CreateTopicError::AlreadyExists => ResponseError::TopicAlreadyExists,
        CreateTopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        CreateTopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CreateTopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        CreateTopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CreateTopicError::Commit(e) => commit_error(e),
    }
}

pub fn delete_topic_error(e: &DeleteTopicError) -> ResponseError {
    match e {
        DeleteTopicError::Unknown => ResponseError::UnknownTopicOrPartition,
        DeleteTopicError::Internal => ResponseError::InvalidTopicException,
        DeleteTopicError::Disabled => ResponseError::TopicDeletionDisabled,
        DeleteTopicError::Commit(e) => commit_error(e),
    }
}

pub fn create_partitions_error(e: &CreatePartitionsError) -> ResponseError {
    match e {
        CreatePartitionsError::Unknown => ResponseError::UnknownTopicOrPartition,
        CreatePartitionsError::NotMore { .. } | CreatePartitionsError::TooMany(_) => {
            ResponseError::InvalidPartitions
        }
        CreatePartitionsError::Internal => ResponseError::InvalidRequest,
        CreatePartitionsError::Commit(e) => commit_error(e),
    }
}

pub fn alter_configs_error(e: &AlterConfigsError) -> ResponseError {
    match e {
        AlterConfigsError::Unknown => ResponseError::UnknownTopicOrPartition,
        AlterConfigsError::Invalid(_) => ResponseError::InvalidConfig,
        AlterConfigsError::Commit(e) => commit_error(e),
    }
}
