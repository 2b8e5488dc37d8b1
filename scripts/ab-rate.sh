#!/usr/bin/env bash
# A/B of the max-rate QoS 0 cells between two broker binaries (say, a commit
# before a change and after it) on this machine: interleaved rounds of
# `blipmq-cli bench` 1->1 and 1->4 at 16 B and 1 KiB against a fresh broker
# per run, on the `block` policy so every figure is lossless (as in
# scripts/bench-quick.sh), then the median delivered msg/s per binary and
# cell. Lost messages are counted and reported.
#
# Usage: scripts/ab-rate.sh A_BINARY B_BINARY [ROUNDS (default 3)] [COUNT (default 500000)]
#   e.g. git worktree add --detach ../old <commit> &&
#        (cd ../old && cargo build --release --bin blipmq)
#        scripts/ab-rate.sh ../old/target/release/blipmq target/release/blipmq 3
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if [[ $# -lt 2 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
a_bin="$(realpath "$1")" b_bin="$(realpath "$2")" rounds="${3:-3}" count="${4:-500000}"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# shellcheck source=lib/bench-servers.sh
source "$REPO_ROOT/scripts/lib/bench-servers.sh"
cli="${BLIPMQ_CLI:-}"
if [[ -z "$cli" ]]; then
  cargo build --release -q -p blipmq-cli
  cli="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/blipmq-cli"
fi
work="$(mktemp -d)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run LABEL BINARY SUBSCRIBERS SIZE: one bench against a fresh broker,
# appending "LABEL cell msgs_per_sec lost" to $work/results.
run() {
  local label="$1" bin="$2" subs="$3" size="$4" out="$work/broker.out"
  BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
    BLIPMQ_QUEUES_OVERFLOW_POLICY=block BLIPMQ_WAL_DIR="$work/wal" RUST_LOG=warn \
    "$bin" >"$out" 2>/dev/null &
  pid=$!
  local ready addr
  if ! ready="$(wait_blipmq_ready "$pid" "$out")"; then
    echo "ab-rate: $bin did not start" >&2
    exit 1
  fi
  addr="${ready%% *}"
  "$cli" --addr "$addr" bench --publishers 1 --subscribers "$subs" --size "$size" \
    --count "$count" --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], r["msgs_per_sec"], r.get("lost", 0))' \
      "$label" "1to$subs-${size}B" >>"$work/results"
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$work/wal"
}

for round in $(seq "$rounds"); do
  for subs in 1 4; do
    for size in 16 1024; do
      # Alternate which binary goes first, so drift hits both alike.
      if (( round % 2 )); then
        run A "$a_bin" "$subs" "$size"; run B "$b_bin" "$subs" "$size"
      else
        run B "$b_bin" "$subs" "$size"; run A "$a_bin" "$subs" "$size"
      fi
    done
  done
  echo "ab-rate: round $round of $rounds done" >&2
done
python3 - "$work/results" "$a_bin" "$b_bin" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
lost = collections.Counter()
for line in open(sys.argv[1]):
    label, cell, rate, gone = line.split()
    rows[(cell, label)].append(float(rate))
    lost[label] += int(float(gone))
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}\n")
print("| cell | A msg/s median (range) | B msg/s median (range) | B/A |")
print("|---|---:|---:|---:|")
def summary(runs):
    return f"{statistics.median(runs):,.0f} ({min(runs) / 1e3:,.0f}k–{max(runs) / 1e3:,.0f}k)"
for cell in sorted({c for c, _ in rows}):
    a, b = rows[(cell, "A")], rows[(cell, "B")]
    ratio = statistics.median(b) / statistics.median(a)
    print(f"| {cell} | {summary(a)} | {summary(b)} | {ratio:.2f} |")
print(f"\nlost: A {lost['A']}, B {lost['B']}")
PY
