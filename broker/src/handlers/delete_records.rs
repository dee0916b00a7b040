//! DeleteRecords (key 21): moves each partition's log start offset up (on its owning shard),
//! deleting the segments wholly below it; offset -1 means the high watermark. Consumers
//! below the new start get OFFSET_OUT_OF_RANGE and reset per `auto.offset.reset`.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use crate::api::RequestContext;
use crate::errors::storage_error;
use crate::group::OFFSETS_TOPIC;
use crate::shard::ShardId;

pub async fn handle(ctx: &RequestContext, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let owner = ctx.shard.owner_of(&name, p.partition_index).map(|s| s.0);
            match owner {
                _ if name == OFFSETS_TOPIC => {
                    pr.error_code = ResponseError::InvalidTopicException.code()
                }
                None => pr.error_code = ctx.shard.not_served(&name, p.partition_index).code(),
                Some(shard) => {
                    let (topic, index, offset) = (name.clone(), p.partition_index, p.offset);
                    let done = ctx
                        .shard
                        .invoke_on(ShardId(shard), move |s| async move {
                            let Some(part) = s.leader_partition(&topic, index) else {
                                return Err(ResponseError::NotLeaderOrFollower);
                            };
                            part.delete_records(offset)
                                .await
                                .map(|o| o.0)
                                .map_err(|e| storage_error(&e))
                        })
                        .await;
                    match done {
                        Ok(Ok(low)) => pr.low_watermark = low,
                        Ok(Err(code)) => pr.error_code = code.code(),
                        Err(_) => pr.error_code = ResponseError::NotLeaderOrFollower.code(),
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
