//! DescribeTopicPartitions (key 75, KIP-966): topics and their partitions, as newer admin
//! clients describe topics. Topics by name, or all of them; answered in name order, at most
//! `response_partition_limit` partitions per response (capped by
//! `max.request.partition.size.limit`), continued from a cursor (topic, partition) that the
//! previous response's `next_cursor` gave. As in Kafka, asking for every topic leaves out
//! topics that do not exist (there are none to name), while named ones that do not exist get
//! UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for a name Kafka would refuse).
//! Partitions are built by `metadata::partitions`, as for Metadata; eligible leader replicas
//! and offline replicas are empty on a single node.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::metadata::{partitions, AUTHORIZED_OPERATIONS_OMITTED};
use crate::api::RequestContext;
use crate::group::OFFSETS_TOPIC;
use crate::metadata::{topic_name, validate_topic_name, MetadataImage};

pub fn handle(
    ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let node = BrokerId(ctx.shard.config.node_id);
    let limit = req
        .response_partition_limit
        .min(ctx.shard.config.max_request_partition_size_limit)
        .max(1) as usize;
    describe(&ctx.shard.metadata(), node, req, limit)
}

/// The response for `req` against `image`, at most `limit` (>= 1) partitions.
fn describe(
    image: &MetadataImage,
    node: BrokerId,
    req: DescribeTopicPartitionsRequest,
    limit: usize,
) -> DescribeTopicPartitionsResponse {
    debug_assert!(limit >= 1);
    let all = req.topics.is_empty();
    let cursor = req
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let from = cursor.as_ref().map_or("", |(t, _)| t.as_str());
    // Sorted and without repeats, from the cursor's topic on.
    let names: BTreeSet<String> = if all {
        image
            .topics
            .keys()
            .filter(|n| n.as_str() >= from)
            .cloned()
            .collect()
    } else {
        req.topics
            .iter()
            .map(|t| t.name.0.to_string())
            .filter(|n| n.as_str() >= from)
            .collect()
    };
    let invalid_cursor = match &cursor {
        Some((topic, _)) if !all && !names.contains(topic) => true,
        Some((_, partition)) => *partition < 0,
        None => false,
    };
    let mut resp = DescribeTopicPartitionsResponse::default();
    if invalid_cursor {
        // Kafka refuses the whole request: every named topic gets the error.
        resp.topics = req
            .topics
            .iter()
            .map(|t| error_topic(&t.name.0, ResponseError::InvalidRequest))
            .collect();
        return resp;
    }
    let mut remaining = limit;
    for name in names {
        if remaining == 0 {
            // Every partition of the topics before is answered: continue at this one.
            resp.next_cursor = Some(cursor_at(&name, 0));
            break;
        }
        let Some(meta) = image.topics.get(&name) else {
            if !all {
                let code = if validate_topic_name(&name).is_ok() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::InvalidTopicException
                };
                resp.topics.push(error_topic(&name, code));
            }
            continue;
        };
        let start = match &cursor {
            Some((topic, p)) if *topic == name => *p as usize,
            _ => 0,
        };
        let end = start.saturating_add(remaining);
        let mut t = topic(&name, meta.uuid());
        t.partitions = partitions(node, image, meta, start..end)
            .map(|v| {
                let mut p = DescribeTopicPartitionsResponsePartition::default();
                p.error_code = v.error_code;
                p.partition_index = v.index;
                p.leader_id = v.leader;
                p.leader_epoch = v.leader_epoch;
                p.replica_nodes = v.replicas;
                p.isr_nodes = v.isr;
                p.eligible_leader_replicas = Some(Vec::new());
                p.last_known_elr = Some(Vec::new());
                p.offline_replicas = v.offline;
                p
            })
            .collect();
        remaining -= t.partitions.len();
        resp.topics.push(t);
        if end < meta.partitions.len() {
            resp.next_cursor = Some(cursor_at(&name, end as i32));
            break;
        }
    }
    resp
}

fn topic(name: &str, id: Uuid) -> DescribeTopicPartitionsResponseTopic {
    let mut t = DescribeTopicPartitionsResponseTopic::default();
    t.name = Some(topic_name(name));
    t.topic_id = id;
    t.is_internal = name == OFFSETS_TOPIC;
    t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    t
}

fn error_topic(name: &str, code: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    let mut t = topic(name, Uuid::nil());
    t.error_code = code.code();
    t
}

fn cursor_at(name: &str, partition: i32) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = topic_name(name);
    c.partition_index = partition;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionMeta, TopicMeta};
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };

    fn image(topics: &[(&str, usize)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, (name, n)) in topics.iter().enumerate() {
            image.topics.insert(
                name.to_string(),
                TopicMeta {
                    id: format!("{:032x}", i + 1),
                    partitions: vec![PartitionMeta::on_shard(0); *n],
                    configs: Default::default(),
                },
            );
        }
        image
    }

    fn request(names: &[&str], cursor: Option<(&str, i32)>) -> DescribeTopicPartitionsRequest {
        let mut req = DescribeTopicPartitionsRequest::default();
        req.topics = names
            .iter()
            .map(|n| {
                let mut t = TopicRequest::default();
                t.name = topic_name(n);
                t
            })
            .collect();
        req.cursor = cursor.map(|(t, p)| {
            let mut c = RequestCursor::default();
            c.topic_name = topic_name(t);
            c.partition_index = p;
            c
        });
        req
    }

    /// (topic, first partition, partition count) per topic, and the next cursor.
    type Shape = (Vec<(String, i32, usize)>, Option<(String, i32)>);

    fn shape(r: &DescribeTopicPartitionsResponse) -> Shape {
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                let first = t.partitions.first().map_or(-1, |p| p.partition_index);
                (name, first, t.partitions.len())
            })
            .collect();
        let next = r
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.0.to_string(), c.partition_index));
        (topics, next)
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn pages_through_all_topics_with_the_cursor() {
        let img = image(&[("b", 3), ("a", 2), ("c", 1)]);
        let node = BrokerId(0);
        let r = describe(&img, node, request(&[], None), 4);
        assert_eq!(
            shape(&r),
            (vec![(s("a"), 0, 2), (s("b"), 0, 2)], Some((s("b"), 2)))
        );
        let r = describe(&img, node, request(&[], Some(("b", 2))), 4);
        assert_eq!(shape(&r), (vec![(s("b"), 2, 1), (s("c"), 0, 1)], None));
        // A limit reached exactly at a topic's end: the cursor names the next topic.
        let r = describe(&img, node, request(&[], None), 2);
        assert_eq!(shape(&r), (vec![(s("a"), 0, 2)], Some((s("b"), 0))));
        let p = &r.topics[0].partitions[1];
        assert_eq!((p.leader_id, p.leader_epoch), (node, 0));
        assert_eq!(
            (p.replica_nodes.clone(), p.isr_nodes.clone()),
            (vec![node], vec![node])
        );
        assert_eq!(p.eligible_leader_replicas, Some(vec![]));
        assert!(p.offline_replicas.is_empty());
        assert_eq!(r.topics[0].topic_id, img.topics["a"].uuid());
        assert_eq!(r.topics[0].topic_authorized_operations, i32::MIN);
    }

    #[test]
    fn named_topics_sorted_unknown_ones_reported_and_bad_cursors_refused() {
        let img = image(&[("a", 2), (OFFSETS_TOPIC, 1)]);
        let node = BrokerId(0);
        let r = describe(
            &img,
            node,
            request(&["zz", "a", OFFSETS_TOPIC, "a"], None),
            100,
        );
        assert_eq!(
            shape(&r).0,
            vec![(s(OFFSETS_TOPIC), 0, 1), (s("a"), 0, 2), (s("zz"), -1, 0)]
        );
        assert!(r.topics[0].is_internal && !r.topics[1].is_internal);
        assert_eq!(
            r.topics[2].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(r.topics[2].topic_id, Uuid::nil());
        let r = describe(&img, node, request(&["a"], Some(("b", 0))), 100);
        assert_eq!(r.topics[0].error_code, ResponseError::InvalidRequest.code());
        let r = describe(&img, node, request(&["a"], Some(("a", -1))), 100);
        assert_eq!(r.topics[0].error_code, ResponseError::InvalidRequest.code());
    }
}
