#!/usr/bin/env bash
# Measures the bench issue's targets in one run on this machine: the machine's limits (fio
# direct write, iperf3 loopback), then a fresh release broker (--smp 2) under the max-rate
# workload (peak durable produce, tailing consume, catch-up read), then the fixed-rate
# workload at half the measured peak (produce and end-to-end latency), then the cross-core
# hop. Prints one table; results and charts land in $OUT (default bench-results/targets).
# BENCH_NICE=19 runs the load generator at that nice level, so that on a small machine it
# does not take CPU time from the broker it measures (say so when quoting such numbers).
#   bench/targets.sh [seconds]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-20}"
out="${OUT:-$root/bench-results/targets}"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-targets.XXXXXX")"
broker=
trap '[ -n "$broker" ] && kill $broker 2>/dev/null && wait $broker 2>/dev/null; rm -rf "$work"' EXIT
for tool in fio iperf3; do
  command -v $tool >/dev/null || { apt-get update -qq && apt-get install -y -qq fio iperf3 >/dev/null; }
done
(cd "$root" && cargo build --release -q -p broker -p bench)
bench_exe="$root/target/release/sluice-bench"
bench() { nice -n "${BENCH_NICE:-0}" "$bench_exe" "$@"; }
mkdir -p "$out"

echo "== limits (fio in $work, iperf3 on 127.0.0.1)"
bench limits --dir "$work" --seconds 10 --json "$out/limits.json"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$root/target/release/sluice" start --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --smp 2 --prop sluice.admin.listen=127.0.0.1:0 >"$work/broker.log" 2>&1 &
broker=$!
sleep 2
common=(--bootstrap "127.0.0.1:$port" --broker-pid "$broker" --out "$out" --duration-secs "$seconds")

echo "== peak: $root/bench/workloads/1-topic-16-partitions-1kb-max-rate.toml"
bench run "${common[@]}" --workload "$root/bench/workloads/1-topic-16-partitions-1kb-max-rate.toml"
peak="$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["produce"]["records_per_sec"]))' \
  "$out/1-topic-16-partitions-1kb-max-rate.json")"
half=$((peak / 2))

echo "== half the peak ($half records/s): $root/bench/workloads/1-topic-16-partitions-1kb-fixed-rate.toml"
bench run "${common[@]}" --workload "$root/bench/workloads/1-topic-16-partitions-1kb-fixed-rate.toml" \
  --rate "$half"

echo "== cross-core hop"
bench crosscore | tee "$out/crosscore.txt"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
lim = json.load(open(f"{out}/limits.json"))
peak = json.load(open(f"{out}/1-topic-16-partitions-1kb-max-rate.json"))
half = json.load(open(f"{out}/1-topic-16-partitions-1kb-fixed-rate.json"))
fio, tcp = lim["direct_write_mb_per_sec"], lim["loopback_tcp_mb_per_sec"]
rows = [
    ("durable produce MB/s vs fio direct write", peak["produce"]["mb_per_sec"], fio, ">= 50%"),
    ("tailing consume MB/s vs loopback TCP", peak["consume"]["mb_per_sec"], tcp, ">= 40%"),
    ("catch-up read MB/s vs loopback TCP", peak["catch_up"]["mb_per_sec"], tcp, "(info)"),
]
print(f"\n{'target':<44} {'measured':>10} {'limit':>10} {'ratio':>7}  goal")
for name, v, l, goal in rows:
    print(f"{name:<44} {v:>10.1f} {l:>10.1f} {v / l:>7.1%}  {goal}")
p, e = half["produce_latency"], half["end_to_end_latency"]
print(f"at {half['workload']['rate']} records/s ({half['produce']['mb_per_sec']:.1f} MB/s, half the peak):")
print(f"  produce p99 {p['p99_ms']:.2f} ms (goal <= 3), p99.9 {p['p999_ms']:.2f} ms (goal <= 10); "
      f"end-to-end p99 {e['p99_ms']:.2f} ms (goal <= 5)")
if peak.get("broker_cpu"):
    print(f"broker CPU at peak: {peak['broker_cpu']['seconds_per_gib']:.2f} s per GiB produced")
PY
