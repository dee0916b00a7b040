//! Runs every shipped workload (shortened) against a real Sluice broker, and the compare and
//! cross-core commands: each must finish without errors and leave a JSON result whose
//! numbers show that records really went through, plus charts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bench_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"))
}

/// The broker binary beside the bench's (built by `cargo test --workspace`; built here when
/// only this package's tests run).
fn broker_exe() -> PathBuf {
    let exe = bench_exe().with_file_name("sluice");
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "broker"]);
        if bench_exe().parent().and_then(Path::file_name) == Some("release".as_ref()) {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the broker");
    }
    exe
}

struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("broker.log");
    let child = Command::new(broker_exe())
        .args([
            "start",
            "--listen",
            "127.0.0.1:0",
            "--smp",
            "2",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .args(["--prop", "sluice.admin.listen=127.0.0.1:0"])
        // 1,000 partitions: small preallocation steps and write buffers.
        .args(["--prop", "sluice.log.preallocate.bytes=1048576"])
        .args(["--prop", "sluice.log.write.buffer.bytes=65536"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut broker = Broker {
        child,
        addr: "127.0.0.1:0".parse().unwrap(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = text
            .lines()
            .find(|l| l.contains("sluice ready"))
            .and_then(|l| l.split("listen=").nth(1))
            .and_then(|r| {
                r.chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect::<String>()
                    .parse()
                    .ok()
            });
        if let Some(addr) = addr {
            broker.addr = addr;
            return broker;
        }
        assert!(Instant::now() < deadline, "broker did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bench(args: &[&str]) -> String {
    let out = Command::new(bench_exe()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sluice-bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn workload_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_workload_runs_and_reports() {
    let broker = start_broker();
    let out = tempfile::tempdir().unwrap();
    let files = workload_files();
    assert!(
        files.len() >= 6,
        "the shipped workloads are missing: {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let addr = broker.addr.to_string();
        let stdout = bench(&[
            "run",
            "--bootstrap",
            &addr,
            "--workload",
            file.to_str().unwrap(),
            "--warmup-secs",
            "1",
            "--duration-secs",
            "2",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert!(stdout.contains("p99.9"), "no table for {name}: {stdout}");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let produced = json["produce"]["records"].as_u64().unwrap();
        assert!(produced > 0, "{name}: nothing produced: {json}");
        assert!(
            json["produce_latency"]["count"].as_u64().unwrap() > 0,
            "{name}"
        );
        assert!(
            json["produce_latency"]["p99_ms"].as_f64().unwrap() > 0.0,
            "{name}"
        );
        assert_eq!(json["errors"], serde_json::json!({}), "{name}");
        if json["workload"]["consumers"].as_u64().unwrap() > 0 {
            assert!(
                json["consume"]["records"].as_u64().unwrap() > 0,
                "{name}: {json}"
            );
            assert!(
                json["end_to_end_latency"]["count"].as_u64().unwrap() > 0,
                "{name}: no end-to-end latency: {json}"
            );
        }
        if json["workload"]["catch_up_read"].as_bool().unwrap() {
            // The topic holds warm-up and measured records: at least the measured ones.
            assert!(
                json["catch_up"]["records"].as_u64().unwrap() >= produced,
                "{name}"
            );
        }
        assert!(!json["timeline"].as_array().unwrap().is_empty(), "{name}");
        for chart in ["over-time", "distribution"] {
            let svg =
                std::fs::read_to_string(out.path().join(format!("{name}-{chart}.svg"))).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("polyline"),
                "{name} {chart}"
            );
        }
    }
}

#[test]
fn an_open_loop_run_holds_its_rate() {
    let broker = start_broker();
    let out = tempfile::tempdir().unwrap();
    let addr = broker.addr.to_string();
    bench(&[
        "run",
        "--bootstrap",
        &addr,
        "--name",
        "rate",
        "--topic",
        "rate",
        "--partitions",
        "4",
        "--rate",
        "2000",
        "--warmup-secs",
        "1",
        "--duration-secs",
        "3",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("rate.json")).unwrap())
            .unwrap();
    let rate = json["produce"]["records_per_sec"].as_f64().unwrap();
    assert!(
        (1500.0..=2500.0).contains(&rate),
        "asked for 2000 records/s, measured {rate}"
    );
}

#[test]
fn compare_runs_both_sides_and_prints_ratios() {
    let broker = start_broker();
    let out = tempfile::tempdir().unwrap();
    let addr = broker.addr.to_string();
    let stdout = bench(&[
        "compare",
        "--a",
        &addr,
        "--b",
        &addr,
        "--rounds",
        "1",
        "--name",
        "cmp",
        "--topic",
        "cmp",
        "--partitions",
        "2",
        "--rate",
        "1000",
        "--warmup-secs",
        "0.5",
        "--duration-secs",
        "1.5",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(stdout.contains("B/A"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("cmp-compare.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["a_runs"].as_array().unwrap().len(), 1);
    assert_eq!(json["b_runs"].as_array().unwrap().len(), 1);
    let row = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "produce records/s")
        .unwrap()
        .clone();
    assert!(row["a"].as_f64().unwrap() > 0.0 && row["b"].as_f64().unwrap() > 0.0);
    assert!(out.path().join("cmp-compare-distribution.svg").exists());
}

#[test]
fn crosscore_reports_latency_and_rate() {
    let stdout = bench(&["crosscore", "--round-trips", "2000", "--seconds", "1"]);
    let rate: f64 = stdout
        .split("cross-core throughput: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no throughput in: {stdout}"));
    assert!(rate > 0.0, "{stdout}");
    assert!(stdout.contains("round trip p50"), "{stdout}");
}
