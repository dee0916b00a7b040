//! The metadata log as a broker-only node (`process.roles=broker`) sees it: a KRaft
//! observer. It takes no part in Raft; on shard 0 it long-polls a voter
//! (`PeerMessage::FetchMetadata`, the active controller when it knows it) for the committed
//! entries after the offset its image has, applies them in order as the voters do, and
//! takes a voter's whole image when the entries it needs are snapshotted away.
//!
//! It keeps nothing on disk: at start-up it waits for a voter's answer before the broker
//! registers and serves (a broker that cannot reach the quorum could not be unfenced
//! anyway). Voters answer from what they have applied, so whichever voter answers, the
//! observer's image is a prefix of the committed log; it follows the leader that voters
//! name so that a change it forwarded reaches it without a follower's delay.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use replication::metadata::{decode_batch, ClusterImage};
use replication::wire::PeerMessage;

use crate::peers::{self, Identity};

/// How long a voter may hold an observer's fetch when it has nothing new.
pub const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);

pub struct MetadataObserver {
    image: RefCell<Arc<ClusterImage>>,
    leader: Cell<Option<i32>>,
    term: Cell<u64>,
    commit: Cell<u64>,
    /// Whether a voter has answered at least once.
    synced: Cell<bool>,
    /// Notified whenever the image moves forward (or the first answer arrives).
    pub applied_event: event_listener::Event,
}

impl MetadataObserver {
    pub fn new() -> Rc<MetadataObserver> {
        Rc::new(MetadataObserver {
            image: RefCell::new(Arc::new(ClusterImage::default())),
            leader: Cell::new(None),
            term: Cell::new(0),
            commit: Cell::new(0),
            synced: Cell::new(false),
            applied_event: event_listener::Event::new(),
        })
    }

    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    /// The active controller as the last answering voter named it.
    pub fn leader(&self) -> Option<i32> {
        self.leader.get()
    }

    pub fn term(&self) -> u64 {
        self.term.get()
    }

    /// The commit index the last answering voter reported.
    pub fn commit_index(&self) -> u64 {
        self.commit.get()
    }

    /// Applies a voter's answer; false if it did not fit this image (the fetch is retried).
    fn absorb(&self, update: PeerMessage) -> bool {
        let PeerMessage::MetadataUpdate {
            leader,
            term,
            commit,
            image,
            entries,
        } = update
        else {
            return false;
        };
        let mut next = if image.is_empty() {
            (**self.image.borrow()).clone()
        } else {
            match ClusterImage::decode_snapshot(&image) {
                Ok(i) => {
                    tracing::info!(
                        offset = i.offset,
                        "metadata image taken from a voter's snapshot"
                    );
                    i
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a voter's metadata image could not be decoded");
                    return false;
                }
            }
        };
        let before = self.image.borrow().offset;
        for (index, data) in entries {
            if index <= next.offset {
                continue;
            }
            match decode_batch(&data) {
                Ok(records) => {
                    if let Err(e) = next.apply_batch(index, &records) {
                        tracing::error!(index, error = %e, "metadata batch refused");
                    }
                }
                Err(e) => {
                    next.offset = index;
                    tracing::error!(index, error = %e, "metadata entry this build cannot decode; skipped");
                }
            }
        }
        // A voter behind the one answered before must not take the image back.
        let moved = next.offset > before || (!self.synced.get() && next.offset >= before);
        if next.offset >= before {
            *self.image.borrow_mut() = Arc::new(next);
        }
        if term >= self.term.get() {
            self.term.set(term);
            self.leader.set((leader >= 0).then_some(leader));
        }
        self.commit.set(self.commit.get().max(commit));
        let first = !self.synced.replace(true);
        if moved || first {
            self.applied_event.notify(usize::MAX);
        }
        true
    }

    /// Fetches forever: from the leader when one is known, else from each voter in turn.
    pub async fn run(self: Rc<Self>, identity: Rc<Identity>) {
        let voters: Vec<i32> = identity.voters.iter().map(|v| v.node_id).collect();
        let mut next_voter = 0usize;
        let mut backoff = peers::RECONNECT_BACKOFF_MIN;
        let mut logged = false;
        loop {
            let target = match self.leader.get() {
                Some(l) => l,
                None => {
                    next_voter = (next_voter + 1) % voters.len().max(1);
                    voters[next_voter]
                }
            };
            let Some(addr) = identity.voter_addr(target) else {
                self.leader.set(None);
                continue;
            };
            let msg = PeerMessage::FetchMetadata {
                after: self.image.borrow().offset,
                max_wait_ms: FETCH_MAX_WAIT.as_millis() as u32,
            };
            match peers::call(&identity, &addr, &msg).await {
                Ok(update @ PeerMessage::MetadataUpdate { .. }) => {
                    if !self.absorb(update) {
                        self.leader.set(None);
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(peers::RECONNECT_BACKOFF_MAX);
                        continue;
                    }
                    if logged {
                        tracing::info!(voter = target, "metadata quorum reachable again");
                        logged = false;
                    }
                    backoff = peers::RECONNECT_BACKOFF_MIN;
                    continue;
                }
                Ok(other) => {
                    if !logged {
                        tracing::warn!(voter = target, answer = ?other, "metadata fetch refused; trying another voter");
                        logged = true;
                    }
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(voter = target, error = %format!("{e:#}"), "cannot fetch metadata; retrying");
                        logged = true;
                    }
                }
            }
            self.leader.set(None);
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(peers::RECONNECT_BACKOFF_MAX);
        }
    }
}
