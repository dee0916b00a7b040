//! The machine's physical limits, measured in the same run as a benchmark so results can be
//! quoted as fractions of them: direct sequential write bandwidth (fio, `direct=1`, on the
//! filesystem that will hold the broker's data) and single-stream loopback TCP bandwidth
//! (iperf3).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Clone, Debug)]
pub struct LimitsArgs {
    /// A directory on the filesystem the broker writes to (fio writes a scratch file here).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// fio: 1 MiB sequential O_DIRECT writes, queue depth 4, io_uring, fsync at the end.
    pub direct_write_mb_per_sec: f64,
    /// iperf3: one TCP stream over 127.0.0.1.
    pub loopback_tcp_mb_per_sec: f64,
}

fn need(tool: &str) -> Result<()> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        bail!("{tool} is not installed (apt-get install {tool})");
    }
    Ok(())
}

/// fio's write bandwidth in MB/s (10^6 bytes) for `seconds` of sequential direct writes.
pub fn fio_direct_write(dir: &std::path::Path, seconds: u64) -> Result<f64> {
    need("fio")?;
    let scratch = tempfile_dir(dir)?;
    let out = Command::new("fio")
        .args([
            "--name=seqwrite",
            "--rw=write",
            "--direct=1",
            "--bs=1M",
            "--iodepth=4",
            "--ioengine=io_uring",
            "--size=2G",
            "--time_based",
            "--end_fsync=1",
            "--output-format=json",
        ])
        .arg(format!("--runtime={seconds}"))
        .arg(format!("--directory={}", scratch.display()))
        .output()
        .context("running fio")?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_fio(&out.stdout)
}

fn tempfile_dir(dir: &std::path::Path) -> Result<PathBuf> {
    let p = dir.join(format!(".sluice-bench-fio-{}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Write bandwidth (MB/s) from fio's JSON output.
pub fn parse_fio(json: &[u8]) -> Result<f64> {
    // fio may print warnings before the JSON document.
    let text = String::from_utf8_lossy(json);
    let start = text
        .find('{')
        .ok_or_else(|| anyhow!("no JSON in fio output"))?;
    let v: serde_json::Value = serde_json::from_str(&text[start..]).context("fio JSON")?;
    let bw = v["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .ok_or_else(|| anyhow!("fio JSON has no jobs[0].write.bw_bytes"))?;
    Ok(bw / 1e6)
}

/// iperf3's single-stream loopback bandwidth in MB/s.
pub fn iperf3_loopback(seconds: u64) -> Result<f64> {
    need("iperf3")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-J", "-p", &port.to_string()])
        .arg(format!("-t{seconds}"))
        .output()
        .context("running iperf3 -c");
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    if !out.status.success() {
        bail!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    parse_iperf3(&out.stdout)
}

/// Received bandwidth (MB/s) from iperf3's JSON output.
pub fn parse_iperf3(json: &[u8]) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_slice(json).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON has no end.sum_received.bits_per_second"))?;
    Ok(bps / 8.0 / 1e6)
}

pub fn measure(dir: &std::path::Path, seconds: u64) -> Result<Limits> {
    Ok(Limits {
        direct_write_mb_per_sec: fio_direct_write(dir, seconds)?,
        loopback_tcp_mb_per_sec: iperf3_loopback(seconds)?,
    })
}

pub fn limits_cmd(a: LimitsArgs) -> Result<()> {
    let l = measure(&a.dir, a.seconds)?;
    println!(
        "direct sequential write (fio, {}): {:.0} MB/s",
        a.dir.display(),
        l.direct_write_mb_per_sec
    );
    println!(
        "loopback TCP, one stream (iperf3): {:.0} MB/s ({:.1} Gbit/s)",
        l.loopback_tcp_mb_per_sec,
        l.loopback_tcp_mb_per_sec * 8.0 / 1000.0
    );
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&l)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_and_iperf3_json_are_read() {
        let fio = br#"note: both iodepth >= 1 and synchronous I/O engine are selected
{"fio version": "fio-3.33", "jobs": [{"jobname": "seqwrite", "write": {"bw_bytes": 1500000000}}]}"#;
        assert_eq!(parse_fio(fio).unwrap(), 1500.0);
        let iperf = br#"{"end": {"sum_sent": {"bits_per_second": 2e10}, "sum_received": {"bits_per_second": 1.6e10}}}"#;
        assert_eq!(parse_iperf3(iperf).unwrap(), 2000.0);
        assert!(parse_fio(b"fio: no such engine").is_err());
        assert!(parse_iperf3(br#"{"error": "unable to connect"}"#).is_err());
    }
}
