//! The shards' view of the cluster metadata: topics, their ids, partitions and each
//! partition's shard index (which local shard serves it is node-local: `shard_table.rs`).
//!
//! The controller (shard 0) derives it from the committed `ClusterImage` of the metadata
//! log (`metadata_log.rs`) and sends every shard an immutable snapshot
//! (`Arc<MetadataImage>`) in offset order; shards only read their copy.
//!
//! Before the metadata log, the image lived in `<data dir>/__cluster/metadata.json`; that
//! file is read once at the upgrade (`controller.rs` turns it into the first records):
//!
//! ```json
//! {"version": 3, "topics": {"orders": {"id": "<32 hex>", "partitions": [{"shard": 0}, …],
//!   "configs": {}}}, "next_producer_id": 2000}
//! ```
//!
//! A partition's shard index is chosen at creation and kept across restarts; if the broker
//! later runs with fewer shards, index `s >= smp` is served by shard `s % smp`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use replication::metadata::ClusterImage;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The shard index the controller chose for a partition: the same on every broker that
/// holds a replica, so that replication pairs shard `i` with shard `i`. Which local shard
/// serves it is node-local (`shard_table.rs`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(transparent)]
pub struct ShardIndex(pub u32);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionMeta {
    /// Stored as `shard` (the name it has had since the first version of the file).
    #[serde(rename = "shard")]
    pub shard_index: ShardIndex,
    /// The leading broker, -1 when the partition is offline.
    #[serde(default = "no_leader")]
    pub leader: i32,
    /// The brokers holding a replica; empty in a pre-quorum file (the node itself).
    #[serde(default)]
    pub replicas: Vec<i32>,
    #[serde(default)]
    pub isr: Vec<i32>,
    /// Bumped by the controller at every leader change; the leader stamps it on batches.
    #[serde(default)]
    pub leader_epoch: i32,
    /// Bumped at every change of the partition (ISR included): an ISR change is made
    /// against it, so that a stale one is refused.
    #[serde(default)]
    pub partition_epoch: i32,
}

fn no_leader() -> i32 {
    -1
}

impl PartitionMeta {
    /// A partition of this node alone, on shard index `index` (tests).
    #[cfg(test)]
    pub fn on_shard(index: u32) -> PartitionMeta {
        PartitionMeta {
            shard_index: ShardIndex(index),
            leader: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    /// Whether broker `node` leads it (a pre-quorum partition is the node's own).
    pub fn is_led_by(&self, node: i32) -> bool {
        self.replicas.is_empty() || self.leader == node
    }

    /// Whether broker `node` holds a replica (a pre-quorum partition is the node's own).
    pub fn is_on(&self, node: i32) -> bool {
        self.replicas.is_empty() || self.replicas.contains(&node)
    }
}

/// A registered broker as clients are told of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerMeta {
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    /// Topic id as 32 lowercase hex digits.
    pub id: String,
    pub partitions: Vec<PartitionMeta>,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn uuid(&self) -> Uuid {
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.id.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
        }
        Uuid::from_bytes(bytes)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataImage {
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// First producer id not yet handed out (ids are allocated in blocks, durably, so they
    /// stay unique across restarts).
    #[serde(default)]
    pub next_producer_id: i64,
    /// Registered brokers by node id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerMeta>,
}

impl MetadataImage {
    /// The shards' view of the committed cluster image: its topics by name, each
    /// partition's shard index, configs and the producer-id counter; `version` is the
    /// image's offset in the metadata log.
    pub fn from_cluster(image: &ClusterImage) -> MetadataImage {
        MetadataImage {
            version: image.offset,
            topics: image
                .topic_ids
                .keys()
                .filter_map(|name| Some((name.clone(), Self::topic_meta(image, name)?)))
                .collect(),
            next_producer_id: image.next_producer_id,
            brokers: image
                .brokers
                .iter()
                .map(|(id, b)| {
                    let e = b.client_endpoint();
                    let meta = BrokerMeta {
                        host: e.map(|e| e.host.clone()).unwrap_or_default(),
                        port: e.map_or(0, |e| e.port),
                        rack: b.rack.clone(),
                        fenced: b.fenced,
                    };
                    (*id, meta)
                })
                .collect(),
        }
    }

    /// One topic of `image` as the shards see it.
    pub fn topic_meta(image: &ClusterImage, name: &str) -> Option<TopicMeta> {
        let (id, t) = image.topic(name)?;
        Some(TopicMeta {
            id: id.to_string(),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionMeta {
                    shard_index: ShardIndex(p.shard_index),
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                })
                .collect(),
            configs: t.configs.clone(),
        })
    }

    /// Where the image lived before the metadata log (read once, to migrate it).
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("__cluster").join("metadata.json")
    }

    pub fn load(data_dir: &Path) -> Result<MetadataImage> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataImage::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the pre-quorum file (tests make old data directories with it).
    #[cfg(test)]
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        let path = Self::path(data_dir);
        let dir = path.parent().expect("metadata path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let bytes = serde_json::to_vec_pretty(self)?;
        storage::index::write_file_atomically(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        storage::segment::sync_dir(dir)?;
        Ok(())
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<(&String, &TopicMeta)> {
        // Compared as stored (32 lowercase hex digits): Produce and Fetch name topics by id
        // from v13, so this runs per request and parses nothing.
        let hex = id.simple().to_string();
        self.topics.iter().find(|(_, t)| t.id == hex)
    }
}

/// Directory of one partition's log, Kafka style: `<data dir>/<topic>-<partition>`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Kafka's topic-name rule: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("topic name is empty");
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'");
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(
            "topic name contains characters other than ASCII alphanumerics, '.', '_' and '-'",
        );
    }
    Ok(())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// 16 random bytes from the kernel (topic ids, incarnation ids).
pub fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr() as *mut libc::c_void, bytes.len(), 0) };
    assert_eq!(n, 16, "getrandom failed");
    bytes
}

/// 16 random bytes as 32 hex digits.
pub fn random_id() -> String {
    random_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "sp ace", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn image_round_trips_in_the_first_versions_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = MetadataImage {
            version: 2,
            ..MetadataImage::default()
        };
        img.topics.insert(
            "t".into(),
            TopicMeta {
                id: random_id(),
                partitions: vec![PartitionMeta::on_shard(0), PartitionMeta::on_shard(3)],
                configs: BTreeMap::new(),
            },
        );
        img.store(dir.path()).unwrap();
        let back = MetadataImage::load(dir.path()).unwrap();
        assert_eq!(back, img);
        // Data directories written before the shard index had a type read unchanged.
        let text = std::fs::read_to_string(MetadataImage::path(dir.path())).unwrap();
        assert!(text.contains("\"shard\": 3"), "{text}");
        let id = back.topics["t"].uuid();
        assert_eq!(back.topic_by_id(id).unwrap().0, "t");
    }
}
