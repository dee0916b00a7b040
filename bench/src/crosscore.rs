//! The cost of one cross-core hop, made the way the broker makes it (`Shard::invoke_on`):
//! a boxed closure sent over a bounded flume channel to another glommio executor, which
//! spawns it as a task; the answer comes back over a one-shot (bounded(1)) flume channel.
//!
//! Two measurements: round-trip latency with one request outstanding (the cost a produce
//! forwarded to another shard pays), and round trips per second with many outstanding (how
//! much cross-core traffic one pair of shards can carry).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};

use crate::stats::{new_histogram, Percentiles};

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

#[derive(Parser, Clone, Debug)]
pub struct CrosscoreArgs {
    /// Round trips timed one at a time.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u64,
    /// Seconds of the throughput phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Requests outstanding in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The owner's inbox capacity (the broker's `sluice.shard.inbox.capacity` default).
    #[arg(long, default_value_t = 1024)]
    pub inbox_capacity: usize,
}

/// Sends `f` to the owner and waits for its answer, as `invoke_on` does.
async fn invoke<T: Send + 'static>(
    inbox: &flume::Sender<Job>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = flume::bounded(1);
    let job: Job = Box::new(move || {
        Box::pin(async move {
            let _ = tx.send(f());
        })
    });
    inbox
        .send_async(job)
        .await
        .map_err(|_| anyhow!("owner gone"))?;
    rx.recv_async().await.map_err(|_| anyhow!("owner gone"))
}

pub fn crosscore_cmd(a: CrosscoreArgs) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = |cpu: usize| {
        if cpus >= 2 {
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        }
    };
    let (tx, rx) = flume::bounded::<Job>(a.inbox_capacity);
    let owner = LocalExecutorBuilder::new(placement(1))
        .name("owner")
        .io_memory(1 << 20)
        .spawn(move || async move {
            while let Ok(job) = rx.recv_async().await {
                glommio::spawn_local(job()).detach();
            }
        })
        .map_err(|e| anyhow!("starting the owner executor: {e}"))?;
    let caller = LocalExecutorBuilder::new(placement(0))
        .name("caller")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let tx = Rc::new(tx);
            let mut h = new_histogram();
            // Warm both executors up before timing.
            for i in 0..1000u64 {
                invoke(&tx, move || i).await?;
            }
            for i in 0..a.round_trips {
                let t0 = Instant::now();
                let v = invoke(&tx, move || i + 1).await?;
                h.saturating_record(t0.elapsed().as_nanos() as u64 / 1000);
                anyhow::ensure!(v == i + 1, "wrong answer");
            }
            let latency = Percentiles::of(&h);
            let deadline = Instant::now() + Duration::from_secs(a.seconds);
            let started = Instant::now();
            let tasks: Vec<_> = (0..a.concurrency)
                .map(|_| {
                    let tx = tx.clone();
                    glommio::spawn_local(async move {
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            invoke(&tx, || 1u64).await?;
                            n += 1;
                        }
                        Ok::<u64, anyhow::Error>(n)
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await?;
            }
            let per_sec = total as f64 / started.elapsed().as_secs_f64();
            Ok::<_, anyhow::Error>((latency, per_sec))
        })
        .map_err(|e| anyhow!("starting the caller executor: {e}"))?;
    let (latency, per_sec) = caller
        .join()
        .map_err(|e| anyhow!("caller executor: {e}"))??;
    owner.join().map_err(|e| anyhow!("owner executor: {e}"))?;
    println!(
        "cross-core hop ({}): round trip p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us over {} round trips",
        if cpus >= 2 { "executors pinned to CPUs 0 and 1" } else { "one CPU: executors unpinned" },
        latency.p50_ms * 1000.0,
        latency.p90_ms * 1000.0,
        latency.p99_ms * 1000.0,
        latency.p999_ms * 1000.0,
        latency.max_ms * 1000.0,
        latency.count
    );
    println!(
        "cross-core throughput: {per_sec:.0} round trips/s with {} outstanding for {} s",
        a.concurrency, a.seconds
    );
    Ok(())
}
