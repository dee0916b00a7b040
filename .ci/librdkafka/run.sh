#!/usr/bin/env bash
# Runs librdkafka's own test suite against a fresh release build of the broker.
#
#   run.sh            every test in must-pass.txt, one at a time; fails if any fails
#   run.sh --each     every numbered test, one at a time, PASS/FAIL/SKIP each (for triage)
#   run.sh --each N…  the same for the given test numbers only
#   run.sh --cluster  the must-pass list against a 3-node cluster (deploy/cluster.sh),
#                     test.conf listing all three brokers, every topic with 3 replicas
#
# Tests run in quick mode (-Q), without sockem (-E), as Kafka 3.7.0 (the protocol level the
# broker speaks), against a broker configured like librdkafka's default test scenario
# (tests/scenarios/default.json: auto-create on, num.partitions=4). Per-test logs and the
# broker log are kept in $RDK_DIR/logs/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/.ci/librdkafka"
dir="${RDK_DIR:-$root/target/librdkafka-tests}"
tests="$(ls -d "$dir"/rdkafka-sys-*/librdkafka/tests | head -1)"

(cd "$root" && cargo build --release -p broker)
data="$(mktemp -d)"
logs="$dir/logs"
mkdir -p "$logs"
log="$logs/broker.log"
cluster=false
if [ "${1:-}" = "--cluster" ]; then
  cluster=true
  shift
fi
if $cluster; then
  base="$(bash "$root/deploy/cluster.sh" free-base-port 3 --base-port 24000)"
  cl=(--dir "$data" --bin "$root/target/release/sluice" --base-port "$base")
  # Every topic replicated to all three brokers (and __consumer_offsets too).
  bash "$root/deploy/cluster.sh" up 3 "${cl[@]}" \
    --prop num.partitions=4 --prop auto.create.topics.enable=true \
    --prop sluice.replication.factor.max=3 --prop default.replication.factor=3 >"$log" 2>&1 ||
    { cat "$log"; exit 1; }
  brokers="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
  pids="$(cat "$data"/node-*/pid | tr '\n' ' ')"
  trap 'bash "$root/deploy/cluster.sh" down "${cl[@]}" >/dev/null 2>&1 || true; rm -rf "$data"' EXIT
  log="$data/node-1/sluice.log"
else
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$root/target/release/sluice" start --listen "127.0.0.1:$port" --data-dir "$data" \
    --prop num.partitions=4 --prop auto.create.topics.enable=true >"$log" 2>&1 &
  pids=$!
  trap 'kill -9 $pids 2>/dev/null || true; rm -rf "$data"' EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  brokers="127.0.0.1:$port"
fi

cd "$tests"
printf 'metadata.broker.list=%s\n' "$brokers" >test.conf
export TEST_KAFKA_VERSION=3.7.0 LD_LIBRARY_PATH="../src:../src-cpp"

# Runs one test by number; prints PASS, FAIL or SKIP (local-only, manual, or skipped by the
# test itself), and returns non-zero only on FAIL.
run_one() {
  local num="$1" out="$logs/$1.log" start status rc=0
  start=$(date +%s)
  TESTS="$num" timeout 900 ./test-runner -Q -E -L -p1 >"$out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    status=FAIL
  elif grep -a -q -E "^\|.* ${num}_[A-Za-z0-9_]+ +\| +PASSED" "$out"; then
    status=PASS
  else
    status=SKIP # not run: local-only, manual, or skipped by the test itself
  fi
  echo "$status $num ($(($(date +%s) - start)) s) $(grep -o "${num}_[a-z0-9_]*" "$out" | head -1)"
  if [ $status = FAIL ]; then
    grep -a -E "FAIL|assert|Test .* timed out" "$out" | tail -6 | cut -c1-300 | sed 's/^/    /'
  fi
  local pid
  for pid in $pids; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a broker (pid $pid) died during $num"; tail -40 "$log"; exit 1
    fi
  done
  [ $status != FAIL ]
}

if [ "${1:-}" = "--each" ]; then
  # Three at a time: most of the suite's time is spent waiting.
  export -f run_one
  export logs log pids
  shift
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; else ls [0-9][0-9][0-9][0-9]-*.c* | cut -c1-4 | sort -u; fi |
    xargs -P3 -I{} bash -c 'run_one {} || true'
  exit 0
fi

failed=()
passed=0
while read -r num _; do
  case "$num" in '' | '#'*) continue ;; esac
  if run_one "$num"; then passed=$((passed + 1)); else failed+=("$num"); fi
done <"$here/must-pass.txt"

echo "librdkafka must-pass$($cluster && echo ' (3-node cluster)'): $passed passed, ${#failed[@]} failed ${failed[*]:-}"
[ "${#failed[@]}" -eq 0 ]
