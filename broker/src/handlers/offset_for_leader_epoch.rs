//! OffsetForLeaderEpoch (key 23, v2-v4; KIP-101, KIP-320): for each partition and leader
//! epoch, the largest epoch at or below it this leader's log holds and the offset where
//! that epoch ended (the start of the next one, or the log end for the current one).
//! Consumers ask it after a leader change to see whether their position survived (a
//! position past the answer was truncated away); followers ask it to find where their log
//! diverged. `current_leader_epoch` is checked as for Fetch; an epoch this log knows
//! nothing at or below answers the undefined (-1, -1), as Kafka does.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;
use replication::LeaderEpoch;

use crate::api::RequestContext;
use crate::shard::ShardId;

pub async fn handle(
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let name = t.topic.0.to_string();
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut er = EpochEndOffset::default();
            er.partition = p.partition;
            er.leader_epoch = -1;
            er.end_offset = -1;
            match ctx.shard.owner_of(&name, p.partition).map(|s| s.0) {
                None => er.error_code = ctx.shard.not_served(&name, p.partition).code(),
                Some(shard) => {
                    let (topic, index) = (name.clone(), p.partition);
                    let (known, asked) = (p.current_leader_epoch, p.leader_epoch);
                    let answer = ctx
                        .shard
                        .invoke_on(ShardId(shard), move |s| async move {
                            let Some(part) = s.leader_partition(&topic, index) else {
                                return Err(ResponseError::NotLeaderOrFollower);
                            };
                            if let Some(code) =
                                super::leader_epoch_error(known, part.leader_epoch())
                            {
                                return Err(code);
                            }
                            Ok(part
                                .end_offset_for_epoch(LeaderEpoch(asked))
                                .map(|(e, o)| (e.0, o.0)))
                        })
                        .await;
                    match answer {
                        Ok(Ok(Some((epoch, end)))) => {
                            er.leader_epoch = epoch;
                            er.end_offset = end;
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(code)) => er.error_code = code.code(),
                        Err(_) => er.error_code = ResponseError::NotLeaderOrFollower.code(),
                    }
                }
            }
            tr.partitions.push(er);
        }
        resp.topics.push(tr);
    }
    resp
}
