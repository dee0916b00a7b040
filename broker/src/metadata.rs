//! The cluster metadata image: topics, their ids, partitions and the shard that owns each.
//!
//! The controller (shard 0) holds the authoritative copy, persists it, and sends every
//! shard an immutable snapshot (`Arc<MetadataImage>`) in version order; shards only read
//! their copy. On disk it is `<data dir>/__cluster/metadata.json`, written atomically
//! (temp file, fsync, rename, directory fsync):
//!
//! ```json
//! {"version": 3, "topics": {"orders": {"id": "<32 hex>", "partitions": [{"shard": 0}, …],
//!   "configs": {}}}, "next_producer_id": 2000}
//! ```
//!
//! A partition's shard is chosen at creation and kept across restarts; if the broker later
//! runs with fewer shards, partition `p` of a shard `s >= smp` is served by `s % smp`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionMeta {
    pub shard: usize,
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
}

impl MetadataImage {
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
        self.topics.iter().find(|(_, t)| t.uuid() == id)
    }

    /// The shard that serves `partition` of `topic` with `smp` shards running.
    pub fn shard_of(&self, topic: &str, partition: i32, smp: usize) -> Option<usize> {
        let t = self.topics.get(topic)?;
        let p = t.partitions.get(usize::try_from(partition).ok()?)?;
        Some(p.shard % smp)
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

/// 16 random bytes from the kernel, as 32 hex digits (topic ids).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr() as *mut libc::c_void, bytes.len(), 0) };
    assert_eq!(n, 16, "getrandom failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn image_round_trips_and_maps_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = MetadataImage {
            version: 2,
            ..MetadataImage::default()
        };
        img.topics.insert(
            "t".into(),
            TopicMeta {
                id: random_id(),
                partitions: vec![PartitionMeta { shard: 0 }, PartitionMeta { shard: 3 }],
                configs: BTreeMap::new(),
            },
        );
        img.store(dir.path()).unwrap();
        let back = MetadataImage::load(dir.path()).unwrap();
        assert_eq!(back, img);
        assert_eq!(back.shard_of("t", 1, 2), Some(1));
        assert_eq!(back.shard_of("t", 2, 2), None);
        let id = back.topics["t"].uuid();
        assert_eq!(back.topic_by_id(id).unwrap().0, "t");
    }
}
