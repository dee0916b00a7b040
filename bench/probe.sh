#!/usr/bin/env bash
# Side-by-side probe for the single-node issue's performance note: fio direct sequential
# write bandwidth on the data directory's filesystem, then Sluice produce (acks=-1) and
# fetch MB/s with 1 KiB records on 8 partitions, in the same run.
#   bench/probe.sh [seconds] [smp]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-15}"
smp="${2:-2}"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-probe.XXXXXX")"
broker=
trap '[ -n "$broker" ] && kill $broker && wait $broker; rm -rf "$work"' EXIT
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
(cd "$root" && cargo build --release -p broker -p bench)

echo "== fio: direct sequential write, 1 MiB blocks, queue depth 4, in $work"
fio --name=seqwrite --directory="$work" --rw=write --direct=1 --bs=1M --iodepth=4 \
  --ioengine=io_uring --size=2G --end_fsync=1 --output-format=json |
  python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print("fio write: %.0f MB/s" % (j["bw_bytes"] / 1e6))'
rm -f "$work"/seqwrite*

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$root/target/release/sluice" start --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --smp "$smp" >"$work/broker.log" 2>&1 &
broker=$!
sleep 1
echo "== sluice-bench throughput (broker --smp $smp)"
"$root/target/release/sluice-bench" throughput --bootstrap "127.0.0.1:$port" \
  --partitions 8 --record-bytes 1024 --acks=-1 --seconds "$seconds"
