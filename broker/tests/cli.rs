//! The operator subcommands (`sluice topic|produce|consume|group|cluster`) against a real
//! broker, checked through their JSON output and through the wire.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Broker;
use serde_json::Value;

fn sluice(broker: &Broker, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .env("SLUICE_BOOTSTRAP", broker.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(broker: &Broker, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let (ok, out, err) = sluice(broker, &all, None);
    assert!(ok, "{args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn cli_manages_topics_records_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, &[]);

    let created = ok_json(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    );
    assert_eq!(created["partitions"], 3);
    let (ok, _, err) = sluice(&broker, &["topic", "create", "orders"], None);
    assert!(!ok && err.contains("TopicAlreadyExists"), "{err}");
    let (ok, _, err) = sluice(
        &broker,
        &["topic", "create", "bad", "--config", "retention.ms=soon"],
        None,
    );
    assert!(!ok && err.contains("InvalidConfig"), "{err}");

    let list = ok_json(&broker, &["topic", "list"]);
    assert_eq!(list[0]["topic"], "orders");
    let d = ok_json(&broker, &["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["configs"]["retention.ms"], "3600000");
    let p0 = &d["partitions"][0];
    assert_eq!(p0["leader"], 0, "{d}");
    assert_eq!(p0["leader_epoch"], 0, "{d}");
    assert_eq!(p0["replicas"], serde_json::json!([0]), "{d}");
    assert_eq!(p0["isr"], serde_json::json!([0]), "{d}");
    assert_eq!(p0["offline"], serde_json::json!([]), "{d}");

    // Produce keyed lines with a header; the same key always lands in one partition.
    let lines: String = (0..30).map(|i| format!("k{}:v{i}\n", i % 5)).collect();
    let (ok, _, err) = sluice(
        &broker,
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
        ],
        Some(&lines),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = sluice(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "30",
            "--format",
            "json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 30);
    let mut where_key = std::collections::BTreeMap::new();
    for r in &recs {
        assert_eq!(r["headers"]["src"], "cli");
        let k = r["key"].as_str().unwrap().to_owned();
        let p = r["partition"].as_i64().unwrap();
        assert_eq!(
            *where_key.entry(k).or_insert(p),
            p,
            "a key in two partitions"
        );
    }
    let mut values: Vec<String> = recs
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_owned())
        .collect();
    values.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(values, want);

    // A group's offsets: consume with --group commits; describe shows lag 0; reset moves it.
    let (ok, out, err) = sluice(
        &broker,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--group",
            "cg",
            "--timeout-ms",
            "1000",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 30);
    let g = ok_json(&broker, &["group", "describe", "cg"]);
    let lags: Vec<i64> = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lag"].as_i64().unwrap())
        .collect();
    assert_eq!(lags, vec![0, 0, 0]);
    let (ok, out, _) = sluice(
        &broker,
        &["consume", "orders", "--group", "cg", "--timeout-ms", "800"],
        None,
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 0, "resumes at the committed offsets");
    ok_json(
        &broker,
        &[
            "group",
            "reset-offsets",
            "cg",
            "--topic",
            "orders",
            "--to-earliest",
        ],
    );
    let (ok, out, _) = sluice(
        &broker,
        &["consume", "orders", "--group", "cg", "--timeout-ms", "800"],
        None,
    );
    assert!(ok);
    assert_eq!(
        out.lines().count(),
        30,
        "reset to earliest re-reads everything"
    );
    let groups = ok_json(&broker, &["group", "list"]);
    assert_eq!(groups[0]["group"], "cg");

    let (ok, _, err) = sluice(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "segment.bytes=1048576",
            "--delete",
            "retention.ms",
        ],
        None,
    );
    assert!(ok, "{err}");
    let d = ok_json(&broker, &["topic", "describe", "orders"]);
    assert_eq!(d["configs"]["segment.bytes"], "1048576");
    assert!(d["configs"].get("retention.ms").is_none());

    // Two `consume --group` processes share the partitions: each record printed once.
    let (ok, _, _) = sluice(
        &broker,
        &["topic", "create", "shared", "--partitions", "4"],
        None,
    );
    assert!(ok);
    let lines: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    assert!(
        sluice(
            &broker,
            &["produce", "shared", "--key-separator", ":"],
            Some(&lines)
        )
        .0
    );
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "consume",
                "shared",
                "--group",
                "pair",
                "--from-beginning",
                "--timeout-ms",
                "6000",
            ])
            .env("SLUICE_BOOTSTRAP", broker.addr.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let (one, two) = (
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    );
    assert!(one.status.success() && two.status.success());
    // Both joined within the initial rebalance delay, so both got partitions.
    assert!(
        !one.stdout.is_empty() && !two.stdout.is_empty(),
        "the partitions were not shared"
    );
    let mut seen: Vec<String> = String::from_utf8_lossy(&one.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&two.stdout).lines())
        .map(str::to_owned)
        .collect();
    seen.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(seen, want, "each record exactly once across the group");

    let info = ok_json(&broker, &["cluster", "info"]);
    assert_eq!(info["brokers"][0]["address"], broker.addr.to_string());
    assert_eq!(info["brokers"][0]["state"], "unfenced", "{info}");
    // A single node is its own one-voter quorum: the controller, with no lag.
    assert_eq!(info["controller"], 0, "{info}");
    assert_eq!(info["voters"][0]["node_id"], 0, "{info}");
    assert_eq!(info["voters"][0]["lag"], 0, "{info}");

    assert!(sluice(&broker, &["group", "delete", "cg"], None).0);
    assert!(sluice(&broker, &["topic", "delete", "orders"], None).0);
    let list = ok_json(&broker, &["topic", "list"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["topic"] != "orders"));
}
