//! With `--smp 2` both shards own partitions, and requests that land on a shard that does not
//! own a partition are forwarded and answered correctly.

mod common;

use common::{batch, metadata_shards, Broker};
use kafka_protocol::records::Compression;

#[test]
fn both_shards_own_partitions_and_forwarding_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 2, &[]);
    assert_eq!(broker.client().create_topic("spread", 4), 0);
    let shards = metadata_shards(&broker, "spread");
    assert!(
        shards.contains(&0) && shards.contains(&1),
        "placement {shards:?}"
    );

    // Several connections: the kernel spreads them over both shards' listeners, and every
    // request names partitions of both shards, so each is partly served by forwarding.
    for conn in 0..6 {
        let mut client = broker.client();
        let batches: Vec<_> = (0..4)
            .map(|p| {
                (
                    p,
                    batch(&[format!("c{conn}-p{p}").into_bytes()], 7, Compression::Lz4),
                )
            })
            .collect();
        for (p, err, base) in client.produce("spread", &batches, -1) {
            assert_eq!(err, 0, "partition {p}");
            assert_eq!(base, conn as i64, "partition {p}");
        }
        for p in 0..4 {
            let (err, hw, recs) = client.fetch("spread", p, conn as i64, 0);
            assert_eq!((err, hw), (0, conn as i64 + 1));
            assert_eq!(
                recs[0].value.as_deref(),
                Some(format!("c{conn}-p{p}").as_bytes())
            );
        }
    }
    // Placement survives a restart.
    broker.restart();
    assert_eq!(metadata_shards(&broker, "spread"), shards);
    let mut client = broker.client();
    for p in 0..4 {
        assert_eq!(client.fetch_all("spread", p).len(), 6);
    }
}
