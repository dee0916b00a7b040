//! A full disk: with the data directory on a small tmpfs, produce gets KAFKA_STORAGE_ERROR
//! once space runs out while reads keep working; freeing space makes produce work again;
//! nothing acknowledged is lost or damaged, also across kill -9.
//!
//! Needs root with the right to mount; without it the test says so and does nothing (CI
//! runs as root on a VM, where it runs).

mod common;

use common::Broker;
use kafka_protocol::records::Compression;

const KAFKA_STORAGE_ERROR: i16 = 56;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_produce_and_recovers_when_space_is_freed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("disk_full: not root, cannot mount a small filesystem; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // Root without CAP_SYS_ADMIN (an unprivileged container): nothing to test with.
        eprintln!("disk_full: mounting a tmpfs is not permitted here; skipped");
        return;
    }
    let _mount = Mount(mnt.clone());
    // Room to free later.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20]).unwrap();

    let data = mnt.join("data");
    let mut broker = Broker::start(
        &data,
        1,
        &[
            "sluice.log.preallocate.bytes=1048576",
            "log.segment.bytes=4194304",
        ],
    );
    let mut c = broker.client();
    assert_eq!(c.create_topic("full", 1), 0);
    let payload = vec![b'x'; 60 << 10];
    let mut acked = 0usize;
    let mut refused = false;
    for i in 0..1000 {
        let b = common::batch(std::slice::from_ref(&payload), i, Compression::None);
        let code = c.produce("full", &[(0, b)], -1)[0].1;
        if code == 0 {
            acked += 1;
        } else {
            assert_eq!(code, KAFKA_STORAGE_ERROR);
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the disk never filled ({acked} batches acknowledged)"
    );
    assert!(acked > 50, "only {acked} batches before the disk was full");
    // Reads keep working and see exactly what was acknowledged.
    assert_eq!(c.fetch_all("full", 0).len(), acked);
    let b = common::batch(std::slice::from_ref(&payload), 0, Compression::None);
    assert_eq!(c.produce("full", &[(0, b)], -1)[0].1, KAFKA_STORAGE_ERROR);
    // Metadata changes on the full disk: once the metadata log cannot be written they are
    // refused with KAFKA_STORAGE_ERROR (not a stopped broker), and stay refused. (The
    // broker's own log is on the same full disk: its lines are lost, the broker is not.)
    let mut metadata_refused = None;
    for i in 0..200 {
        let code = c.create_topic(&format!("m{i}"), 1);
        assert!(
            code == 0 || code == KAFKA_STORAGE_ERROR,
            "create m{i}: {code}"
        );
        if code == KAFKA_STORAGE_ERROR {
            metadata_refused = Some(i);
            break;
        }
    }
    let first = metadata_refused.expect("the metadata log never ran out of space");
    assert!(broker.is_running(), "a full disk stopped the broker");
    assert_eq!(
        c.create_topic(&format!("m{}", first + 1), 1),
        KAFKA_STORAGE_ERROR
    );
    assert_eq!(c.fetch_all("full", 0).len(), acked);

    // Free space: produce works again.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..10 {
        let b = common::batch(std::slice::from_ref(&payload), i, Compression::None);
        assert_eq!(c.produce("full", &[(0, b)], -1)[0].1, 0);
        acked += 1;
    }
    assert_eq!(c.fetch_all("full", 0).len(), acked);

    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    let recs = c.fetch_all("full", 0);
    assert_eq!(recs.len(), acked);
    assert!(recs
        .iter()
        .all(|r| r.value.as_deref() == Some(&payload[..])));
    broker.kill9();

    // Start-up on a full disk: the broker starts, serves reads and refuses produce with
    // KAFKA_STORAGE_ERROR until space is freed.
    let filler = mnt.join("filler2");
    fill(&filler);
    broker.restart();
    let mut c = broker.client();
    assert_eq!(c.fetch_all("full", 0).len(), acked);
    let b = common::batch(std::slice::from_ref(&payload), 0, Compression::None);
    assert_eq!(c.produce("full", &[(0, b)], -1)[0].1, KAFKA_STORAGE_ERROR);
    std::fs::remove_file(&filler).unwrap();
    let b = common::batch(std::slice::from_ref(&payload), 0, Compression::None);
    assert_eq!(c.produce("full", &[(0, b)], -1)[0].1, 0);
    assert_eq!(c.fetch_all("full", 0).len(), acked + 1);
    broker.kill9();
}

/// Writes `path` until the filesystem has no space left.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    // Whatever is left below one chunk.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}
