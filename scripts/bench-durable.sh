#!/usr/bin/env bash
# Durable (at-least-once) benchmark: BlipMQ QoS 1 with WAL fsync `always`
# and `interval` beside NATS JetStream (file storage) and Redis Streams (AOF
# with `appendfsync always` and `everysec`), all on this machine, on
# 127.0.0.1.
#
# Installs nats-server and redis-server from Debian packages when missing,
# builds the release broker, blipmq-bench and the wal_recovery example,
# times the recovery of a 1,000,000-record WAL (median of 3), starts every
# server itself on a free port with a fresh data directory under target/
# (on the repository's disk: a tmpfs /tmp would make fsync free), runs
# `blipmq-bench durable` against all of them and stops each server by its PID
# on exit. Writes bench/results/durable.md (printed too), durable.json and
# durable.png. Every run inside is bounded in count and time; the whole
# measurement is capped too (BENCH_TIMEOUT seconds, default 600).
#
# Usage: scripts/bench-durable.sh [blipmq-bench durable options]
#   e.g. scripts/bench-durable.sh --rounds 1 --count 20000 --latency-secs 1
#   (see: target/release/blipmq-bench durable --help)
#   BENCH_RECOVERY=0 skips the WAL recovery timing.
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
command_line="scripts/bench-durable.sh${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
say() { echo "bench-durable: $*" >&2; }
# shellcheck source=lib/bench-servers.sh
source "$REPO_ROOT/scripts/lib/bench-servers.sh"

# --- the peers, from Debian packages ---------------------------------------
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
install_debs "${missing[@]}"

# --- build --------------------------------------------------------------------
cargo build --release -q --bins -p blipmq-broker -p blipmq-bench
if [[ "${BENCH_RECOVERY:-1}" != 0 ]]; then
  cargo build --release -q -p blipmq-broker --example wal_recovery
fi

work="$(mktemp -d "$REPO_ROOT/target/bench-durable.XXXXXX")"
pids=()
trap stop_servers EXIT
trap 'exit 130' INT TERM

args=(--out bench/results)
skip() { # SYSTEM REASON
  say "skipping $1: $2"
  args+=(--skipped "$1=$2")
}

# --- WAL recovery of 1,000,000 records: median of 3 ----------------------------
if [[ "${BENCH_RECOVERY:-1}" != 0 ]]; then
  say "timing WAL recovery (1,000,000 records, 3 times)"
  lines=()
  for _ in 1 2 3; do
    lines+=("$(TMPDIR="$work" target/release/examples/wal_recovery | tail -1)")
  done
  # Sort the runs by "open + full replay N ms" and take the middle one.
  median_line="$(printf '%s\n' "${lines[@]}" |
    awk '{ if (match($0, /full replay [0-9.]+ ms/)) { v = substr($0, RSTART + 12, RLENGTH - 15); print v "\t" $0 } }' |
    sort -n | sed -n '2p' | cut -f2-)"
  if [[ -n "$median_line" ]]; then
    say "recovery: $median_line"
    args+=(--recovery "median of 3 runs: $median_line")
  else
    say "wal_recovery printed no figure: ${lines[*]}"
  fi
fi

# --- start the servers --------------------------------------------------------
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain -- broker schema client-rs 2>/dev/null | head -1)"
blipmq_version="$(target/release/blipmq --version) (this tree, commit $commit${dirty:+ + local changes})"

# start_blipmq POLICY: a broker whose WAL fsyncs under POLICY, in its own
# directory; it binds free ports itself and prints its addresses.
start_blipmq() {
  local policy="$1" dir="$work/blipmq-$1" ready
  mkdir -p "$dir"
  BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_BIND_ADDR=127.0.0.1:0 \
    BLIPMQ_WAL_DIR="$dir/wal" BLIPMQ_WAL_FSYNC_POLICY="$policy" RUST_LOG=warn \
    target/release/blipmq >"$dir/out" 2>"$dir/err" &
  pids+=($!)
  if ready="$(wait_blipmq_ready "${pids[-1]}" "$dir/out")"; then
    read -r addr metrics <<<"$ready"
    args+=(--"blipmq-$policy" "$addr" --"blipmq-$policy-metrics" "$metrics"
      --server-pid "blipmq-$policy=${pids[-1]}"
      --server-version "blipmq-$policy=$blipmq_version, [wal] fsync_policy = $policy (fsync_interval_ms 10), defaults otherwise")
  else
    say "the BlipMQ broker (fsync $policy) did not start:"
    cat "$dir/err" >&2
    exit 1
  fi
}
start_blipmq always
start_blipmq interval

if command -v nats-server >/dev/null 2>&1; then
  port="$(free_port)"
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/jetstream" >"$work/nats.log" 2>&1 &
  pids+=($!)
  if wait_port "${pids[-1]}" "$port"; then
    args+=(--jetstream "127.0.0.1:$port" --server-pid "jetstream=${pids[-1]}"
      --server-version "jetstream=$(nats-server --version) (Debian $(deb_version nats-server)), -js -sd DIR, streams with file storage, 1 replica")
  else
    skip jetstream "nats-server did not start: $(tail -1 "$work/nats.log")"
  fi
else
  skip jetstream "nats-server is not installed and apt-get could not install it"
fi

# start_redis FSYNC: redis-server with an append-only file fsynced per FSYNC.
start_redis() {
  local fsync="$1" dir="$work/redis-$1" port v
  mkdir -p "$dir"
  if ! command -v redis-server >/dev/null 2>&1; then
    skip "redis-$fsync" "redis-server is not installed and apt-get could not install it"
    return 0
  fi
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync "$fsync" --daemonize no --dir "$dir" >"$dir/log" 2>&1 &
  pids+=($!)
  if wait_port "${pids[-1]}" "$port"; then
    v="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
    args+=(--"redis-$fsync" "127.0.0.1:$port" --server-pid "redis-$fsync=${pids[-1]}"
      --server-version "redis-$fsync=redis-server $v (Debian $(deb_version redis-server)), --appendonly yes --appendfsync $fsync --save ''")
  else
    skip "redis-$fsync" "redis-server did not start: $(tail -1 "$dir/log")"
  fi
}
start_redis always
start_redis everysec

clients="blipmq (this tree), async-nats $(lock_version async-nats) (jetstream), redis $(lock_version redis) (tokio)"

# --- measure --------------------------------------------------------------------
say "servers up (data in $work); measuring (${BENCH_TIMEOUT:-600} s at most)"
started=$SECONDS
timeout "${BENCH_TIMEOUT:-600}" target/release/blipmq-bench durable "${args[@]}" \
  --clients "$clients" --command "$command_line" "$@"
say "done in $((SECONDS - started)) s"
