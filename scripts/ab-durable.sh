#!/usr/bin/env bash
# A/B of QoS 1 throughput and confirm latency between two broker binaries
# (say, a commit before a change and after it), both with
# `[wal] fsync_policy = always`, on this machine: interleaved rounds of
# `blipmq-bench durable` (publish 16 B and 1 KiB with 256 in flight, confirm
# latency one at a time, publish -> consume + ack), a fresh broker and log
# directory (under target/, on the repository's disk) per run, then the
# median of each figure per binary.
#
# Usage: scripts/ab-durable.sh A_BINARY B_BINARY [ROUNDS (default 5)]
#   AB_BENCH_ARGS="--workloads latency --latency-secs 5" narrows each run.
#   e.g. build the old tree in a worktree:
#     git worktree add --detach ../old <commit> && (cd ../old && cargo build --release --bin blipmq)
#     scripts/ab-durable.sh ../old/target/release/blipmq target/release/blipmq 5
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if [[ $# -lt 2 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
a_bin="$(realpath "$1")" b_bin="$(realpath "$2")" rounds="${3:-5}"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# shellcheck source=lib/bench-servers.sh
source "$REPO_ROOT/scripts/lib/bench-servers.sh"
cargo build --release -q -p blipmq-bench
bench="$REPO_ROOT/target/release/blipmq-bench"

work="$(mktemp -d "$REPO_ROOT/target/ab-durable.XXXXXX")"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run LABEL BINARY N: one bench round against a fresh broker; its report is
# kept as $work/LABEL.N.txt.
run() {
  local label="$1" binary="$2" n="$3" dir="$work/$1.$3" ready addr metrics
  mkdir -p "$dir"
  BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_BIND_ADDR=127.0.0.1:0 \
    BLIPMQ_WAL_DIR="$dir/wal" BLIPMQ_WAL_FSYNC_POLICY=always RUST_LOG=warn \
    "$binary" >"$dir/out" 2>"$dir/err" &
  pid=$!
  if ! ready="$(wait_blipmq_ready "$pid" "$dir/out")"; then
    echo "ab-durable: $label did not start:" >&2
    cat "$dir/err" >&2
    exit 1
  fi
  read -r addr metrics <<<"$ready"
  timeout 300 "$bench" durable --blipmq-always "$addr" --blipmq-always-metrics "$metrics" \
    --rounds 1 ${AB_BENCH_ARGS:-} >"$work/$label.$n.txt" 2>/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$dir"
}

for n in $(seq "$rounds"); do
  # Alternate which goes first, so that neither always runs on a warmer
  # (or more tired) machine.
  if ((n % 2)); then order=(a b); else order=(b a); fi
  for label in "${order[@]}"; do
    if [[ $label == a ]]; then run a "$a_bin" "$n"; else run b "$b_bin" "$n"; fi
    echo "ab-durable: round $n/$rounds $label done" >&2
  done
done

python3 - "$work" "$rounds" "$a_bin" "$b_bin" <<'PY'
import re, statistics, sys
work, rounds, a_bin, b_bin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = ["publish, 16 B", "publish, 1 KiB", "publish → consume + ack, 16 B"]
def figures(path):
    text = open(path).read()
    out = {}
    every = text.split("## Every round", 1)[-1]
    for row in rows:
        m = re.search(r"^\| " + re.escape(row) + r" \| BlipMQ always \| ([\d,]+)", every, re.M)
        if m:
            out[row + " (msgs/s)"] = int(m.group(1).replace(",", ""))
    for key, label in [("p50", "confirm latency p50 (µs)"), ("p99", "confirm latency p99 (µs)"),
                       ("confirms/s", "confirms/s, one at a time")]:
        m = re.search(r"^\| " + re.escape(key) + r" \| ([\d,]+) \|", text, re.M)
        if m:
            out[label] = int(m.group(1).replace(",", ""))
    return out
runs = {x: [figures(f"{work}/{x}.{n}.txt") for n in range(1, rounds + 1)] for x in "ab"}
print(f"A: {a_bin}\nB: {b_bin}\n{rounds} interleaved rounds each, fsync_policy = always; medians (every round)\n")
print("| figure | A | B | B/A |\n|---|---:|---:|---:|")
for key in runs["a"][0]:
    a = [r[key] for r in runs["a"] if key in r]
    b = [r[key] for r in runs["b"] if key in r]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {key} | {ma:,.0f} ({', '.join(f'{v:,}' for v in a)}) | {mb:,.0f} ({', '.join(f'{v:,}' for v in b)}) | {mb / ma:.2f} |")
PY
