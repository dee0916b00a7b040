//! `sluice`: a Kafka-wire-compatible, thread-per-core message broker.

mod admin;
mod api;
mod cli;
mod config;
mod controller;
mod controller_client;
mod errors;
mod group;
mod handlers;
mod metadata;
mod metadata_log;
mod metadata_observer;
mod metrics;
mod peers;
mod replica_fetcher;
mod runtime;
mod server;
mod shard;
mod shard_table;
mod topic_config;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: protocol::alloc::GuardedAlloc = protocol::alloc::GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka-compatible thread-per-core broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: cli::Global,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (single node by default on 127.0.0.1:9092, data in ./sluice-data).
    Start(StartArgs),
    /// Create, list, describe, delete topics and alter their configs.
    #[command(subcommand)]
    Topic(cli::TopicCmd),
    /// Write stdin lines to a topic, one record per line.
    Produce(cli::ProduceArgs),
    /// Print a topic's records.
    Consume(cli::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their offsets.
    #[command(subcommand)]
    Group(cli::GroupCmd),
    /// The cluster's id, controller and brokers.
    #[command(subcommand)]
    Cluster(cli::ClusterCmd),
}

#[derive(Parser)]
struct StartArgs {
    /// Address to listen on (Kafka `listeners`).
    #[arg(long, env = "SLUICE_LISTEN")]
    listen: Option<String>,
    /// Data directory (Kafka `log.dirs`).
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Number of shards (one per core by default).
    #[arg(long, env = "SLUICE_SMP")]
    smp: Option<usize>,
    /// A server.properties-style file with Kafka property names.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Any property as key=value (repeatable); applied last.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr on a full disk) is dropped: reporting
        // it would `eprintln!`, which panics on that same full stderr and ends the broker.
        .log_internal_errors(false)
        .init();
    // glommio logs through the `log` crate; route it into tracing.
    let _ = tracing_log::LogTracer::init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let g = &cli.global;
    match cli.command {
        Command::Topic(cmd) => cli::topic(g, cmd),
        Command::Produce(a) => cli::produce(g, a),
        Command::Consume(a) => cli::consume(g, a),
        Command::Group(cmd) => cli::group(g, cmd),
        Command::Cluster(cmd) => cli::cluster(g, cmd),
        Command::Start(args) => {
            let mut props = BTreeMap::new();
            if let Some(path) = &args.config {
                props.extend(config::read_properties(path)?);
            }
            props.extend(config::env_properties());
            for p in &args.props {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--prop {p}: expected KEY=VALUE"))?;
                props.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            if let Some(l) = args.listen {
                props.insert("listeners".into(), l);
            }
            if let Some(d) = args.data_dir {
                props.insert("log.dirs".into(), d.display().to_string());
            }
            if let Some(n) = args.smp {
                props.insert("sluice.smp".into(), n.to_string());
            }
            let mut cfg = config::BrokerConfig::default();
            cfg.apply(&props)?;
            runtime::run(cfg)
        }
    }
}
