#!/usr/bin/env bash
# CPU time per message, broker and client separately: runs the profiling
# build of the broker under `perf stat -e task-clock` and one
# `blipmq-cli bench` (also under perf stat) against it, then prints both
# CPU times. Less sensitive to a busy machine than msgs/s, since it counts
# CPU time, not wall time.
#
#   scripts/bench-cpu.sh [SIZE=16] [SUBSCRIBERS=1] [COUNT=1000000]
#
# Needs `perf` (Debian: linux-perf); installs nothing.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
size="${1:-16}"
subs="${2:-1}"
count="${3:-1000000}"
cargo build --profile profiling -q --bins -p blipmq-broker -p blipmq-cli
target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/profiling"
work="$(mktemp -d)"
BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
  BLIPMQ_QUEUES_OVERFLOW_POLICY=block RUST_LOG=warn \
  perf stat -e task-clock -x, -o "$work/broker.stat" "$target/blipmq" >"$work/ready" 2>/dev/null &
perf_pid=$!
trap 'pkill -INT -P "$perf_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 200); do grep -q ready "$work/ready" && break; sleep 0.05; done
addr="$(sed -n 's/.*clients=\([^ ]*\).*/\1/p' "$work/ready")"
perf stat -e task-clock -x, -o "$work/client.stat" \
  "$target/blipmq-cli" --addr "$addr" bench --publishers 1 --subscribers "$subs" \
  --size "$size" --count "$count" 2>&1 | grep '^delivered'
pkill -INT -P "$perf_pid"
wait "$perf_pid" || true
echo "broker CPU: $(cut -d, -f1 <"$work/broker.stat" | grep -E '^[0-9.]+$') ms"
echo "client CPU: $(cut -d, -f1 <"$work/client.stat" | grep -E '^[0-9.]+$') ms"
