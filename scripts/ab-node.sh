#!/usr/bin/env bash
# Interleaved A/B runs of the Node SDK's receive pipeline: which of two
# builds is faster, when the machine moves more between runs than a change
# moves one run. Each variant is a broker binary, a release addon and an
# index.js; the variants take turns, each run on a broker of its own
# started fresh (as scripts/bench-node.sh does), with the subscriber and
# the publisher roles of bindings/node/bench/sdk-bench.mjs. Prints every
# run (msgs/s, and CPU µs per message of the subscriber, the publisher and
# the broker) and then the medians per variant.
#
# Usage: scripts/ab-node.sh [--rounds N] [--count N] [--size BYTES] NAME=BROKER:ADDON:INDEX_JS ...
#   e.g. scripts/ab-node.sh --rounds 8 \
#          before=/tmp/ab/blipmq-before:/tmp/ab/before.node:/tmp/ab/before.js \
#          after=target/release/blipmq:/tmp/ab/after.node:bindings/node/index.js
# Make an addon with
#   (cd bindings/node && npx napi build --platform --release --output-dir DIR --js false --dts DIR/x.d.ts)
# It runs in the scratch project scripts/bench-node.sh made
# (${CARGO_TARGET_DIR:-target}/node-bench-project; run that once first) and
# puts that project's addon and index.js back when it ends. Bounded: every
# child has the bench's own time limits; listens on 127.0.0.1 only.
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
shopt -s inherit_errexit
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/node-bench-project"
rounds=6 count=1000000 size=16
variants=()
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    *=*:*:*) variants+=("$1"); shift ;;
    *) echo "ab-node: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
if ((${#variants[@]} < 2)); then
  echo "ab-node: give at least two variants NAME=BROKER:ADDON:INDEX_JS" >&2
  exit 2
fi
if [[ ! -d "$project/node_modules/blipmq" ]]; then
  echo "ab-node: no bench project at $project: run scripts/bench-node.sh once first" >&2
  exit 2
fi
for variant in "${variants[@]}"; do
  IFS=: read -r broker addon index <<<"${variant#*=}"
  for file in "$broker" "$addon" "$index"; do
    [[ -f "$file" ]] || { echo "ab-node: $variant: no file $file" >&2; exit 2; }
  done
done

package="$project/node_modules/blipmq"
saved="$(mktemp -d)"
cp "$package/blipmq.linux-x64-gnu.node" "$package/index.js" "$saved/"
cp "$REPO_ROOT/bindings/node/bench/sdk-bench.mjs" "$project/sdk-bench.mjs"
work="$(mktemp -d)"
broker_pid=""
cleanup() {
  [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
  cp "$saved/blipmq.linux-x64-gnu.node" "$saved/index.js" "$package/"
  rm -rf "$saved" "$work"
}
trap cleanup EXIT
tick="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_once() { # name broker addon index round
  local name="$1" broker="$2" addon="$3" index="$4" round="$5"
  cp "$addon" "$package/blipmq.linux-x64-gnu.node"
  cp "$index" "$package/index.js"
  BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
    BLIPMQ_QUEUES_OVERFLOW_POLICY=block RUST_LOG=warn \
    "$broker" >"$work/broker.out" 2>/dev/null &
  broker_pid=$!
  local addr=""
  for _ in $(seq 200); do
    addr="$(sed -n 's/^blipmq ready clients=\([^ ]*\).*/\1/p' "$work/broker.out" 2>/dev/null || true)"
    [[ -n "$addr" ]] && break
    sleep 0.05
  done
  [[ -n "$addr" ]] || { echo "ab-node: broker $broker did not start" >&2; exit 1; }
  local topic="ab.receive-$size.r$round" args
  args=(--system blipmq --addr "$addr" --topic "$topic" --count "$count" --size "$size" --max-secs 60)
  (cd "$project" && exec node sdk-bench.mjs child subscribe "${args[@]}" >"$work/sub.out") &
  local subscriber=$!
  for _ in $(seq 400); do
    grep -q ready "$work/sub.out" 2>/dev/null && break
    sleep 0.01
  done
  local before after
  before="$(cpu_ticks "$broker_pid")"
  if ! (cd "$project" && node sdk-bench.mjs child publish "${args[@]}" >"$work/pub.out"); then
    echo "ab-node: $name: the publisher failed" >&2
    exit 1
  fi
  if ! wait "$subscriber"; then
    echo "ab-node: $name: the subscriber failed" >&2
    exit 1
  fi
  after="$(cpu_ticks "$broker_pid")"
  kill "$broker_pid"
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
  node -e '
    const fs = require("fs")
    const last = (f) => JSON.parse(fs.readFileSync(f, "utf8").trim().split("\n").pop())
    const [name, pubFile, subFile, brokerTicks, tick] = process.argv.slice(1)
    const p = last(pubFile), s = last(subFile)
    const secs = Number(BigInt(s.last_ns) - BigInt(p.start_ns)) / 1e9
    const brokerUs = (Number(brokerTicks) / Number(tick)) * 1e6
    console.log([name, (s.stamped / secs).toFixed(0), (s.cpu_us / s.received).toFixed(3),
      (p.cpu_us / p.sent).toFixed(3), (brokerUs / s.received).toFixed(3)].join(" "))
  ' "$name" "$work/pub.out" "$work/sub.out" "$((after - before))" "$tick"
}

echo "ab-node: $rounds rounds of $count x $size B, variants taking turns" >&2
results="$work/results"
for round in $(seq "$rounds"); do
  for variant in "${variants[@]}"; do
    IFS=: read -r broker addon index <<<"${variant#*=}"
    line="$(run_once "${variant%%=*}" "$broker" "$addon" "$index" "$round")"
    echo "$line" >>"$results"
    read -r n rate sub pub brk <<<"$line"
    printf 'round %d  %-10s %9s msgs/s  CPU us/msg: sub %s  pub %s  broker %s\n' \
      "$round" "$n" "$rate" "$sub" "$pub" "$brk"
  done
done
echo
echo "medians over $rounds rounds (msgs/s; CPU us/msg sub, pub, broker):"
node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split(" "))
  const median = (v) => { v = [...v].sort((a, b) => a - b); const n = v.length; return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2 }
  for (const name of [...new Set(lines.map((l) => l[0]))]) {
    const mine = lines.filter((l) => l[0] === name)
    const col = (i) => median(mine.map((l) => Number(l[i])))
    console.log(`${name.padEnd(10)} ${Math.round(col(1)).toLocaleString("en-US").padStart(11)}  ${col(2).toFixed(3)}  ${col(3).toFixed(3)}  ${col(4).toFixed(3)}`)
  }
' "$results"
