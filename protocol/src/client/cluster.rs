//! Connections to a cluster for the tools: the bootstrap broker, the brokers Metadata names
//! (partition leaders) and group coordinators, each a blocking [`Connection`] over TCP.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;

use super::Connection;

/// A blocking connection over TCP.
pub type Conn = Connection<TcpStream>;

/// Connections to a cluster: the bootstrap broker, then whichever brokers Metadata names.
pub struct Cluster {
    bootstrap: Conn,
    /// Node id -> "host:port", from the last Metadata response.
    pub brokers: HashMap<i32, String>,
    conns: HashMap<String, Conn>,
    client_id: String,
}

/// Connects to `addr` (TCP_NODELAY, a 60 s read timeout).
pub fn connect(addr: &str, client_id: &str) -> Result<Conn> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(Connection::new(stream, client_id))
}

/// A protocol string.
pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// The Kafka name of an error code.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

/// `Err` naming the error when `code` is not 0.
pub fn check(code: i16, what: &str) -> Result<()> {
    if code != 0 {
        bail!("{what}: {}", error_name(code));
    }
    Ok(())
}

impl Cluster {
    pub fn connect(bootstrap: &str, client_id: &str) -> Result<Cluster> {
        Ok(Cluster {
            bootstrap: connect(bootstrap, client_id)?,
            client_id: client_id.to_owned(),
            brokers: HashMap::new(),
            conns: HashMap::new(),
        })
    }

    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        self.bootstrap.send(req, version)
    }

    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut m = metadata_request::MetadataRequestTopic::default();
                    m.name = Some(TopicName(s(t)));
                    m
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let resp = self.send(&req, 12)?;
        for b in &resp.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        Ok(resp)
    }

    pub fn node(&mut self, node: i32) -> Result<&mut Conn> {
        let addr = self
            .brokers
            .get(&node)
            .cloned()
            .ok_or_else(|| anyhow!("broker {node} is not in the metadata"))?;
        if !self.conns.contains_key(&addr) {
            let c = connect(&addr, &self.client_id)?;
            self.conns.insert(addr.clone(), c);
        }
        Ok(self.conns.get_mut(&addr).expect("inserted"))
    }

    /// Partition -> leader of `topic`.
    pub fn leaders(&mut self, topic: &str) -> Result<BTreeMap<i32, i32>> {
        let md = self.metadata(Some(&[topic.to_owned()]))?;
        let t = md.topics.first().ok_or_else(|| anyhow!("no metadata"))?;
        check(t.error_code, &format!("topic {topic}"))?;
        Ok(t.partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect())
    }

    pub fn coordinator(&mut self, group: &str) -> Result<&mut Conn> {
        let mut req = FindCoordinatorRequest::default();
        req.key = s(group);
        let mut last = 0;
        for _ in 0..20 {
            let r = self.send(&req, 3)?;
            if r.error_code == 0 {
                let addr = format!("{}:{}", r.host.as_str(), r.port);
                if !self.conns.contains_key(&addr) {
                    let c = connect(&addr, &self.client_id)?;
                    self.conns.insert(addr.clone(), c);
                }
                return Ok(self.conns.get_mut(&addr).expect("inserted"));
            }
            last = r.error_code;
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("no coordinator for group {group}: {}", error_name(last))
    }

    /// One ListOffsets query (`-1` latest, `-2` earliest, or a timestamp) per partition.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        query: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, i64>> {
        let leaders = self.leaders(topic)?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, ts) in query {
            let leader = *leaders
                .get(p)
                .ok_or_else(|| anyhow!("{topic} has no partition {p}"))?;
            by_leader.entry(leader).or_default().push((*p, *ts));
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let mut t = list_offsets_request::ListOffsetsTopic::default();
            t.name = TopicName(s(topic));
            t.partitions = parts
                .iter()
                .map(|(p, ts)| {
                    let mut x = list_offsets_request::ListOffsetsPartition::default();
                    x.partition_index = *p;
                    x.timestamp = *ts;
                    x
                })
                .collect();
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            req.topics = vec![t];
            let r = self.node(leader)?.send(&req, 6)?;
            for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
                check(p.error_code, &format!("{topic}-{}", p.partition_index))?;
                out.insert(p.partition_index, p.offset);
            }
        }
        Ok(out)
    }
}

/// Kafka's murmur2 (the Java client's default partitioner for keyed records).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn key_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_partitioner() {
        // Values from Kafka's UtilsTest (murmur2 of these strings).
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
        assert_eq!(
            key_partition(b"foobar", 8),
            (-790332482i32 & 0x7fff_ffff) % 8
        );
    }
}
