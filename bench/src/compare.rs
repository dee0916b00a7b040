//! The `compare` command: one workload against two Kafka-compatible addresses in
//! alternation (A B, then B A, ...), so slow drifts of a shared machine fall on both, and the
//! medians side by side with their ratio.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use serde::Serialize;

use crate::chart::{self, Series};
use crate::report::{write_result, WorkloadArgs};
use crate::run::{run, table, RunResult, Target};

#[derive(Parser, Clone, Debug)]
pub struct CompareArgs {
    /// First address (the baseline of the ratios).
    #[arg(long)]
    pub a: String,
    /// Second address.
    #[arg(long)]
    pub b: String,
    #[arg(long)]
    pub a_pid: Option<u32>,
    #[arg(long)]
    pub b_pid: Option<u32>,
    /// Runs per address.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// One metric's medians and the ratio b / a.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub metric: String,
    pub a: f64,
    pub b: f64,
    pub ratio: f64,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|x, y| x.total_cmp(y));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

type Metric = (&'static str, fn(&RunResult) -> f64);

const METRICS: &[Metric] = &[
    ("produce MB/s", |r| r.produce.mb_per_sec),
    ("produce records/s", |r| r.produce.records_per_sec),
    ("produce p50 ms", |r| r.produce_latency.p50_ms),
    ("produce p99 ms", |r| r.produce_latency.p99_ms),
    ("produce p99.9 ms", |r| r.produce_latency.p999_ms),
    ("produce max ms", |r| r.produce_latency.max_ms),
    ("consume MB/s", |r| r.consume.mb_per_sec),
    ("end-to-end p50 ms", |r| r.end_to_end_latency.p50_ms),
    ("end-to-end p99 ms", |r| r.end_to_end_latency.p99_ms),
    ("end-to-end p99.9 ms", |r| r.end_to_end_latency.p999_ms),
    ("broker CPU s/GiB", |r| {
        r.broker_cpu
            .as_ref()
            .map_or(f64::NAN, |c| c.seconds_per_gib)
    }),
];

/// Medians per metric of each side's runs, with b / a.
pub fn rows(a: &[RunResult], b: &[RunResult]) -> Vec<Row> {
    METRICS
        .iter()
        .map(|(name, f)| {
            let ma = median(a.iter().map(f).collect());
            let mb = median(b.iter().map(f).collect());
            Row {
                metric: (*name).to_owned(),
                a: ma,
                b: mb,
                ratio: mb / ma,
            }
        })
        .filter(|r| r.a.is_finite() || r.b.is_finite())
        .collect()
}

pub fn compare_cmd(c: CompareArgs) -> Result<()> {
    let w = c.workload.resolve()?;
    let targets = [
        Target {
            bootstrap: c.a.clone(),
            broker_pid: c.a_pid,
        },
        Target {
            bootstrap: c.b.clone(),
            broker_pid: c.b_pid,
        },
    ];
    let mut results: [Vec<RunResult>; 2] = [Vec::new(), Vec::new()];
    for round in 0..c.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            eprintln!(
                "== round {} of {}: {} ({})",
                round + 1,
                c.rounds,
                ["A", "B"][side],
                targets[side].bootstrap
            );
            let r = run(&w, &targets[side])?;
            eprint!("{}", table(&r));
            write_result(
                &c.out,
                &format!("{}-{}-round{}", w.name, ["a", "b"][side], round + 1),
                &r,
            )?;
            results[side].push(r);
        }
    }
    let rows = rows(&results[0], &results[1]);
    println!(
        "{} ({} rounds each; medians)\n{:<22} {:>14} {:>14} {:>8}",
        w.name, c.rounds, "metric", "A", "B", "B/A"
    );
    println!("{:<22} {:>14} {:>14}", "", c.a, c.b);
    for r in &rows {
        println!(
            "{:<22} {:>14.3} {:>14.3} {:>8.2}",
            r.metric, r.a, r.b, r.ratio
        );
    }
    std::fs::create_dir_all(&c.out)?;
    let json = c.out.join(format!("{}-compare.json", w.name));
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&serde_json::json!({
            "workload": w, "a": c.a, "b": c.b, "rows": rows,
            "a_runs": results[0], "b_runs": results[1],
        }))?,
    )?;
    // The last round of each side on one distribution chart.
    let mut series = Vec::new();
    for (side, rs) in results.iter().enumerate() {
        if let Some(r) = rs.last() {
            let label = ["A", "B"][side];
            series.push(Series {
                name: format!("{label} produce"),
                points: r.produce_spectrum.clone(),
            });
            if w.consumers > 0 {
                series.push(Series {
                    name: format!("{label} end-to-end"),
                    points: r.end_to_end_spectrum.clone(),
                });
            }
        }
    }
    let svg = c.out.join(format!("{}-compare-distribution.svg", w.name));
    std::fs::write(
        &svg,
        chart::distribution(&format!("{}: A = {}, B = {}", w.name, c.a, c.b), &series),
    )?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ignore_missing_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(vec![]).is_nan());
    }
}
