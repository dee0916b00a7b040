//! Group commit: one task per shard writes and fdatasyncs every log that has new appends.
//!
//! Appends never wait for the disk themselves; they mark their log dirty here and wait on the
//! log's durable offset. Each round takes every dirty log, flushes them concurrently, and
//! starts the next round with whatever arrived meanwhile — so many concurrent appends to a
//! log share one fdatasync, and a busy shard issues one sync per log per round.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use event_listener::Event;

use crate::Log;

/// Upper bounds (µs) of the fdatasync latency buckets.
pub const SYNC_LATENCY_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// fdatasync latencies of one shard: a cumulative-bucket histogram.
#[derive(Default, Clone, Debug)]
pub struct SyncLatency {
    /// Per bucket of [`SYNC_LATENCY_BUCKETS_US`]: syncs that took at most that long.
    pub buckets: [u64; 10],
    pub count: u64,
    pub sum_us: u64,
}

impl SyncLatency {
    pub fn observe(&mut self, us: u64) {
        for (i, bound) in SYNC_LATENCY_BUCKETS_US.iter().enumerate() {
            if us <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_us += us;
    }
}

#[derive(Default)]
pub struct GroupCommit {
    dirty: RefCell<Vec<Rc<Log>>>,
    wake: Event,
    rounds: Cell<u64>,
    stopping: Cell<bool>,
    sync_latency: RefCell<SyncLatency>,
}

impl GroupCommit {
    pub fn new() -> Rc<GroupCommit> {
        Rc::new(GroupCommit::default())
    }

    pub(crate) fn mark_dirty(&self, log: Rc<Log>) {
        self.dirty.borrow_mut().push(log);
        self.wake.notify(1);
    }

    pub(crate) fn observe_sync(&self, elapsed: std::time::Duration) {
        self.sync_latency
            .borrow_mut()
            .observe(elapsed.as_micros() as u64);
    }

    /// The shard's fdatasync latencies so far.
    pub fn sync_latency(&self) -> SyncLatency {
        self.sync_latency.borrow().clone()
    }

    /// Completed flush rounds, for metrics and tests.
    pub fn rounds(&self) -> u64 {
        self.rounds.get()
    }

    /// Asks [`Self::run`] to return once nothing is dirty.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.wake.notify(1);
    }

    /// The shard's flush loop.
    pub async fn run(self: Rc<Self>) {
        loop {
            let batch: Vec<Rc<Log>> = std::mem::take(&mut *self.dirty.borrow_mut());
            if batch.is_empty() {
                if self.stopping.get() {
                    return;
                }
                let listener = self.wake.listen();
                if self.dirty.borrow().is_empty() && !self.stopping.get() {
                    listener.await;
                }
                continue;
            }
            let tasks: Vec<_> = batch
                .into_iter()
                .map(|log| {
                    glommio::spawn_local(async move {
                        // Errors are recorded in the log (it goes offline) and reported to
                        // its waiters; nothing more to do here.
                        let _ = log.flush().await;
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            self.rounds.set(self.rounds.get() + 1);
        }
    }
}
