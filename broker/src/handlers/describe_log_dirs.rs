//! DescribeLogDirs (key 35): the one log directory, its partitions' sizes (asked of every
//! shard) and, from v4, the filesystem's total and usable bytes.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::str_bytes;
use crate::api::RequestContext;
use crate::metadata::topic_name;
use crate::shard::ShardId;

/// (total, available to unprivileged users) bytes of the filesystem holding `path`.
fn filesystem_bytes(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as i64;
    Some((st.f_blocks as i64 * unit, st.f_bavail as i64 * unit))
}

pub async fn handle(ctx: &RequestContext, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut sizes: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for shard in 0..ctx.shard.shard_count() {
        let Ok(snapshot) = ctx
            .shard
            .invoke_on(ShardId(shard), |s| async move { s.snapshot() })
            .await
        else {
            continue;
        };
        for p in snapshot.partitions {
            let keep = wanted
                .as_ref()
                .is_none_or(|w| w.get(&p.topic).is_some_and(|ps| ps.contains(&p.partition)));
            if keep {
                sizes
                    .entry(p.topic)
                    .or_default()
                    .push((p.partition, p.size_bytes as i64));
            }
        }
    }
    // Path resolution and statvfs block: off the shard's thread.
    let dir = ctx.shard.config.data_dir.clone();
    let (log_dir, (total, usable)) = glommio::executor()
        .spawn_blocking(move || {
            let shown = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            (shown, filesystem_bytes(&dir).unwrap_or((-1, -1)))
        })
        .await;
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(log_dir.display().to_string());
    result.total_bytes = total;
    result.usable_bytes = usable;
    result.topics = sizes
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_unstable();
            let mut t = DescribeLogDirsTopic::default();
            t.name = topic_name(&name);
            t.partitions = parts
                .into_iter()
                .map(|(p, size)| {
                    let mut x = DescribeLogDirsPartition::default();
                    x.partition_index = p;
                    x.partition_size = size;
                    x
                })
                .collect();
            t
        })
        .collect();
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![result];
    resp
}
