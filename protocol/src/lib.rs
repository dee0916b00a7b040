//! Kafka wire format for Sluice.
//!
//! - [`frame`]: the size-prefixed frame codec and the request/response envelopes (request
//!   header v0–v2, response header v0–v1) around the `kafka-protocol` message codecs.
//! - [`record_batch`]: a zero-copy view of a RecordBatch v2 header (validation, CRC32C,
//!   base-offset rewrite) that never decodes individual records.
//! - [`records`]: record-level reads of one batch (decompressing), for ListOffsets by time
//!   and re-compression for topics with a fixed codec.
//! - [`compression`]: bounded decompression (a stream that stops at a size limit).
//! - [`validate`]: the checks a client's batch passes before it is stored (Kafka's
//!   `LogValidator`), walking every record.
//! - [`client`]: a blocking request/response connection over any `Read + Write` stream, for
//!   the tools (CLI, bench).
//!
//! Architecture invariant: this crate knows nothing of executors, sockets or files; it maps
//! bytes to values and back (the client works on a stream its caller opened; only
//! `client::cluster` opens TCP connections, for the tools). Kafka error codes are chosen by
//! `broker/`, not here.

pub mod alloc;
pub mod client;
pub mod compression;
pub mod frame;
pub mod record_batch;
pub mod records;
pub mod validate;

pub use kafka_protocol;

// The codec tests feed hostile lengths to the decoders, so they need the same allocator the
// broker runs with.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::GuardedAlloc = alloc::GuardedAlloc;
