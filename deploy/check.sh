#!/usr/bin/env bash
# Checks the deploy/ files with the tools this machine has:
#  - the systemd unit with `systemd-analyze verify` (no warnings allowed);
#  - server.properties: its listeners are loopback only (there is no authentication yet),
#    a broker starts with it (data dir and port redirected) and logs no unknown property;
#  - the sysctl file: every key exists under /proc/sys and every line is `key = value`;
#  - the Containerfile: the files it copies exist.
# usage: deploy/check.sh <path to the sluice binary>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
work="$(mktemp -d)"
# Only a started broker is killed: `kill -9 0` would kill this script's whole process group.
trap 'if [ -n "${broker:-}" ]; then kill -9 "$broker" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/local/bin/sluice|$bin|" "$here/sluice.service" >"$work/sluice.service"
  out="$(systemd-analyze verify "$work/sluice.service" 2>&1)" || { echo "$out"; exit 1; }
  if [ -n "$out" ]; then echo "systemd-analyze: $out"; exit 1; fi
  echo "ok   sluice.service (systemd-analyze verify)"
else
  echo "skip sluice.service: no systemd-analyze here"
fi

# Without authentication the shipped example must not listen beyond loopback.
if grep -E '^(listeners|sluice\.admin\.listen)=' "$here/server.properties" | grep -vqE '(//|=)(127\.[0-9.]+|localhost|\[::1\]):'; then
  echo "server.properties listens beyond loopback:"
  grep -E '^(listeners|sluice\.admin\.listen)=' "$here/server.properties"
  exit 1
fi
echo "ok   server.properties (loopback listeners only)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin" start --config "$here/server.properties" --listen "127.0.0.1:$port" \
  --data-dir "$work/data" --smp 1 >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
  grep -q "sluice ready" "$work/broker.log" && break
  kill -0 $broker 2>/dev/null || { cat "$work/broker.log"; exit 1; }
  sleep 0.1
done
grep -q "sluice ready" "$work/broker.log" || { cat "$work/broker.log"; exit 1; }
if grep -q "unknown or not yet supported property" "$work/broker.log"; then
  grep "unknown or not yet supported property" "$work/broker.log"
  exit 1
fi
kill $broker
wait $broker
echo "ok   server.properties (a broker starts with it; every property known)"

while read -r line; do
  case "$line" in '' | '#'*) continue ;; esac
  [[ "$line" =~ ^([a-z0-9_.-]+)\ =\ ([^ ].*)$ ]] || { echo "bad sysctl line: $line"; exit 1; }
  key="${BASH_REMATCH[1]}"
  [ -e "/proc/sys/${key//./\/}" ] || { echo "no such sysctl: $key"; exit 1; }
done <"$here/sysctl.d/99-sluice.conf"
echo "ok   sysctl.d/99-sluice.conf (every key exists)"

grep -E '^COPY ' "$here/Containerfile" | grep -v -- '--from=' | while read -r _ src _; do
  [ -e "$root/$src" ] || { echo "Containerfile copies a missing $src"; exit 1; }
done
echo "ok   Containerfile (copied files exist)"
