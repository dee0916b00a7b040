//! Test support: runs the real `sluice` binary and talks to it with a minimal blocking
//! Kafka client built on the `kafka-protocol` codecs.

#![allow(dead_code)]

pub mod cluster;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub struct Broker {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    smp: usize,
    props: Vec<String>,
    child: Option<Child>,
}

/// The address of the newest "sluice ready" line in a broker log, if there are `after` or
/// more such lines. Brokers start on port 0 and report the port they bound: a port picked by
/// the test and released before the broker binds it could be picked by a parallel test too,
/// and SO_REUSEPORT would then let both brokers share it.
fn ready_addr(log: &str, after: usize) -> Option<SocketAddr> {
    let lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("sluice ready"))
        .map(strip_ansi)
        .collect();
    if lines.len() <= after {
        return None;
    }
    let line = lines.last()?;
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Broker {
    pub fn start(data_dir: &Path, smp: usize, props: &[&str]) -> Broker {
        let mut b = Broker {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_owned(),
            log_path: data_dir.with_extension("broker.log"),
            smp,
            props: props.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        b.spawn();
        b
    }

    /// Starts the broker process (again) on the same data directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let ready_before = self.log().matches("sluice ready").count();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("start")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--smp")
            .arg(self.smp.to_string());
        // Tests run brokers in parallel: each gets its own admin port.
        cmd.arg("--prop").arg("sluice.admin.listen=127.0.0.1:0");
        for p in &self.props {
            cmd.arg("--prop").arg(p);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = ready_addr(&self.log(), ready_before) {
                if TcpStream::connect(addr).is_ok() {
                    self.addr = addr;
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited at start-up with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "broker did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the broker with `extra` properties added, expecting it to exit at start-up;
    /// returns its exit status (panics if it is still running after 30 s).
    pub fn run_to_exit(&mut self, extra: &[&str]) -> std::process::ExitStatus {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("start")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--smp")
            .arg(self.smp.to_string())
            .arg("--prop")
            .arg("sluice.admin.listen=127.0.0.1:0");
        for p in self
            .props
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            cmd.arg("--prop").arg(p);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the broker kept running: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin HTTP server's address from the newest "sluice ready" line.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        let line = log.lines().rfind(|l| l.contains("sluice ready"))?;
        let line = strip_ansi(line);
        let rest = &line[line.find("admin=")? + "admin=".len()..];
        rest.split_whitespace().next()?.parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "broker exited with {status}: {}",
                self.log()
            );
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// How many descriptors the broker process has open now (from /proc), if it runs.
    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.child.as_ref()?.id();
        Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    }

    /// The lowest descriptor number the broker process does not use now (from /proc): the
    /// number its next open, accept or dup gets.
    pub fn lowest_free_fd(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        (0..).find(|n| !used.contains(n))
    }

    /// Sets the running broker's soft open-files limit with prlimit(2) (at most its hard
    /// limit, which stays, so the limit can be raised again), so a test can put the limit
    /// just above what the broker holds once it has started.
    pub fn set_open_files_limit(&self, limit: u64) -> std::io::Result<()> {
        let pid = self.child.as_ref().expect("broker not running").id() as libc::pid_t;
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit with a null new limit only writes the old one into `old`.
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let lim = libc::rlimit {
            rlim_cur: limit.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: prlimit reads the rlimit we pass and writes nothing (old limit is null).
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// GET `path` from the admin server: the status and the body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let addr = self.admin_addr().expect("admin server");
        http_get(addr, path).expect("admin server reachable")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            correlation: 0,
        }
    }

    pub fn encode_request<R: Request>(&mut self, req: &R, version: i16) -> Bytes {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("sluice-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame.freeze()
    }

    /// Sends a request and decodes its response, or `None` if the broker closed the socket.
    pub fn try_send<R: Request>(&mut self, req: &R, version: i16) -> Option<R::Response> {
        let frame = self.encode_request(req, version);
        self.stream.write_all(&frame).ok()?;
        let mut body = self.read_frame()?;
        let header_version =
            <R::Response as kafka_protocol::protocol::HeaderVersion>::header_version(version);
        let header_version = if R::KEY == ApiKey::ApiVersions as i16 {
            0
        } else {
            header_version
        };
        let header = ResponseHeader::decode(&mut body, header_version).unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        Some(R::Response::decode(&mut body, version).unwrap())
    }

    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.try_send(req, version)
            .expect("broker closed the connection")
    }

    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// True when the broker closed the connection (EOF or reset) within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }

    /// The topic's partition count in a Metadata response, or None if it is unknown.
    pub fn metadata_partitions(&mut self, topic: &str) -> Option<usize> {
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(topic.into())));
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![t]);
        req.allow_auto_topic_creation = false;
        let resp = self.send(&req, 12);
        let t = &resp.topics[0];
        (t.error_code == 0).then_some(t.partitions.len())
    }

    /// A producer id from InitProducerId (no transactional id).
    pub fn init_producer_id(&mut self) -> i64 {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let resp = self.send(&req, 4);
        assert_eq!(resp.error_code, 0, "InitProducerId");
        resp.producer_id.0
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) -> i16 {
        self.create_topic_rf(name, partitions, 1)
    }

    /// CreateTopics with a replication factor; returns the error code.
    pub fn create_topic_rf(&mut self, name: &str, partitions: i32, factor: i16) -> i16 {
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(name.into()));
        t.num_partitions = partitions;
        t.replication_factor = factor;
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 10_000;
        self.send(&req, 5).topics[0].error_code
    }

    /// Produces one batch per (partition, records) pair in one request; returns
    /// (partition, error code, base offset) per partition.
    pub fn produce(
        &mut self,
        topic: &str,
        batches: &[(i32, Bytes)],
        acks: i16,
    ) -> Vec<(i32, i16, i64)> {
        let mut td = produce_request::TopicProduceData::default();
        td.name = TopicName(StrBytes::from_string(topic.into()));
        td.partition_data = batches
            .iter()
            .map(|(p, b)| {
                let mut pd = produce_request::PartitionProduceData::default();
                pd.index = *p;
                pd.records = Some(b.clone());
                pd
            })
            .collect();
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = 10_000;
        req.topic_data = vec![td];
        let resp = self.send(&req, 9);
        resp.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.error_code, p.base_offset))
            .collect()
    }

    /// Fetches from one partition; returns (error, high watermark, decoded records).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> (i16, i64, Vec<Record>) {
        let mut fp = fetch_request::FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = 1 << 20;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_string(topic.into()));
        ft.partitions = vec![fp];
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = max_wait_ms;
        req.min_bytes = 1;
        req.max_bytes = 4 << 20;
        req.topics = vec![ft];
        let resp = self.send(&req, 11);
        let p = &resp.responses[0].partitions[0];
        let mut records = Vec::new();
        if let Some(mut bytes) = p.records.clone() {
            while !bytes.is_empty() {
                let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
                records.extend(set.records);
            }
        }
        (p.error_code, p.high_watermark, records)
    }

    /// Every record of a partition from offset 0 up to its high watermark.
    pub fn fetch_all(&mut self, topic: &str, partition: i32) -> Vec<Record> {
        self.fetch_all_from(topic, partition, 0)
    }

    /// Every record of a partition from `from` up to its high watermark.
    pub fn fetch_all_from(&mut self, topic: &str, partition: i32, from: i64) -> Vec<Record> {
        let mut out = Vec::new();
        let mut next = from;
        loop {
            let (err, hw, recs) = self.fetch(topic, partition, next, 0);
            assert_eq!(err, 0, "fetch error");
            for r in recs {
                if r.offset >= next {
                    next = r.offset + 1;
                    out.push(r);
                }
            }
            if next >= hw {
                return out;
            }
        }
    }
}

/// An encoded v2 batch of records `values` (keys "k<i>"), timestamps from `ts`.
pub fn batch(values: &[Vec<u8>], ts: i64, compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// GET `path` from an HTTP server at `addr`: the status and the body, or None if it
/// cannot be reached.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Each partition's shard index, as the broker's /v1/topics reports it.
pub fn metadata_shards(broker: &Broker, topic: &str) -> Vec<u64> {
    let (status, body) = broker.admin_get("/v1/topics");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap_or_else(|| panic!("no topic {topic} in {body}"));
    t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["shard_index"].as_u64().unwrap())
        .collect()
}

impl Broker {
    /// SIGTERM, then waits up to `timeout` for the process to exit: its exit status, or an
    /// error (after a kill -9) when it did not exit in time.
    pub fn stop_within(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        let Some(mut c) = self.child.take() else {
            return Err("the broker is not running".into());
        };
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err(format!(
                        "the broker did not exit within {timeout:?} of SIGTERM"
                    ));
                }
                Err(e) => return Err(format!("waiting for the broker: {e}")),
            }
        }
    }
}

/// Makes `cmd`'s process start with the open files limit (`soft`, `hard`).
pub fn limit_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure only calls it.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises this process's soft open-files limit to its hard limit and returns the new soft
/// limit (tests that open hundreds of sockets must not run out themselves first).
pub fn raise_own_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Appends `v` zigzag-encoded as a varint (the record format's integers).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Recomputes a batch's CRC32C over bytes 21.. (attributes to the end), stored big-endian
/// at 17..21, as a hostile client that edits a valid batch would.
pub fn fix_crc(b: &mut [u8]) {
    if b.len() >= 21 {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}
