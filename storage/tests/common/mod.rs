//! Helpers shared by the storage integration tests: hand-made batches, a glommio runner,
//! a log opened with its group-commit task, and a full read.
#![allow(dead_code)]

use std::path::Path;
use std::rc::Rc;

use glommio::LocalExecutorBuilder;
use protocol::record_batch::BatchIter;
use storage::{GroupCommit, Log, LogConfig, LogOptions, Offset};

/// A syntactically valid v2 batch with `count` records of opaque filler.
pub fn batch(count: i32, body_bytes: usize, timestamp: i64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body_bytes) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend((0..body_bytes).map(|i| (i % 251) as u8));
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

pub fn crc32c(data: &[u8]) -> u32 {
    // Bitwise CRC32C (Castagnoli), independent of the implementation under test.
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap();
}

pub async fn open(
    dir: &Path,
    config: LogConfig,
) -> (Rc<Log>, Rc<GroupCommit>, glommio::task::JoinHandle<()>) {
    let commit = GroupCommit::new();
    let runner = glommio::spawn_local(commit.clone().run()).detach();
    let log = Log::open(dir, config, commit.clone()).await.unwrap();
    (log, commit, runner)
}

/// Opens with options (a fault plan).
pub async fn open_with(
    dir: &Path,
    config: LogConfig,
    options: LogOptions,
) -> (Rc<Log>, Rc<GroupCommit>, glommio::task::JoinHandle<()>) {
    let commit = GroupCommit::new();
    let runner = glommio::spawn_local(commit.clone().run()).detach();
    let log = Log::open_with(dir, config, commit.clone(), options)
        .await
        .unwrap();
    (log, commit, runner)
}

pub async fn read_all(log: &Log) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let r = log.read(next, 1 << 20, true).await.unwrap();
        if r.records.is_empty() {
            return out;
        }
        for v in BatchIter::new(&r.records, true) {
            out.push((v.base_offset(), v.records_count()));
            next = Offset(v.last_offset() + 1);
        }
    }
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        preallocate_bytes: 128 << 10,
        write_buffer_bytes: 8 << 10,
        ..LogConfig::default()
    }
}

/// A batch as a leader stored it: `count` records from `base_offset`, stamped with
/// `leader_epoch`, `body_bytes` of filler, CRC set.
pub fn stored_batch(base_offset: i64, count: i32, leader_epoch: i32, body_bytes: usize) -> Vec<u8> {
    let mut b = batch(count, body_bytes, 1_000 + base_offset);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    b
}

/// Every durable batch of the log, as stored, in order.
pub async fn read_raw(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let r = log.read(next, 1 << 20, true).await.unwrap();
        if r.records.is_empty() {
            return out;
        }
        for v in BatchIter::new(&r.records, true) {
            out.push(v.as_bytes().to_vec());
            next = Offset(v.last_offset() + 1);
        }
    }
}

/// The `.log` files of a log directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}
