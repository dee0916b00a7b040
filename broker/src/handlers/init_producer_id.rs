//! InitProducerId (key 22): ids for idempotent producers.
//!
//! As in Kafka, a producer without a transactional id always gets a fresh producer id with
//! epoch 0, also when it sends its old id and epoch to ask for a bump (KIP-360): a new id
//! starts a new sequence space just as well. Ids come from this shard's block, refilled from
//! the controller, which persists each block before handing it out.
//!
//! Transactions are not served yet: a transactional id gets COORDINATOR_NOT_AVAILABLE, the
//! same answer FindCoordinator gives for transaction coordinators.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::api::RequestContext;
use crate::shard::{Shard, ShardId};

pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    match req.transactional_id.as_ref().map(|t| t.as_str()) {
        None => {}
        // Kafka refuses an empty transactional id outright.
        Some("") => {
            resp.error_code = ResponseError::InvalidRequest.code();
            return resp;
        }
        Some(_) => {
            resp.error_code = ResponseError::CoordinatorNotAvailable.code();
            return resp;
        }
    }
    match next_producer_id(&ctx.shard).await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot allocate a producer id");
            resp.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    resp
}

async fn next_producer_id(shard: &Shard) -> anyhow::Result<i64> {
    loop {
        if let Some(id) = shard.producer_ids.borrow_mut().next() {
            return Ok(id);
        }
        let block = shard
            .invoke_on(ShardId(0), |s| async move {
                let c = s.controller.clone().expect("shard 0 runs the controller");
                c.allocate_producer_ids().await.map_err(|e| e.to_string())
            })
            .await?
            .map_err(anyhow::Error::msg)?;
        let mut ids = shard.producer_ids.borrow_mut();
        // Another request may have refilled it meanwhile; then this block goes unused.
        if ids.is_empty() {
            *ids = block;
        }
    }
}
