#!/usr/bin/env bash
# Real Kafka clients against a release build of the broker (see check.py for what is checked).
# Installs the clients when they are missing, or always under CI=true.
#   SLUICE_CHECK_RECORDS        records per client/codec topic (default 100000)
#   SLUICE_IDEMPOTENCE_RECORDS  records per idempotent producer (default 1000000)
#   SLUICE_FAILOVER_ROUNDS      leader kills in failover.py (default 20, every SLUICE_FAILOVER_INTERVAL s, default 15)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

if [ "${CI:-}" = "true" ] || ! command -v kcat >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
fi
if ! command -v nft >/dev/null || ! command -v ip >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 >/dev/null
fi
if ! command -v node >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ "${CI:-}" = "true" ] || ! python3 -c "import confluent_kafka, kafka, aiokafka" 2>/dev/null; then
  python3 -m pip install -q -r "$here/requirements.txt"
fi
if [ "${CI:-}" = "true" ] || [ ! -d "$here/node_modules/kafkajs" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "kcat: $(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -1)"
python3 -c "import confluent_kafka as c; print('confluent-kafka', c.version()[0], 'librdkafka', c.libversion()[0])"

(cd "$root" && cargo build --release -p broker)
python3 "$here/check.py" --broker "$root/target/release/sluice" \
  --records "${SLUICE_CHECK_RECORDS:-100000}" "$@"
echo "== consumer groups: rebalances, session timeouts, static members, admin clients"
python3 "$here/groups.py" --broker "$root/target/release/sluice"
echo "== topic administration: configs, partitions, delete records, retention"
python3 "$here/admin.py" --broker "$root/target/release/sluice"
echo "== compatibility defects found by real clients"
python3 "$here/compat.py" --broker "$root/target/release/sluice"
echo "== idempotent producers through kill -9 and lost responses"
python3 "$here/idempotence.py" --broker "$root/target/release/sluice" \
  --records "${SLUICE_IDEMPOTENCE_RECORDS:-1000000}"
echo "== a 3-node cluster (deploy/cluster.sh): every client, every partition, groups on every coordinator"
python3 "$here/cluster.py" --broker "$root/target/release/sluice"
echo "== leader failover: idempotent acks=all producers and consumers through 20 leader kills (RF 3)"
python3 "$here/failover.py" --broker "$root/target/release/sluice" \
  --rounds "${SLUICE_FAILOVER_ROUNDS:-20}" --interval "${SLUICE_FAILOVER_INTERVAL:-15}"
echo "== a network partition (namespaces + nftables): isolated leader, then an ISR gone and unclean election"
if ip netns add sluice-probe 2>/dev/null; then
  ip netns del sluice-probe
  python3 "$here/partition.py" --broker "$root/target/release/sluice"
else
  # Namespaces need root (CAP_SYS_ADMIN); every machine this project runs CI on has it.
  echo "partition.py NOT RUN: cannot create network namespaces here (needs root)"
fi
