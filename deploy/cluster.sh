#!/usr/bin/env bash
# Runs an N-node Sluice cluster on this machine (every node: broker and controller, a voter).
#
# usage: deploy/cluster.sh [options] <command> [N]
#   up N      start nodes 1..N; returns once every log shows "sluice ready" (60 s at most)
#   down      SIGTERM every node, SIGKILL those still running after 20 s
#   stop N    SIGTERM node N and wait for it to exit
#   kill N    SIGKILL node N
#   start N   start node N again with its existing properties file and wait until ready
#   status    one line per node, then /v1/brokers from the first admin endpoint that answers
#   free-base-port N   print the first base port from --base-port on (in steps of 397) whose
#             N-node ports are all free (for scripts that run a cluster beside others)
#   help      this text
# options (before or after the command):
#   --dir D          cluster directory (default ./sluice-cluster): D/node-i/{data,sluice.log,pid,server.properties}
#   --base-port P    node i listens on P+i-1 (clients), P+100+i-1 (controller),
#                    P+200+i-1 (admin HTTP); default 19092
#   --smp S          shards per node (default 1)
#   --bin PATH       the sluice binary (default: $SLUICE_BIN, target/release/sluice, target/debug/sluice)
#   --prop K=V       a property appended to every node's file on `up` (repeatable)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir=./sluice-cluster base_port=19092 smp=1 bin="${SLUICE_BIN:-}" cmd="" arg=""
props=()

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "cluster.sh: $*" >&2; exit 1; }
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_pos() { is_int "$1" && [ "$1" -ge 1 ]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) opt="${1%%=*}"; val="${1#*=}"; shift; set -- "$opt" "$val" "$@"; continue ;;
    --dir | --base-port | --smp | --bin | --prop)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --dir) dir="$2" ;;
        --base-port) base_port="$2" ;;
        --smp) smp="$2" ;;
        --bin) bin="$2" ;;
        --prop) [[ "$2" == ?*=* ]] || die "--prop $2: expected key=value"; props+=("$2") ;;
      esac
      shift 2 ;;
    -h | --help) cmd=help; shift ;;
    -*) die "unknown option $1 (see: $0 help)" ;;
    *)
      if [ -z "$cmd" ]; then cmd="$1"
      elif [ -z "$arg" ]; then arg="$1"
      else die "unexpected argument $1"
      fi
      shift ;;
  esac
done
if ! is_pos "$base_port" || [ "$base_port" -gt 65000 ]; then die "--base-port $base_port: expected a port"; fi
is_pos "$smp" || die "--smp $smp: expected a positive number"
# Absolute from here on: pid checks match the properties file's path in a node's command line.
if [ -d "$dir" ]; then dir="$(cd "$dir" && pwd)"; fi

node_dir() { echo "$dir/node-$1"; }
conf_of() { echo "$dir/node-$1/server.properties"; }
log_of() { echo "$dir/node-$1/sluice.log"; }
pid_of() { cat "$dir/node-$1/pid" 2>/dev/null || true; }
# A property's value from node $1's file (the last line setting it wins, as in the broker).
prop_of() { sed -n "s/^$2=//p" "$(conf_of "$1")" 2>/dev/null | tail -n 1; }
log_size() { if [ -f "$(log_of "$1")" ]; then wc -c <"$(log_of "$1")"; else echo 0; fi; }
client_addr() { prop_of "$1" advertised.listeners | sed 's|^[A-Za-z_]*://||; s|,.*||'; }

# Node $1 is running: its pid is alive, not a zombie, and (where /proc shows it) still the
# sluice started with this node's properties file rather than a process that reused the pid.
alive() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -r "/proc/$pid/stat" ] || return 0
  [ "$(sed 's/^.*) //' "/proc/$pid/stat" | cut -c1)" != Z ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(conf_of "$1")"
}

# The node ids under $dir (from its node-* directories), in numeric order.
nodes() {
  local d
  for d in "$dir"/node-*; do
    if [ -d "$d" ] && is_int "${d##*/node-}"; then echo "${d##*/node-}"; fi
  done | sort -n
}

need_node() {
  is_pos "$arg" || die "$cmd needs a node number (e.g. $cmd 2)"
  [ -f "$(conf_of "$arg")" ] || die "no node $arg under $dir (no $(conf_of "$arg"))"
}

resolve_bin() {
  if [ -z "$bin" ]; then
    for bin in "$root/target/release/sluice" "$root/target/debug/sluice" ""; do
      [ -x "$bin" ] && break
    done
    [ -n "$bin" ] || die "no sluice binary: build one (cargo build --release -p broker), or pass --bin PATH / set SLUICE_BIN"
  fi
  [ -x "$bin" ] || die "$bin is not an executable sluice binary"
  bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

# Prints those of the given ports that something on 127.0.0.1 already listens on.
busy_ports() {
  if command -v python3 >/dev/null; then
    python3 - "$@" <<'EOF'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        print(p)
    s.close()
EOF
  else
    local p
    for p in "$@"; do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && echo "$p"; done; true
  fi
}

# Starts node $1 in its own session (it outlives this script); logs append to its log file.
# Every SLUICE_* variable but SLUICE_LOG is dropped: the broker reads them as properties that
# would override the node's file.
start_node() {
  local i="$1" unset=() v pid
  for v in $(compgen -e | grep '^SLUICE_' | grep -vx SLUICE_LOG || true); do unset+=(-u "$v"); done
  local launcher=nohup
  command -v setsid >/dev/null && launcher=setsid
  env ${unset[@]+"${unset[@]}"} "$launcher" "$bin" start --config "$(conf_of "$i")" --smp "$smp" \
    >>"$(log_of "$i")" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$(node_dir "$i")/pid"
  echo "node $i: started pid $pid ($launcher $bin start --config $(conf_of "$i") --smp $smp)"
}

# Waits until node $1's log has a "sluice ready" line past byte offset $2, until $SECONDS
# reaches $3; on failure prints the log's tail and returns 1.
wait_ready() {
  local i="$1" from="$2" deadline="$3" log
  log="$(log_of "$i")"
  while :; do
    if tail -c +"$((from + 1))" "$log" 2>/dev/null | grep -q "sluice ready"; then
      echo "node $i: ready on $(client_addr "$i")"; return 0
    fi
    if ! alive "$i"; then echo "node $i: exited before it was ready; $log ends with:" >&2; break; fi
    if [ "$SECONDS" -ge "$deadline" ]; then echo "node $i: not ready after 60 s; $log ends with:" >&2; break; fi
    sleep 0.2
  done
  # A start-up error (anyhow's "Error: ...") is shown without the backtrace RUST_BACKTRACE adds.
  local new err
  new="$(tail -c +"$((from + 1))" "$log")"
  err="$(sed -n '/^Error: /,/^Stack backtrace:/p' <<<"$new" | grep -v '^Stack backtrace:' || true)"
  if [ -n "$err" ]; then new="$err"; fi
  tail -n 20 <<<"$new" | sed 's/^/    /' >&2
  return 1
}

# Sends $2 to node $1 and waits up to $3 s for it to exit, then SIGKILLs it.
signal_node() {
  local i="$1" sig="$2" wait_s="$3" pid end
  pid="$(pid_of "$i")"
  if ! alive "$i"; then echo "node $i: not running"; rm -f "$(node_dir "$i")/pid"; return 0; fi
  kill -s "$sig" "$pid" 2>/dev/null || true
  end=$((SECONDS + wait_s))
  while alive "$i" && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
  if alive "$i"; then
    echo "node $i: pid $pid still running after ${wait_s} s of SIG$sig, sending SIGKILL"
    sig=KILL
    kill -s KILL "$pid" 2>/dev/null || true
    end=$((SECONDS + 5))
    while alive "$i" && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
  fi
  if alive "$i"; then die "node $i: pid $pid did not exit"; fi
  rm -f "$(node_dir "$i")/pid"
  echo "node $i: pid $pid stopped (SIG$sig)"
}

write_properties() {
  local i="$1" n="$2" voters="" j p
  for ((j = 1; j <= n; j++)); do voters+="${voters:+,}$j@127.0.0.1:$((base_port + 100 + j - 1))"; done
  local client=$((base_port + i - 1)) ctrl=$((base_port + 100 + i - 1)) admin=$((base_port + 200 + i - 1))
  {
    echo "# Generated by deploy/cluster.sh up $n: node $i of $n."
    echo "node.id=$i"
    echo "process.roles=broker,controller"
    echo "controller.quorum.voters=$voters"
    echo "controller.listener.names=CONTROLLER"
    echo "listeners=PLAINTEXT://127.0.0.1:$client,CONTROLLER://127.0.0.1:$ctrl"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$client"
    echo "log.dirs=$(node_dir "$i")/data"
    echo "sluice.admin.listen=127.0.0.1:$admin"
    for p in ${props[@]+"${props[@]}"}; do echo "$p"; done
  } >"$(conf_of "$i")"
}

# The ports an N-node cluster at base $1 uses.
cluster_ports() {
  local b="$1" n="$2" i
  for ((i = 0; i < n; i++)); do echo "$((b + i)) $((b + 100 + i)) $((b + 200 + i))"; done
}

cmd_up() {
  is_pos "$arg" || die "up needs a node count (e.g. up 3)"
  local n="$arg" i ports=() busy
  local last=$((base_port + 200 + n - 1))
  [ "$last" -le 65535 ] || die "--base-port $base_port with $n nodes needs ports up to $last"
  resolve_bin
  for i in $(nodes); do
    if alive "$i"; then die "node $i of $dir is already running (pid $(pid_of "$i")); run: $0 --dir $dir down"; fi
    if [ "$i" -gt "$n" ]; then echo "warning: $(node_dir "$i") is left from an earlier, larger cluster" >&2; fi
  done
  # shellcheck disable=SC2207 # one word per port
  ports=($(cluster_ports "$base_port" "$n"))
  busy="$(busy_ports "${ports[@]}")"
  [ -z "$busy" ] || die "ports already in use on 127.0.0.1: $(echo "$busy" | tr '\n' ' ')"
  mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
  local -A from=()
  for ((i = 1; i <= n; i++)); do
    mkdir -p "$(node_dir "$i")/data"
    write_properties "$i" "$n"
    from[$i]="$(log_size "$i")"
    start_node "$i"
  done
  local deadline=$((SECONDS + 60))
  for ((i = 1; i <= n; i++)); do
    wait_ready "$i" "${from[$i]}" "$deadline" ||
      die "node $i failed to start; stop the others with: $0 --dir $dir down"
  done
  echo "cluster of $n up in $dir; bootstrap servers:" \
    "$(seq -f "127.0.0.1:%g" "$base_port" "$((base_port + n - 1))" | paste -sd, -)"
}

cmd_status() {
  local i any=0 out
  for i in $(nodes); do
    any=1
    if alive "$i"; then
      printf 'node %s  pid %-8s running  %s\n' "$i" "$(pid_of "$i")" "$(client_addr "$i")"
    else
      printf 'node %s  pid %-8s stopped  %s\n' "$i" "-" "$(client_addr "$i")"
    fi
  done
  [ "$any" = 1 ] || { echo "no nodes under $dir"; return 0; }
  for i in $(nodes); do
    alive "$i" || continue
    if out="$(curl -s --max-time 2 "http://$(prop_of "$i" sluice.admin.listen)/v1/brokers")" && [ -n "$out" ]; then
      echo "node $i /v1/brokers: $out"; return 0
    fi
  done
}

cmd_free_base_port() {
  is_pos "$arg" || die "free-base-port needs a node count"
  local b
  for ((b = base_port; b + 200 + arg <= 65535; b += 397)); do
    # shellcheck disable=SC2046 # one word per port
    if [ -z "$(busy_ports $(cluster_ports "$b" "$arg"))" ]; then echo "$b"; return; fi
  done
  die "no base port with $arg nodes' ports free"
}

case "$cmd" in
  up) cmd_up ;;
  free-base-port) cmd_free_base_port ;;
  down)
    [ -n "$(nodes)" ] || { echo "no nodes under $dir"; exit 0; }
    for i in $(nodes); do signal_node "$i" TERM 20; done ;;
  stop) need_node; signal_node "$arg" TERM 20 ;;
  kill) need_node; signal_node "$arg" KILL 5 ;;
  start)
    need_node
    if alive "$arg"; then die "node $arg is already running (pid $(pid_of "$arg"))"; fi
    resolve_bin
    offset="$(log_size "$arg")"
    start_node "$arg"
    wait_ready "$arg" "$offset" "$((SECONDS + 60))" || die "node $arg failed to start" ;;
  status) cmd_status ;;
  help | "") usage ;;
  *) die "unknown command $cmd (see: $0 help)" ;;
esac
