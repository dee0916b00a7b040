//! The cluster metadata log's contents: records (this module) and, as the metadata quorum
//! is wired in, the image they build.

pub mod controller;
pub mod image;
pub mod records;

pub use image::{ApplyError, BrokerInfo, ClusterImage, PartitionInfo, TopicInfo};
pub use records::{decode_batch, encode_batch, DecodeError, Endpoint, MetadataRecord, TopicId};
