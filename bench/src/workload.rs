//! Workloads: what a run sends and reads, from a TOML or JSON file and/or flags.
//!
//! Every field has a default, so `sluice-bench run` with no file is a valid workload (the
//! OpenMessaging-style 1 topic / 16 partitions / 1 KiB at max rate). Unknown fields are
//! refused: a typo must not silently run a different benchmark.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    /// Topic name; with `topics > 1` the topics are `<topic>-0`, `<topic>-1`, ...
    pub topic: String,
    pub topics: u32,
    /// Partitions per topic (created when missing).
    pub partitions: i32,
    /// Record value size in bytes (the mean for non-fixed distributions).
    pub record_bytes: u32,
    pub record_size: SizeDistribution,
    pub keys: KeyDistribution,
    /// Producer connections (one thread pair each).
    pub producers: u32,
    /// Consumers; 0 measures produce only.
    pub consumers: u32,
    /// When set, consumers join this consumer group (a fresh suffix per run); otherwise
    /// each consumer reads a fixed share of the partitions.
    pub consumer_group: Option<String>,
    /// Target records per second over all producers; 0 means as fast as acks allow.
    pub rate: u64,
    pub acks: i16,
    pub compression: Codec,
    /// How long a batch waits for more records (milliseconds, fractions allowed).
    pub linger_ms: f64,
    /// A partition's batch is sent once it holds this many bytes of record values.
    pub batch_bytes: usize,
    /// Produce requests in flight per producer connection (Kafka's
    /// max.in.flight.requests.per.connection).
    pub max_in_flight: usize,
    /// Record bytes a producer holds unsent before it waits for acknowledgements (Kafka's
    /// buffer.memory).
    pub buffer_bytes: usize,
    /// Seconds of load before measuring starts.
    pub warmup_secs: f64,
    /// Seconds measured.
    pub duration_secs: f64,
    /// After producing, read the whole topic back from the start at full speed (the
    /// catch-up read throughput).
    pub catch_up_read: bool,
    /// Topic configs set when the bench creates its topics (e.g. `retention.bytes`).
    pub topic_configs: std::collections::BTreeMap<String, String>,
    /// Delete the topics after the run (as OpenMessaging Benchmark does), so repeated runs
    /// neither fill the disk nor read each other's records.
    pub delete_topics: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "1-topic-16-partitions-1kb".into(),
            topic: "sluice-bench".into(),
            topics: 1,
            partitions: 16,
            record_bytes: 1024,
            record_size: SizeDistribution::Fixed,
            keys: KeyDistribution::None,
            producers: 1,
            consumers: 1,
            consumer_group: None,
            rate: 0,
            acks: -1,
            compression: Codec::None,
            linger_ms: 1.0,
            batch_bytes: 128 * 1024,
            max_in_flight: 5,
            buffer_bytes: 32 << 20,
            warmup_secs: 5.0,
            duration_secs: 30.0,
            catch_up_read: false,
            topic_configs: Default::default(),
            delete_topics: true,
        }
    }
}

/// How record value sizes vary around `record_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SizeDistribution {
    Fixed,
    /// Uniform in `min..=max` bytes.
    Uniform {
        min: u32,
        max: u32,
    },
    /// Exponential with mean `record_bytes`, capped at `max` bytes.
    Exponential {
        max: u32,
    },
}

/// Which keys records carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyDistribution {
    /// No key: the producer sticks to one partition per batch and moves on (Kafka's sticky
    /// partitioner).
    None,
    /// Keys drawn uniformly from `count` distinct keys.
    Uniform { count: u32 },
    /// `hot_fraction` of records use one of `hot` keys; the rest are uniform over `count`.
    Hot {
        count: u32,
        hot: u32,
        hot_fraction: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec's id in a record batch's attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

impl Workload {
    /// Reads a workload file: TOML unless the name ends in `.json`.
    pub fn load(path: &Path) -> Result<Workload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading workload {}", path.display()))?;
        let w = if path.extension().is_some_and(|e| e == "json") {
            Workload::from_json(&text)
        } else {
            Workload::from_toml(&text)
        }
        .with_context(|| format!("parsing workload {}", path.display()))?;
        Ok(w)
    }

    pub fn from_toml(text: &str) -> Result<Workload> {
        let w: Workload = toml::from_str(text)?;
        w.validate()?;
        Ok(w)
    }

    pub fn from_json(text: &str) -> Result<Workload> {
        let w: Workload = serde_json::from_str(text)?;
        w.validate()?;
        Ok(w)
    }

    /// Refuses workloads that cannot run as written.
    pub fn validate(&self) -> Result<()> {
        if self.topic.is_empty() || self.topics == 0 {
            bail!("a workload needs a topic name and at least one topic");
        }
        if self.partitions < 1 {
            bail!("partitions must be at least 1");
        }
        if self.producers == 0 && self.consumers == 0 {
            bail!("a workload needs producers or consumers");
        }
        if ![-1, 0, 1].contains(&self.acks) {
            bail!("acks must be -1, 0 or 1");
        }
        if self.batch_bytes == 0 || self.max_in_flight == 0 || self.buffer_bytes == 0 {
            bail!("batch_bytes, max_in_flight and buffer_bytes must be positive");
        }
        if self.buffer_bytes < self.batch_bytes {
            bail!("buffer_bytes must hold at least one batch (batch_bytes)");
        }
        if !(self.linger_ms >= 0.0 && self.linger_ms.is_finite()) {
            bail!("linger_ms must be a finite number >= 0");
        }
        if !(self.duration_secs > 0.0 && self.warmup_secs >= 0.0) {
            bail!("duration_secs must be positive and warmup_secs not negative");
        }
        match self.record_size {
            SizeDistribution::Uniform { min, max } if min > max => {
                bail!("record_size: min {min} is above max {max}")
            }
            SizeDistribution::Exponential { max } if max < self.record_bytes => {
                bail!("record_size: max {max} is below the mean record_bytes")
            }
            _ => {}
        }
        match self.keys {
            KeyDistribution::Uniform { count: 0 } => bail!("keys: count must be positive"),
            KeyDistribution::Hot {
                count,
                hot,
                hot_fraction,
            } => {
                if hot == 0 || hot > count {
                    bail!("keys: hot must be in 1..=count");
                }
                if !(0.0..=1.0).contains(&hot_fraction) {
                    bail!("keys: hot_fraction must be in 0..=1");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The topics this workload produces to and reads from.
    pub fn topic_names(&self) -> Vec<String> {
        if self.topics == 1 {
            vec![self.topic.clone()]
        } else {
            (0..self.topics)
                .map(|i| format!("{}-{i}", self.topic))
                .collect()
        }
    }
}

impl SizeDistribution {
    /// One record size with mean `mean` bytes.
    pub fn sample(&self, mean: u32, rng: &mut impl Rng) -> usize {
        match *self {
            SizeDistribution::Fixed => mean as usize,
            SizeDistribution::Uniform { min, max } => rng.gen_range(min..=max) as usize,
            SizeDistribution::Exponential { max } => {
                // Inverse transform: -mean * ln(1 - u), u in [0, 1).
                let u: f64 = rng.gen();
                let x = -(mean as f64) * (1.0 - u).ln();
                (x.round() as u64).min(max as u64) as usize
            }
        }
    }
}

impl KeyDistribution {
    /// The index of the next record's key, or `None` for keyless records.
    pub fn sample(&self, rng: &mut impl Rng) -> Option<u32> {
        match *self {
            KeyDistribution::None => None,
            KeyDistribution::Uniform { count } => Some(rng.gen_range(0..count)),
            KeyDistribution::Hot {
                count,
                hot,
                hot_fraction,
            } => {
                if hot == count || rng.gen_bool(hot_fraction) {
                    Some(rng.gen_range(0..hot))
                } else {
                    Some(rng.gen_range(hot..count))
                }
            }
        }
    }
}

/// The key bytes of key number `n`.
pub fn key_bytes(n: u32) -> Vec<u8> {
    format!("key-{n:08}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn an_empty_file_is_the_default_workload() {
        assert_eq!(Workload::from_toml("").unwrap(), Workload::default());
        assert_eq!(Workload::from_json("{}").unwrap(), Workload::default());
    }

    #[test]
    fn toml_and_json_set_every_kind_of_field() {
        let t = Workload::from_toml(
            r#"
            name = "hot"
            partitions = 4
            rate = 5000
            acks = 1
            compression = "lz4"
            linger_ms = 0.5
            consumer_group = "g"
            record_size = { kind = "uniform", min = 10, max = 20 }
            keys = { kind = "hot", count = 100, hot = 5, hot_fraction = 0.9 }
            "#,
        )
        .unwrap();
        assert_eq!(t.partitions, 4);
        assert_eq!(t.rate, 5000);
        assert_eq!(t.acks, 1);
        assert_eq!(t.compression, Codec::Lz4);
        assert_eq!(t.linger_ms, 0.5);
        assert_eq!(t.consumer_group.as_deref(), Some("g"));
        assert_eq!(
            t.record_size,
            SizeDistribution::Uniform { min: 10, max: 20 }
        );
        assert_eq!(
            t.keys,
            KeyDistribution::Hot {
                count: 100,
                hot: 5,
                hot_fraction: 0.9
            }
        );
        let j = Workload::from_json(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(j, t);
    }

    #[test]
    fn typos_and_impossible_values_are_refused() {
        assert!(Workload::from_toml("partitons = 4").is_err());
        assert!(Workload::from_toml("partitions = 0").is_err());
        assert!(Workload::from_toml("acks = 2").is_err());
        assert!(Workload::from_toml("compression = \"brotli\"").is_err());
        assert!(
            Workload::from_toml("record_size = { kind = \"uniform\", min = 9, max = 3 }").is_err()
        );
        assert!(Workload::from_toml(
            "keys = { kind = \"hot\", count = 3, hot = 5, hot_fraction = 0.5 }"
        )
        .is_err());
        assert!(Workload::from_toml("duration_secs = 0").is_err());
        assert!(Workload::from_json("{\"rate\": -5}").is_err());
    }

    #[test]
    fn size_distributions_keep_their_bounds_and_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        let u = SizeDistribution::Uniform { min: 100, max: 200 };
        let e = SizeDistribution::Exponential { max: 100_000 };
        let (mut us, mut es) = (0usize, 0usize);
        for _ in 0..100_000 {
            let x = u.sample(0, &mut rng);
            assert!((100..=200).contains(&x));
            us += x;
            let y = e.sample(1000, &mut rng);
            assert!(y <= 100_000);
            es += y;
        }
        let (um, em) = (us as f64 / 1e5, es as f64 / 1e5);
        assert!((um - 150.0).abs() < 2.0, "uniform mean {um}");
        assert!((em - 1000.0).abs() < 30.0, "exponential mean {em}");
        assert_eq!(SizeDistribution::Fixed.sample(1024, &mut rng), 1024);
    }

    #[test]
    fn hot_keys_get_their_share() {
        let mut rng = StdRng::seed_from_u64(9);
        let k = KeyDistribution::Hot {
            count: 1000,
            hot: 10,
            hot_fraction: 0.8,
        };
        let n = 100_000;
        let hot = (0..n).filter(|_| k.sample(&mut rng).unwrap() < 10).count();
        let share = hot as f64 / n as f64;
        assert!((share - 0.8).abs() < 0.01, "hot share {share}");
        assert_eq!(KeyDistribution::None.sample(&mut rng), None);
        let u = KeyDistribution::Uniform { count: 4 };
        assert!((0..1000).all(|_| u.sample(&mut rng).unwrap() < 4));
    }
}
