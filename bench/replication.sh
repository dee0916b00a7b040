#!/usr/bin/env bash
# Replication factor 3 against 1, side by side in one run on one 3-node cluster
# (deploy/cluster.sh, one shard per node): two topics of 16 partitions, `rf1` and `rf3`,
# and the same workload against each in alternation (rf1 rf3 rf3 rf1 ...), so that drift of
# a shared, noisy machine falls on both. Prints each round and the medians with rf3/rf1
# ratios; results land in $OUT (default bench-results/replication).
#   bench/replication.sh [workload.toml] [rounds] [seconds]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
workload="${1:-$root/bench/workloads/1-topic-16-partitions-1kb-max-rate.toml}"
rounds="${2:-2}"
seconds="${3:-15}"
out="${OUT:-$root/bench-results/replication}"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-replication.XXXXXX")"
(cd "$root" && cargo build --release -q -p broker -p bench)
base="$(bash "$root/deploy/cluster.sh" free-base-port 3 --base-port 25000)"
cl=(--dir "$work" --bin "$root/target/release/sluice" --base-port "$base")
trap 'bash "$root/deploy/cluster.sh" down "${cl[@]}" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
bash "$root/deploy/cluster.sh" up 3 "${cl[@]}" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
bootstrap="127.0.0.1:$base" # the bench learns the other brokers from Metadata
for rf in 1 3; do
  "$root/target/release/sluice" topic create "rf$rf" --partitions 16 --replication-factor $rf \
    --bootstrap "127.0.0.1:$base" >/dev/null
done
sleep 2
mkdir -p "$out"
order=()
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order+=(1 3); else order+=(3 1); fi
done
i=0
for rf in "${order[@]}"; do
  i=$((i + 1))
  "$root/target/release/sluice-bench" run --bootstrap "$bootstrap" --workload "$workload" \
    --topic "rf$rf" --name "rf$rf-$i" --duration-secs "$seconds" --warmup-secs 3 \
    --catch-up-read false --delete-topics false --out "$out" >"$out/rf$rf-$i.txt" 2>&1 ||
    { tail -20 "$out/rf$rf-$i.txt"; exit 1; }
  echo "round $i: rf$rf done"
done
python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {1: [], 3: []}
for path in sorted(glob.glob(os.path.join(out, "rf*-*.json"))):
    rf = int(os.path.basename(path)[2])
    rows[rf].append(json.load(open(path)))
def pick(d, *keys):
    for k in keys:
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d if isinstance(d, (int, float)) else None
fields = [
    ("produce records/s", ("produce", "records_per_sec")),
    ("produce MB/s", ("produce", "mb_per_sec")),
    ("produce p50 ms", ("produce_latency", "p50_ms")),
    ("produce p99 ms", ("produce_latency", "p99_ms")),
    ("produce p99.9 ms", ("produce_latency", "p999_ms")),
    ("end-to-end p99 ms", ("end_to_end_latency", "p99_ms")),
]
print(f"{'':22} {'rf1 median':>12} {'rf3 median':>12} {'rf3/rf1':>8}")
for name, keys in fields:
    med = {}
    for rf in (1, 3):
        vals = [v for v in (pick(r, *keys) for r in rows[rf]) if v is not None]
        med[rf] = statistics.median(vals) if vals else None
    ratio = f"{med[3] / med[1]:.2f}" if med[1] and med[3] is not None else "-"
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"{name:22} {fmt(med[1]):>12} {fmt(med[3]):>12} {ratio:>8}")
errors = {rf: sum(sum(r["errors"].values()) for r in rows[rf]) for rf in (1, 3)}
print(f"errors: rf1 {errors[1]}, rf3 {errors[3]}; runs: rf1 {len(rows[1])}, rf3 {len(rows[3])}")
PY
