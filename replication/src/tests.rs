use std::time::Duration;

use glommio::LocalExecutorBuilder;

use super::*;

/// A valid v2 batch (CRC32C over attributes onwards) of `count` opaque records at base 0.
fn batch(count: i32) -> Bytes {
    let body = [7u8; 20];
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&1i64.to_be_bytes());
    b.extend_from_slice(&1i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap();
}

async fn open(dir: &Path) -> (Rc<Partition>, Rc<GroupCommit>) {
    let commit = GroupCommit::new();
    glommio::spawn_local(commit.clone().run()).detach();
    let config = LogConfig {
        preallocate_bytes: 64 << 10,
        write_buffer_bytes: 8 << 10,
        ..LogConfig::default()
    };
    let p = Partition::open(
        "t",
        0,
        dir,
        config,
        commit.clone(),
        BrokerId(1),
        LeaderEpoch(3),
    )
    .await
    .unwrap();
    (Rc::new(p), commit)
}

#[test]
fn records_become_visible_at_the_high_watermark_and_wake_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (p, commit) = open(&path).await;
        assert_eq!(p.high_watermark(), Offset(0));
        let listener = p.listen_visible();
        let info = p
            .append(
                Append::Client {
                    records: batch(3),
                    max_batch_bytes: 1 << 20,
                },
                1,
            )
            .await
            .unwrap();
        assert_eq!((info.base_offset, info.end_offset), (Offset(0), Offset(3)));
        // The listener registered before the append fires once it is durable.
        let woke = futures_lite::future::or(
            async {
                listener.await;
                true
            },
            async {
                glommio::timer::sleep(Duration::from_secs(10)).await;
                false
            },
        )
        .await;
        assert!(
            woke,
            "listen_visible did not fire when the append became durable"
        );
        p.wait_committed(info.end_offset).await.unwrap();
        assert_eq!(p.high_watermark(), Offset(3));
        let r = p
            .read(Offset(0), 1 << 20, true, Isolation::HighWatermark)
            .await
            .unwrap();
        let views: Vec<_> = BatchIter::new(&r.records, true).collect();
        assert_eq!(views.len(), 1);
        // Leader appends get the partition's epoch stamped.
        assert_eq!(views[0].partition_leader_epoch(), 3);
        assert_eq!(r.high_watermark, Offset(3));
        assert_eq!(r.last_stable_offset, Offset(3));
        // DeleteRecords never passes the high watermark.
        assert!(p.delete_records(4).await.is_err());
        assert_eq!(p.delete_records(-1).await.unwrap(), Offset(3));
        p.close().await.unwrap();
        commit.stop();
    });
}

#[test]
fn reads_stop_before_the_first_batch_at_or_past_the_bound() {
    let mut two = Vec::new();
    let mut first = batch(2).to_vec();
    first[..8].copy_from_slice(&0i64.to_be_bytes());
    let mut second = batch(2).to_vec();
    second[..8].copy_from_slice(&2i64.to_be_bytes());
    two.extend_from_slice(&first);
    two.extend_from_slice(&second);
    let two = Bytes::from(two);
    assert_eq!(below(two.clone(), Offset(4)).len(), two.len());
    assert_eq!(below(two.clone(), Offset(3)).len(), first.len());
    assert_eq!(below(two.clone(), Offset(2)).len(), first.len());
    assert_eq!(below(two.clone(), Offset(1)).len(), 0);
    assert_eq!(below(two, Offset(0)).len(), 0);
}

#[test]
fn a_follower_append_keeps_the_leaders_offsets_and_epochs_and_truncates_its_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (p, commit) = open(&path).await;
        // The leader's batch: base offset 0, epoch 7 (the follower's own epoch is 3).
        let mut b = batch(2).to_vec();
        b[12..16].copy_from_slice(&7i32.to_be_bytes());
        let leader_bytes = Bytes::from(b);
        let info = p
            .append(
                Append::Replication {
                    records: leader_bytes.clone(),
                },
                1,
            )
            .await
            .unwrap();
        p.wait_committed(info.end_offset).await.unwrap();
        let r = p
            .read(Offset(0), 1 << 20, true, Isolation::HighWatermark)
            .await
            .unwrap();
        assert_eq!(r.records, leader_bytes, "stored byte for byte");
        assert_eq!(
            p.end_offset_for_epoch(LeaderEpoch(7)),
            Some((LeaderEpoch(7), Offset(2)))
        );
        assert_eq!(p.truncate_to(Offset(0)).await.unwrap(), Offset(0));
        assert_eq!(p.log_end_offset(), Offset(0));
        p.close().await.unwrap();
        commit.stop();
    });
}

fn client(count: i32) -> Append {
    Append::Client {
        records: batch(count),
        max_batch_bytes: 1 << 20,
    }
}

/// Whether `fut` completes within a second.
async fn within_a_second(fut: impl Future<Output = ()>) -> bool {
    futures_lite::future::or(
        async {
            fut.await;
            true
        },
        async {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            false
        },
    )
    .await
}

#[test]
fn a_leaders_high_watermark_waits_for_every_isr_follower_and_acks_all_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (p, commit) = open(&path).await;
        let replicas = [BrokerId(1), BrokerId(2), BrokerId(3)];
        let epoch = LeaderEpoch(4);
        p.become_leader(
            replica::Leadership {
                me: BrokerId(1),
                epoch,
                replicas: &replicas,
                isr: &replicas,
            },
            30_000,
            0,
        );
        assert_eq!(p.check_acks_all(2), Ok(()));
        let info = p.append(client(10), 1).await.unwrap();
        p.wait_committed(Offset(0)).await.unwrap();
        // Durable here, but no follower has it: nothing is visible yet.
        let acked = {
            let p = p.clone();
            glommio::spawn_local(async move { p.wait_replicated(info.end_offset, 2).await })
        };
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(p.high_watermark(), Offset(0));
        let read = p
            .read(Offset(0), 1 << 20, true, Isolation::HighWatermark)
            .await
            .unwrap();
        assert!(
            read.records.is_empty(),
            "nothing visible below a high watermark of 0"
        );
        // Follower 2 has it all; 3 has none: still 0.
        let f = p.replica_fetch(BrokerId(2), epoch.0, Offset(10), Some(epoch), 5);
        assert_eq!(
            f,
            Ok(ReplicaFetch::Read {
                high_watermark: Offset(0)
            })
        );
        let f = p.replica_fetch(BrokerId(3), epoch.0, Offset(4), Some(epoch), 5);
        assert_eq!(
            f,
            Ok(ReplicaFetch::Read {
                high_watermark: Offset(4)
            })
        );
        // A listener wakes when a follower's fetch moves the mark.
        let listen = p.listen_visible();
        p.replica_fetch(BrokerId(3), epoch.0, Offset(10), Some(epoch), 6)
            .unwrap();
        assert!(
            within_a_second(listen).await,
            "a follower's fetch did not wake listeners"
        );
        assert_eq!(p.high_watermark(), Offset(10));
        assert_eq!(acked.await.unwrap(), Ok(()));
        // Stale and unknown epochs, strangers, divergence.
        assert_eq!(
            p.replica_fetch(BrokerId(2), 3, Offset(10), Some(epoch), 7),
            Err(ReplicaFetchError::FencedLeaderEpoch)
        );
        assert_eq!(
            p.replica_fetch(BrokerId(2), 5, Offset(10), Some(epoch), 7),
            Err(ReplicaFetchError::UnknownLeaderEpoch)
        );
        assert_eq!(
            p.replica_fetch(BrokerId(9), epoch.0, Offset(10), Some(epoch), 7),
            Err(ReplicaFetchError::NotReplica)
        );
        // A follower whose last batch is of epoch 3 up to 12: epoch 3 ended at 0 here (this
        // log's first batch is of epoch 4), so it truncates there.
        match p.replica_fetch(BrokerId(2), epoch.0, Offset(12), Some(LeaderEpoch(3)), 8) {
            Ok(ReplicaFetch::Diverging { diverging, .. }) => {
                assert!(diverging.end_offset <= Offset(10), "{diverging:?}")
            }
            other => panic!("expected a divergence, got {other:?}"),
        }
        // The ISR shrinks to the leader alone: acks=all with min.insync.replicas=2 is refused
        // before an append, and one in flight gets NOT_ENOUGH_REPLICAS_AFTER_APPEND.
        let info = p.append(client(2), 9).await.unwrap();
        p.isr_committed(Some(&[BrokerId(1)]));
        assert_eq!(
            p.check_acks_all(2),
            Err(replica::AcksError::NotEnoughReplicas { isr: 1, min_isr: 2 })
        );
        assert_eq!(
            p.wait_replicated(info.end_offset, 2).await.unwrap(),
            Err(replica::AcksError::NotEnoughReplicasAfterAppend { isr: 1, min_isr: 2 })
        );
        // Leadership moves away while a produce waits: it is told so.
        let info = p.append(client(1), 10).await.unwrap();
        p.isr_committed(Some(&replicas));
        let waiting = {
            let p = p.clone();
            glommio::spawn_local(async move { p.wait_replicated(info.end_offset, 2).await })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        p.become_follower(BrokerId(2), LeaderEpoch(5));
        assert_eq!(waiting.await.unwrap(), Err(replica::AcksError::NotLeader));
        assert_eq!(
            p.replica_fetch(BrokerId(2), 5, Offset(10), Some(epoch), 11),
            Err(ReplicaFetchError::NotLeader)
        );
        p.close().await.unwrap();
        commit.stop();
    });
}

#[test]
fn a_follower_sees_up_to_the_leaders_high_watermark_and_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (p, commit) = open(&path).await;
        p.become_follower(BrokerId(2), LeaderEpoch(3));
        assert!(!p.is_leader());
        // The leader's batches, stored as they are.
        let mut b = batch(5).to_vec();
        b[12..16].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        p.append(
            Append::Replication {
                records: Bytes::from(b),
            },
            1,
        )
        .await
        .unwrap();
        p.wait_committed(Offset(5)).await.unwrap();
        assert_eq!(
            p.high_watermark(),
            Offset(0),
            "the leader reported nothing yet"
        );
        p.set_leader_high_watermark(Offset(3));
        assert_eq!(p.high_watermark(), Offset(3));
        // A leader ahead of this follower: only what is here is visible.
        p.set_leader_high_watermark(Offset(50));
        assert_eq!(p.high_watermark(), Offset(5));
        // It never goes back.
        p.set_leader_high_watermark(Offset(1));
        assert_eq!(p.high_watermark(), Offset(5));
        p.close().await.unwrap();
        commit.stop();
    });
}

#[test]
fn a_new_leaders_epoch_is_implied_to_start_at_its_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (p, commit) = open(&path).await;
        let lead = |epoch| replica::Leadership {
            me: BrokerId(1),
            epoch: LeaderEpoch(epoch),
            replicas: &[BrokerId(1)],
            isr: &[BrokerId(1)],
        };
        p.become_leader(lead(4), 30_000, 0);
        let at = |epoch| {
            p.end_offset_for_epoch(LeaderEpoch(epoch))
                .map(|(e, o)| (e.0, o.0))
        };
        // Nothing written: epoch 4 is the current one, ending at the log end; an older one
        // asked of an empty log ends there too; a newer one is unknown.
        assert_eq!(at(4), Some((4, 0)));
        assert_eq!(at(2), Some((2, 0)));
        assert_eq!(at(5), None);
        p.append(client(3), 1).await.unwrap();
        p.wait_committed(Offset(3)).await.unwrap();
        assert_eq!(at(4), Some((4, 3)));
        // A later epoch with nothing written yet: epoch 4 ended where the log ends.
        p.become_leader(lead(6), 30_000, 0);
        assert_eq!(at(4), Some((4, 3)));
        assert_eq!(at(5), Some((4, 3)));
        assert_eq!(at(6), Some((6, 3)));
        assert_eq!(at(7), None);
        assert_eq!(
            at(3),
            Some((3, 0)),
            "below every epoch: the first one's start"
        );
        p.append(client(2), 2).await.unwrap();
        p.wait_committed(Offset(5)).await.unwrap();
        assert_eq!(at(4), Some((4, 3)));
        assert_eq!(at(6), Some((6, 5)));
        // A follower implies nothing.
        p.become_follower(BrokerId(2), LeaderEpoch(8));
        assert_eq!(at(8), None);
        p.close().await.unwrap();
        commit.stop();
    });
}
