//! The replica rules of one partition, sans I/O (Kafka's `Partition`/`Replica` state on
//! the leader and `AbstractFetcherThread`'s truncation on the follower): what a leader
//! decides from its followers' fetches, and where a follower truncates after a leader
//! change. The partition and the shard's replica fetcher drive them; nothing here waits,
//! reads a clock or touches a disk, so every rule is checked by tables of cases.
//!
//! Sluice's promise is stronger than Kafka's: a follower fetches from offset `o` only
//! once everything below `o` is durable on its disk, so a fetch offset is a *durable* log
//! end offset, and the leader counts its own durable offset, not its log end. The high
//! watermark, the minimum over the ISR, is then an offset below which every in-sync
//! replica has fdatasync'ed the records: acks=all survives a simultaneous kill -9 of
//! every broker.
//!
//! Leader rules:
//! - **Caught up** (Kafka's `lastCaughtUpTimeMs`): a fetch at or past the leader's log end
//!   offset at that moment makes the follower caught up now; a fetch at or past the leader
//!   log end that the follower's *previous* fetch saw makes it caught up as of that fetch.
//! - **High watermark** = the minimum durable log end offset over the *maximal* ISR (the
//!   committed ISR plus members of an expansion still in flight at the controller, Kafka's
//!   KIP-497 rule: an acknowledgement never counts on a set the controller has not agreed
//!   to shrink). It never moves back.
//! - **Shrink**: an ISR member not caught up within `replica.lag.time.max.ms`.
//! - **Expand**: a replica outside the ISR whose log end reached the high watermark and
//!   the start of the leader's epoch (it holds everything this leader wrote before).
//! - **acks=all**: refused before the append (NOT_ENOUGH_REPLICAS) when the committed ISR
//!   is smaller than `min.insync.replicas`; once the high watermark passes the batch,
//!   NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below it meanwhile.
//!
//! Follower rules (KIP-101, KIP-279): a fetch carries the epoch of the follower's last
//! batch; the leader answers a diverging epoch when its log does not hold that epoch up to
//! the fetch offset, and the follower truncates to where the two logs last agree.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(doc)]
use storage::leader_epoch::LeaderEpochFileCache;
use storage::Offset;

use crate::{BrokerId, LeaderEpoch};

/// What the leader knows of one follower from its fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's durable log end offset (its last fetch offset); -1 before any fetch.
    pub log_end: Offset,
    /// When the follower was last caught up (ms on the leader's clock).
    pub last_caught_up_ms: u64,
    /// The leader's log end offset at the follower's previous fetch.
    last_fetch_leader_end: Offset,
    last_fetch_ms: u64,
}

/// A requested ISR change: the set to propose to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChange {
    Shrink(BTreeSet<BrokerId>),
    Expand(BTreeSet<BrokerId>),
}

/// Why an acks=all produce is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksError {
    /// NOT_ENOUGH_REPLICAS: the ISR is below `min.insync.replicas`; nothing was appended.
    NotEnoughReplicas { isr: usize, min_isr: usize },
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND: appended and replicated, but the ISR shrank below
    /// `min.insync.replicas` before the high watermark passed it.
    NotEnoughReplicasAfterAppend { isr: usize, min_isr: usize },
    /// NOT_LEADER_OR_FOLLOWER: this replica stopped leading before the batch replicated.
    NotLeader,
}

/// A leadership as the controller committed it.
#[derive(Debug, Clone, Copy)]
pub struct Leadership<'a> {
    pub me: BrokerId,
    pub epoch: LeaderEpoch,
    pub replicas: &'a [BrokerId],
    pub isr: &'a [BrokerId],
}

/// The leader's replica state of one partition for one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    me: BrokerId,
    epoch: LeaderEpoch,
    /// The first offset of this leader's epoch (its log end when it became leader).
    epoch_start: Offset,
    /// The ISR as the controller last committed it.
    isr: BTreeSet<BrokerId>,
    /// An ISR change sent to the controller and not yet answered.
    pending: Option<BTreeSet<BrokerId>>,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    high_watermark: Offset,
    lag_max_ms: u64,
}

impl LeaderState {
    /// Becomes leader of `replicas` with the committed `isr`, at `epoch`, with this node's
    /// log end `log_end` and its previous high watermark (a new leader keeps what it knew;
    /// followers catching up move it on). Followers count as caught up `now_ms`, so that a
    /// new leader does not shrink the ISR before they had a chance to fetch.
    pub fn new(
        lead: Leadership<'_>,
        log_end: Offset,
        high_watermark: Offset,
        lag_max_ms: u64,
        now_ms: u64,
    ) -> LeaderState {
        let Leadership {
            me,
            epoch,
            replicas,
            isr,
        } = lead;
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                (
                    *r,
                    FollowerProgress {
                        log_end: Offset(-1),
                        last_caught_up_ms: now_ms,
                        last_fetch_leader_end: Offset(-1),
                        last_fetch_ms: now_ms,
                    },
                )
            })
            .collect();
        LeaderState {
            me,
            epoch,
            epoch_start: log_end,
            isr: isr.iter().copied().collect(),
            pending: None,
            followers,
            high_watermark,
            lag_max_ms,
        }
    }

    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    pub fn isr(&self) -> &BTreeSet<BrokerId> {
        &self.isr
    }

    /// Every replica: this leader, then its followers.
    pub fn replicas(&self) -> Vec<BrokerId> {
        std::iter::once(self.me)
            .chain(self.followers.keys().copied())
            .collect()
    }

    pub fn follower(&self, id: BrokerId) -> Option<&FollowerProgress> {
        self.followers.get(&id)
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The ISR the high watermark waits for: the committed one plus any member an
    /// in-flight expansion adds.
    fn maximal_isr(&self) -> BTreeSet<BrokerId> {
        let mut s = self.isr.clone();
        if let Some(p) = &self.pending {
            s.extend(p.iter().copied());
        }
        s
    }

    /// A fetch from `follower` at `fetch_offset` (its durable log end) while this leader's
    /// log end is `leader_end`. Returns false for a replica this partition does not have.
    pub fn on_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: Offset,
        leader_end: Offset,
        now_ms: u64,
    ) -> bool {
        let Some(p) = self.followers.get_mut(&follower) else {
            return false;
        };
        if fetch_offset >= leader_end {
            p.last_caught_up_ms = now_ms;
        } else if p.last_fetch_leader_end.0 >= 0 && fetch_offset >= p.last_fetch_leader_end {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.log_end = fetch_offset;
        p.last_fetch_leader_end = leader_end;
        p.last_fetch_ms = now_ms;
        true
    }

    /// Recomputes the high watermark from the leader's own durable offset and the ISR's;
    /// returns it (it never moves back).
    pub fn update_high_watermark(&mut self, leader_durable: Offset) -> Offset {
        let mut min = leader_durable;
        for id in self.maximal_isr() {
            if id == self.me {
                continue;
            }
            let end = self.followers.get(&id).map_or(Offset(-1), |p| p.log_end);
            min = min.min(end);
        }
        if min > self.high_watermark {
            self.high_watermark = min;
        }
        self.high_watermark
    }

    /// The ISR change to propose now, if any (none while one is in flight): a shrink of
    /// members not caught up within the lag limit first, else an expansion by replicas
    /// that caught up with the high watermark and this epoch's start.
    pub fn isr_change(&self, now_ms: u64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let lagging: Vec<BrokerId> = self
            .isr
            .iter()
            .filter(|id| **id != self.me)
            .filter(|id| {
                self.followers
                    .get(id)
                    .is_none_or(|p| now_ms.saturating_sub(p.last_caught_up_ms) > self.lag_max_ms)
            })
            .copied()
            .collect();
        if !lagging.is_empty() {
            let mut next = self.isr.clone();
            for id in lagging {
                next.remove(&id);
            }
            return Some(IsrChange::Shrink(next));
        }
        let joining: Vec<BrokerId> = self
            .followers
            .iter()
            .filter(|(id, p)| {
                !self.isr.contains(id)
                    && p.log_end >= self.high_watermark
                    && p.log_end >= self.epoch_start
                    && now_ms.saturating_sub(p.last_caught_up_ms) <= self.lag_max_ms
            })
            .map(|(id, _)| *id)
            .collect();
        if joining.is_empty() {
            return None;
        }
        let mut next = self.isr.clone();
        next.extend(joining);
        Some(IsrChange::Expand(next))
    }

    /// Marks `change` as sent to the controller.
    pub fn propose(&mut self, change: &IsrChange) {
        let set = match change {
            IsrChange::Shrink(s) | IsrChange::Expand(s) => s.clone(),
        };
        self.pending = Some(set);
    }

    /// The controller's answer: the ISR it committed (the proposed one, or another when the
    /// proposal was stale), or `None` when it refused and nothing changed.
    pub fn isr_committed(&mut self, committed: Option<&[BrokerId]>) {
        self.pending = None;
        if let Some(isr) = committed {
            self.isr = isr.iter().copied().collect();
        }
    }

    /// The acks=all check before an append.
    pub fn check_before_append(&self, min_isr: usize) -> Result<(), AcksError> {
        let isr = self.isr.len();
        if isr < min_isr {
            return Err(AcksError::NotEnoughReplicas { isr, min_isr });
        }
        Ok(())
    }

    /// Whether an acks=all batch ending at `end_offset` (exclusive) is acknowledged:
    /// `None` while the high watermark is below it.
    pub fn acks_all_done(
        &self,
        end_offset: Offset,
        min_isr: usize,
    ) -> Option<Result<(), AcksError>> {
        if self.high_watermark < end_offset {
            return None;
        }
        let isr = self.isr.len();
        Some(if isr < min_isr {
            Err(AcksError::NotEnoughReplicasAfterAppend { isr, min_isr })
        } else {
            Ok(())
        })
    }
}

/// What a leader tells a follower whose log diverged (Fetch v12+'s DivergingEpoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivergingEpoch {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// The leader's check of a follower's fetch (KIP-320 / KIP-595's rule in Kafka's
/// `Partition.fetchRecords`): the follower's last batch has `last_fetched_epoch`; if this
/// leader's log ends that epoch before `fetch_offset`, or does not know it (answers a
/// smaller epoch), the follower diverged, and is told where the leader's largest epoch at
/// or below it ends. `None`: the follower's log is a prefix of the leader's up to
/// `fetch_offset` (or it has no epoch yet).
///
/// `end_offset_for` is the leader's OffsetsForLeaderEpoch answer
/// ([`LeaderEpochFileCache::end_offset_for`] with its log end offset).
pub fn check_divergence(
    end_offset_for: impl Fn(i32) -> Option<(i32, Offset)>,
    fetch_offset: Offset,
    last_fetched_epoch: Option<LeaderEpoch>,
) -> Option<DivergingEpoch> {
    let last = last_fetched_epoch?;
    match end_offset_for(last.0) {
        Some((epoch, end)) if epoch < last.0 || end < fetch_offset => Some(DivergingEpoch {
            epoch: LeaderEpoch(epoch),
            end_offset: end,
        }),
        Some(_) => None,
        // The leader knows no epoch at or below it (an empty or younger log): all of the
        // follower's log past the leader's start diverges.
        None => Some(DivergingEpoch {
            epoch: LeaderEpoch(-1),
            end_offset: Offset(-1),
        }),
    }
}

/// Where a follower truncates after a leader's `DivergingEpoch` (Kafka's
/// `getOffsetTruncationState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub offset: Offset,
    /// False when the follower does not hold the leader's epoch: it truncates to an
    /// intermediate offset and fetches again to learn more.
    pub complete: bool,
}

/// `end_offset_for` is the follower's own OffsetsForLeaderEpoch answer.
pub fn truncation(
    end_offset_for: impl Fn(i32) -> Option<(i32, Offset)>,
    follower_end: Offset,
    follower_high_watermark: Offset,
    diverging: DivergingEpoch,
) -> Truncation {
    if diverging.epoch.0 < 0 || diverging.end_offset.0 < 0 {
        // The leader has nothing in common to offer: keep what is known committed.
        return Truncation {
            offset: follower_high_watermark.min(follower_end),
            complete: true,
        };
    }
    match end_offset_for(diverging.epoch.0) {
        Some((epoch, end)) if epoch == diverging.epoch.0 => Truncation {
            offset: end.min(diverging.end_offset).min(follower_end),
            complete: true,
        },
        Some((_, end)) => Truncation {
            offset: end.min(diverging.end_offset).min(follower_end),
            complete: false,
        },
        None => Truncation {
            offset: follower_high_watermark.min(follower_end),
            complete: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::leader_epoch::LeaderEpochFileCache;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochFileCache {
        let mut c = LeaderEpochFileCache::default();
        for (e, o) in entries {
            assert!(c.assign(*e, Offset(*o)));
        }
        c
    }

    fn ids(v: &[i32]) -> BTreeSet<BrokerId> {
        v.iter().map(|i| BrokerId(*i)).collect()
    }

    fn leader3(isr: &[i32]) -> LeaderState {
        let replicas = [BrokerId(1), BrokerId(2), BrokerId(3)];
        let isr: Vec<BrokerId> = isr.iter().map(|i| BrokerId(*i)).collect();
        let lead = Leadership {
            me: BrokerId(1),
            epoch: LeaderEpoch(5),
            replicas: &replicas,
            isr: &isr,
        };
        LeaderState::new(lead, Offset(100), Offset(90), 30_000, 0)
    }

    #[test]
    fn the_high_watermark_is_the_minimum_durable_end_over_the_isr() {
        // (leader durable, follower 2 fetch, follower 3 fetch, isr) -> high watermark
        type Case = (i64, Option<i64>, Option<i64>, &'static [i32], i64);
        let cases: &[Case] = &[
            // Nobody fetched yet: the previous high watermark stays.
            (120, None, None, &[1, 2, 3], 90),
            // The slowest ISR member bounds it.
            (120, Some(110), Some(105), &[1, 2, 3], 105),
            // The leader's own durable offset bounds it too.
            (100, Some(110), Some(115), &[1, 2, 3], 100),
            // A replica outside the ISR does not count.
            (120, Some(118), Some(40), &[1, 2], 118),
            // The leader alone: its durable offset.
            (130, Some(10), Some(10), &[1], 130),
            // Never backwards: below the old high watermark it stays.
            (120, Some(50), Some(60), &[1, 2, 3], 90),
        ];
        for (i, (durable, f2, f3, isr, want)) in cases.iter().enumerate() {
            let mut l = leader3(isr);
            if let Some(o) = f2 {
                assert!(l.on_fetch(BrokerId(2), Offset(*o), Offset(120), 10));
            }
            if let Some(o) = f3 {
                assert!(l.on_fetch(BrokerId(3), Offset(*o), Offset(120), 10));
            }
            assert_eq!(
                l.update_high_watermark(Offset(*durable)),
                Offset(*want),
                "case {i}"
            );
        }
    }

    #[test]
    fn an_expansion_in_flight_holds_the_high_watermark_back() {
        let mut l = leader3(&[1, 2]);
        l.on_fetch(BrokerId(2), Offset(120), Offset(120), 10);
        l.on_fetch(BrokerId(3), Offset(100), Offset(120), 10);
        assert_eq!(l.update_high_watermark(Offset(120)), Offset(120));
        // 3 reached the high watermark... of an earlier moment; propose adding it.
        let mut l = leader3(&[1, 2]);
        l.on_fetch(BrokerId(2), Offset(120), Offset(120), 10);
        l.on_fetch(BrokerId(3), Offset(100), Offset(100), 10);
        assert_eq!(l.isr_change(10), Some(IsrChange::Expand(ids(&[1, 2, 3]))));
        l.propose(&IsrChange::Expand(ids(&[1, 2, 3])));
        // While the controller has not answered, 3 counts: the high watermark waits for it.
        assert_eq!(l.update_high_watermark(Offset(120)), Offset(100));
        assert_eq!(l.isr_change(10), None, "one change in flight at a time");
        l.isr_committed(Some(&[BrokerId(1), BrokerId(2), BrokerId(3)]));
        assert_eq!(l.isr(), &ids(&[1, 2, 3]));
    }

    #[test]
    fn isr_changes_follow_the_lag_rules() {
        // (follower 2's fetches as (at ms, fetch offset, leader end), isr, now) -> change
        type Fetches = &'static [(u64, i64, i64)];
        let cases: &[(Fetches, &[i32], u64, Option<IsrChange>)] = &[
            // Caught up at 1000 (fetched the leader's end): in the ISR within the lag.
            (&[(1000, 120, 120)], &[1, 2, 3], 30_000, None),
            // Caught up at 1000, nothing since: out after 30 s of lag.
            (
                &[(1000, 120, 120)],
                &[1, 2, 3],
                31_001,
                Some(IsrChange::Shrink(ids(&[1, 3]))),
            ),
            // Behind at every fetch, but each fetch reached the end the previous one saw:
            // caught up as of the previous fetch, so it stays.
            (
                &[(1000, 100, 120), (20_000, 120, 140), (40_000, 140, 160)],
                &[1, 2, 3],
                45_000,
                None,
            ),
            // Behind and falling further behind: out.
            (
                &[(1000, 100, 120), (20_000, 105, 140), (40_000, 110, 160)],
                &[1, 2, 3],
                45_000,
                Some(IsrChange::Shrink(ids(&[1, 3]))),
            ),
        ];
        for (i, (fetches, isr, now, want)) in cases.iter().enumerate() {
            let mut l = leader3(isr);
            for (at, off, end) in fetches.iter() {
                l.on_fetch(BrokerId(2), Offset(*off), Offset(*end), *at);
            }
            // Follower 3 keeps up throughout.
            l.on_fetch(BrokerId(3), Offset(1_000), Offset(1_000), *now);
            l.update_high_watermark(Offset(100));
            assert_eq!(l.isr_change(*now), *want, "case {i}");
        }
    }

    #[test]
    fn a_replica_rejoins_only_with_everything_of_this_epoch() {
        // The epoch started at 100; the high watermark is 90.
        let mut l = leader3(&[1, 2]);
        l.on_fetch(BrokerId(2), Offset(200), Offset(200), 5);
        l.on_fetch(BrokerId(3), Offset(95), Offset(95), 5);
        l.update_high_watermark(Offset(200));
        // 3 is past the old high watermark but not at this epoch's start nor the new mark.
        assert_eq!(l.isr_change(5), None);
        l.on_fetch(BrokerId(3), Offset(200), Offset(200), 6);
        assert_eq!(l.isr_change(6), Some(IsrChange::Expand(ids(&[1, 2, 3]))));
    }

    #[test]
    fn acks_all_follows_min_insync_replicas() {
        let mut l = leader3(&[1, 2, 3]);
        assert_eq!(l.check_before_append(2), Ok(()));
        l.on_fetch(BrokerId(2), Offset(150), Offset(150), 1);
        l.on_fetch(BrokerId(3), Offset(150), Offset(150), 1);
        assert_eq!(
            l.acks_all_done(Offset(150), 2),
            None,
            "not yet past the batch"
        );
        l.update_high_watermark(Offset(150));
        assert_eq!(l.acks_all_done(Offset(150), 2), Some(Ok(())));
        // The ISR shrank to the leader alone meanwhile.
        l.isr_committed(Some(&[BrokerId(1)]));
        assert_eq!(
            l.acks_all_done(Offset(150), 2),
            Some(Err(AcksError::NotEnoughReplicasAfterAppend {
                isr: 1,
                min_isr: 2
            }))
        );
        assert_eq!(
            l.check_before_append(2),
            Err(AcksError::NotEnoughReplicas { isr: 1, min_isr: 2 })
        );
        // A refused change leaves the ISR as it was.
        l.propose(&IsrChange::Expand(ids(&[1, 2])));
        l.isr_committed(None);
        assert_eq!(l.isr(), &ids(&[1]));
        assert!(
            !l.on_fetch(BrokerId(9), Offset(1), Offset(1), 1),
            "not a replica"
        );
    }

    #[test]
    fn divergence_and_truncation_follow_kip_101_and_kip_279() {
        struct Case {
            name: &'static str,
            leader: &'static [(i32, i64)],
            leader_end: i64,
            follower: &'static [(i32, i64)],
            follower_end: i64,
            follower_hw: i64,
            // Where the follower ends up and after how many fetches that diverged; None:
            // no divergence.
            want: Option<(i64, usize)>,
        }
        let cases = [
            Case {
                name: "a prefix of the leader's log does not diverge",
                leader: &[(0, 0), (1, 50)],
                leader_end: 100,
                follower: &[(0, 0), (1, 50)],
                follower_end: 80,
                follower_hw: 60,
                want: None,
            },
            Case {
                // KIP-101: the follower wrote past the point where its epoch ended on the
                // new leader (it was leader of epoch 1 and wrote 50..70 the others missed).
                name: "an unreplicated suffix of the old leader's epoch",
                leader: &[(0, 0), (1, 50), (2, 60)],
                leader_end: 90,
                follower: &[(0, 0), (1, 50)],
                follower_end: 70,
                follower_hw: 55,
                want: Some((60, 1)),
            },
            Case {
                // KIP-279: the follower holds an epoch the leader never had; the leader
                // answers its largest epoch below (0, ending at 40), which the follower has
                // too: truncate there.
                name: "an epoch the leader never saw",
                leader: &[(0, 0), (2, 40)],
                leader_end: 90,
                follower: &[(0, 0), (1, 40)],
                follower_end: 70,
                follower_hw: 30,
                want: Some((40, 1)),
            },
            Case {
                // The leader answers epoch 1, which the follower does not hold (its epochs
                // are 0 and 3): it truncates to where its epoch below ends (45), asks again
                // with epoch 0, and learns that epoch 0 ended at 30 on the leader.
                name: "the leader's epoch is unknown to the follower",
                leader: &[(0, 0), (1, 30), (4, 60)],
                leader_end: 90,
                follower: &[(0, 0), (3, 45)],
                follower_end: 70,
                follower_hw: 20,
                want: Some((30, 2)),
            },
            Case {
                name: "a leader with an empty log: back to the high watermark",
                leader: &[],
                leader_end: 0,
                follower: &[(2, 0)],
                follower_end: 70,
                follower_hw: 20,
                want: Some((20, 1)),
            },
            Case {
                // The leader's log starts later (retention): not a divergence; the fetch
                // gets OFFSET_OUT_OF_RANGE and the follower starts over at the log start.
                name: "an epoch older than the leader's first",
                leader: &[(5, 100)],
                leader_end: 150,
                follower: &[(2, 0)],
                follower_end: 70,
                follower_hw: 20,
                want: None,
            },
        ];
        for c in cases {
            let leader = cache(c.leader);
            let mut follower = cache(c.follower);
            let mut end = Offset(c.follower_end);
            let mut rounds = 0;
            // Fetch, truncate as told, until a fetch no longer diverges.
            loop {
                let last = follower.latest_epoch().map(LeaderEpoch);
                let leader_end = Offset(c.leader_end);
                let leader_end_for = |e| leader.end_offset_for(e, leader_end);
                let Some(d) = check_divergence(leader_end_for, end, last) else {
                    break;
                };
                rounds += 1;
                assert!(rounds <= 5, "{}: no end to the truncation", c.name);
                let t = truncation(
                    |e| follower.end_offset_for(e, end),
                    end,
                    Offset(c.follower_hw),
                    d,
                );
                assert!(t.offset <= end, "{}: truncation moves forward", c.name);
                end = t.offset;
                follower.truncate_from_end(end);
                if t.complete {
                    break;
                }
            }
            let got = (rounds > 0).then_some((end.0, rounds));
            assert_eq!(got, c.want, "{}", c.name);
        }
        // A follower with no epoch yet (an empty log) never diverges.
        let one = cache(&[(0, 0)]);
        assert_eq!(
            check_divergence(|e| one.end_offset_for(e, Offset(10)), Offset(0), None),
            None
        );
    }
}
