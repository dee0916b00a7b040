//! InitProducerId (key 22): ids for idempotent producers.
//!
//! As in Kafka, a producer without a transactional id always gets a fresh producer id with
//! epoch 0, also when it sends its old id and epoch to ask for a bump (KIP-360): a new id
//! starts a new sequence space just as well. Ids come from this shard's block, refilled from
//! the controller, which persists each block before handing it out.
//!
//! Transactions are not served yet: a transactional id gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//! at once, the answer FindCoordinator gives for transaction coordinators too. Clients treat
//! it as fatal and say so (librdkafka's `init_transactions` fails with it), where
//! COORDINATOR_NOT_AVAILABLE, retriable, had them retry until their timeout.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::find_coordinator::TRANSACTIONS_REFUSED;
use crate::api::RequestContext;
use crate::controller_client::{ControllerClient, ProducerIdsError};
use crate::errors::producer_ids_error;
use crate::shard::Shard;

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
        Some(id) => {
            super::find_coordinator::refuse_transactions(ctx, "InitProducerId", id);
            resp.error_code = TRANSACTIONS_REFUSED.code();
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
            resp.error_code = producer_ids_error(&e).code();
        }
    }
    resp
}

async fn next_producer_id(shard: &Shard) -> Result<i64, ProducerIdsError> {
    loop {
        if let Some(id) = shard.producer_ids.borrow_mut().next() {
            return Ok(id);
        }
        let block = ControllerClient::new(shard).allocate_producer_ids().await?;
        let mut ids = shard.producer_ids.borrow_mut();
        // Another request may have refilled it meanwhile; then this block goes unused.
        if ids.is_empty() {
            *ids = block;
        }
    }
}
