//! The `run` command: workload flags, and the files a run leaves behind (JSON result and
//! SVG charts).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;

use crate::chart::{self, Series};
use crate::run::{run, table, RunResult, Target};
use crate::workload::{Codec, Workload};

/// Workload selection: a file, then flags that override its fields.
#[derive(Parser, Clone, Debug)]
pub struct WorkloadArgs {
    /// Workload file (TOML, or JSON when it ends in .json); defaults apply without one.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long)]
    pub topics: Option<u32>,
    #[arg(long)]
    pub partitions: Option<i32>,
    #[arg(long)]
    pub record_bytes: Option<u32>,
    #[arg(long)]
    pub producers: Option<u32>,
    #[arg(long)]
    pub consumers: Option<u32>,
    #[arg(long)]
    pub consumer_group: Option<String>,
    /// Records per second over all producers; 0 = as fast as acknowledgements allow.
    #[arg(long)]
    pub rate: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub acks: Option<i16>,
    #[arg(long, value_enum)]
    pub compression: Option<Codec>,
    #[arg(long)]
    pub linger_ms: Option<f64>,
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    #[arg(long)]
    pub buffer_bytes: Option<usize>,
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    #[arg(long)]
    pub duration_secs: Option<f64>,
    #[arg(long)]
    pub catch_up_read: Option<bool>,
    #[arg(long)]
    pub delete_topics: Option<bool>,
}

impl WorkloadArgs {
    pub fn resolve(&self) -> Result<Workload> {
        let mut w = match &self.workload {
            Some(p) => Workload::load(p)?,
            None => Workload::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { w.$f = v.clone(); } )* };
        }
        set!(
            name,
            topic,
            topics,
            partitions,
            record_bytes,
            producers,
            consumers,
            rate,
            acks,
            compression,
            linger_ms,
            batch_bytes,
            max_in_flight,
            buffer_bytes,
            warmup_secs,
            duration_secs,
            catch_up_read,
            delete_topics
        );
        if self.consumer_group.is_some() {
            w.consumer_group = self.consumer_group.clone();
        }
        w.validate()?;
        Ok(w)
    }
}

#[derive(Parser, Clone, Debug)]
pub struct RunArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// pid of a broker on this host: its CPU seconds per GiB are reported.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Directory for `<name>.json` and the charts.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

pub fn run_cmd(a: RunArgs) -> Result<()> {
    let w = a.workload.resolve()?;
    let target = Target {
        bootstrap: a.bootstrap.clone(),
        broker_pid: a.broker_pid,
    };
    let r = run(&w, &target)?;
    print!("{}", table(&r));
    let files = write_result(&a.out, &w.name, &r)?;
    for f in files {
        println!("wrote {}", f.display());
    }
    if !r.errors.is_empty() {
        anyhow::bail!("the broker answered with errors: {:?}", r.errors);
    }
    Ok(())
}

/// Milliseconds-over-time lines of a run: produce p50/p99/p99.9/max, end-to-end p50/p99.
pub fn timeline_series(r: &RunResult) -> Vec<Series> {
    let line = |name: &str, f: &dyn Fn(&crate::stats::Interval) -> Option<f64>| Series {
        name: name.to_owned(),
        points: r
            .timeline
            .iter()
            .filter_map(|iv| f(iv).map(|v| (iv.t, v)))
            .collect(),
    };
    let mut out = vec![
        line("produce p50", &|i| {
            (i.produce.count > 0).then_some(i.produce.p50_ms)
        }),
        line("produce p99", &|i| {
            (i.produce.count > 0).then_some(i.produce.p99_ms)
        }),
        line("produce p99.9", &|i| {
            (i.produce.count > 0).then_some(i.produce.p999_ms)
        }),
        line("produce max", &|i| {
            (i.produce.count > 0).then_some(i.produce.max_ms)
        }),
    ];
    if r.workload.consumers > 0 {
        out.push(line("end-to-end p50", &|i| {
            (i.end_to_end.count > 0).then_some(i.end_to_end.p50_ms)
        }));
        out.push(line("end-to-end p99", &|i| {
            (i.end_to_end.count > 0).then_some(i.end_to_end.p99_ms)
        }));
    }
    out
}

/// Writes `<dir>/<name>.json`, `<name>-over-time.svg` and `<name>-distribution.svg`.
pub fn write_result(dir: &Path, name: &str, r: &RunResult) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let over = dir.join(format!("{name}-over-time.svg"));
    std::fs::write(
        &over,
        chart::over_time(
            &format!("{name}: latency per second ({})", r.bootstrap),
            "latency (ms)",
            &timeline_series(r),
        ),
    )?;
    let mut dist = vec![Series {
        name: "produce".into(),
        points: r.produce_spectrum.clone(),
    }];
    if r.workload.consumers > 0 {
        dist.push(Series {
            name: "end-to-end".into(),
            points: r.end_to_end_spectrum.clone(),
        });
    }
    let dist_path = dir.join(format!("{name}-distribution.svg"));
    std::fs::write(
        &dist_path,
        chart::distribution(
            &format!("{name}: latency distribution ({})", r.bootstrap),
            &dist,
        ),
    )?;
    Ok(vec![json, over, dist_path])
}
