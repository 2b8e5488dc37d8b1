#!/usr/bin/env bash
# A first, rerunnable throughput run: release broker and blipmq-cli bench on
# this machine, 1→1 and 1→4 at 16 B and 1 KiB, each bounded by count.
# The broker uses the `block` policy so that the figures are lossless
# (publishers are slowed to what subscribers take); a run with drops would
# overstate nothing, since only delivered messages count, but block shows
# the sustainable rate. Usage: scripts/bench-quick.sh [COUNT]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
count="${1:-500000}"
cargo build --release -q --bins -p blipmq-broker -p blipmq-cli
out="$(mktemp)"
BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
  BLIPMQ_QUEUES_OVERFLOW_POLICY=block RUST_LOG=warn \
  target/release/blipmq >"$out" 2>/dev/null &
broker=$!
trap 'kill $broker 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q ready "$out" && break; sleep 0.05; done
addr="$(sed -n 's/.*clients=\([^ ]*\).*/\1/p' "$out")"
printf '| workload | size | delivered msg/s | MB/s | p50 us | p99 us | lost |\n|---|---:|---:|---:|---:|---:|---:|\n'
for subs in 1 4; do
  for size in 16 1024; do
    json="$(target/release/blipmq-cli --addr "$addr" bench --publishers 1 --subscribers "$subs" \
      --size "$size" --count "$count" --json 2>/dev/null)"
    python3 - "$subs" "$size" "$json" <<'PY'
import json, sys
subs, size, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lat = r.get("latency_us", {})
print(f"| 1→{subs} | {size} B | {r['msgs_per_sec']:,.0f} | {r['mb_per_sec']:.1f} | "
      f"{lat.get('p50', 0):,.0f} | {lat.get('p99', 0):,.0f} | {r['lost']} |")
PY
  done
done
