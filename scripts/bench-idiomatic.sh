#!/usr/bin/env bash
# Each SDK written the way its README shows, beside the NATS client written
# the way ITS README shows, both servers on their defaults, on 127.0.0.1:
#   python  blipmq (release wheel)             beside nats-py 2.16.0
#   node    blipmq (release addon, packed)     beside nats 2.29.3 (npm)
#   kotlin  the Kotlin SDK (release library)   beside jnats 2.21.1
#   web     @blipmq/web in headless Chromium   beside nats.ws 1.30.3
# A burst of --count messages (200,000) of 16 B and 1 KiB per run, QoS 0,
# publisher and subscriber as two connections of one process; delivered/s
# and loss (published - received) per side, --rounds rounds (3), systems
# alternating, medians. Writes bench/results/sdk-idiomatic.md (and prints
# it); the raw runs go to ${CARGO_TARGET_DIR:-target}/idiomatic-bench/runs.jsonl.
#
# BlipMQ runs with no configuration (drop_oldest, ~1M-message / 64 MiB
# subscriber queues); only its listen addresses are set (127.0.0.1, free
# ports; the WebSocket listener, off by default, for the browser). NATS runs
# as `nats-server -a 127.0.0.1 -p PORT`; for nats.ws a second nats-server
# with a config that only adds `websocket { ... no_tls: true }`.
#
# Builds what it needs: the release broker; per SDK the release wheel into
# a virtualenv with nats-py, the release addon packed into a scratch npm
# project with nats, the release uniffi library plus the benchmark's Maven
# project (bindings/uniffi/bench, which compiles the SDK's sources; jnats
# comes from Maven Central into ~/.m2), the wasm package
# (scripts/test-web.sh --build-only) plus nats.ws in a scratch npm project;
# all under ${CARGO_TARGET_DIR:-target}/idiomatic-bench, idempotently.
# nats-server comes from Debian's packages when missing.
#
# Usage: scripts/bench-idiomatic.sh [--rounds N] [--only python|node|kotlin|web]
#          [--count N] [--sizes "16 1024"] [--quiet SECONDS] [--out FILE]
# --only may be given more than once; --out writes the report there instead
# (e.g. for one SDK, leaving the others' figures in sdk-idiomatic.md). Every
# run is bounded (count, a quiet timeout after publishing, 120 s per run);
# the whole measurement is capped by BENCH_TIMEOUT seconds (1800).
# BLIPMQ_BENCH_SKIP_BUILD=1 reuses what an earlier run built. Not part of
# scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
command_line="scripts/bench-idiomatic.sh${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
target_dir="$CARGO_TARGET_DIR"
say() { echo "bench-idiomatic: $*" >&2; }

rounds=3
count=200000
sizes="16 1024"
quiet=3
report_out=bench/results/sdk-idiomatic.md
only=()
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --quiet) quiet="$2"; shift 2 ;;
    --out) report_out="$2"; shift 2 ;;
    --only)
      case "$2" in python | node | kotlin | web) only+=("$2") ;; *) say "--only: python, node, kotlin or web"; exit 2 ;; esac
      shift 2 ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown option $1 (see --help)"; exit 2 ;;
  esac
done
((${#only[@]})) || only=(python node kotlin web)
selected() { [[ " ${only[*]} " == *" $1 "* ]]; }
LIMIT=120 # seconds, per run (the programs stop themselves; timeout backs them)

# shellcheck source=lib/sdk-bench-servers.sh
source scripts/lib/sdk-bench-servers.sh
ensure_nats_server

work="$target_dir/idiomatic-bench"
mkdir -p "$work"
skip_build="${BLIPMQ_BENCH_SKIP_BUILD:-0}"
skipped=()

# --- build ------------------------------------------------------------------------
if [[ "$skip_build" != "1" || ! -x "$target_dir/release/blipmq" ]]; then
  say "release broker"
  cargo build --release -q --bins -p blipmq-broker
fi

venv="$work/python-venv"
if selected python && [[ "$skip_build" != "1" || ! -x "$venv/bin/python" ]]; then
  say "python: release wheel, virtualenv with it and nats-py"
  if [[ ! -x .venv/bin/python ]]; then python3 -m venv .venv; fi
  if ! .venv/bin/python -m pip show -q maturin >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "maturin>=1.9,<2"
  fi
  wheel_dir="$work/wheels"
  rm -rf "$wheel_dir"
  .venv/bin/maturin build --release --manifest-path bindings/python/Cargo.toml --out "$wheel_dir"
  wheel=("$wheel_dir"/blipmq-*.whl)
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "${wheel[0]}"
  "$venv/bin/python" -m pip install --quiet "nats-py==2.16.0"
fi

node_project="$work/node-project"
if selected node && [[ "$skip_build" != "1" || ! -d "$node_project/node_modules/blipmq" ]]; then
  say "node: release addon, packed, installed with nats into a scratch project"
  NODE_DIR="$REPO_ROOT/bindings/node"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --silent)
  scratch="$work/node-build"
  rm -rf "$scratch"
  mkdir -p "$scratch/package"
  # Pack from a copy, so the source tree's addon stays as it is.
  cp "$NODE_DIR"/{package.json,README.md,index.js,index.d.ts,native.cjs,native.d.ts} \
    "$scratch/package/"
  (cd "$NODE_DIR" && npx napi build --platform --release --output-dir "$scratch/package" \
    --js native.cjs --dts native.d.ts)
  # With @blipmq/core, the one dependency.
  # shellcheck source=lib/npm-pack.sh
  source "$REPO_ROOT/scripts/lib/npm-pack.sh"
  read -r core_tarball tarball < <(pack_with_core "$scratch/package" "$scratch")
  rm -rf "$node_project"
  mkdir -p "$node_project"
  cat >"$node_project/package.json" <<'EOF'
{ "name": "blipmq-idiomatic-bench-project", "private": true, "version": "0.0.0", "type": "module" }
EOF
  (cd "$node_project" && npm install --no-audit --no-fund --no-package-lock --silent \
    "$core_tarball" "$tarball" "nats@2.29.3")
fi
if selected node; then cp bindings/node/bench/idiomatic.mjs "$node_project/idiomatic.mjs"; fi

kotlin_build="$work/kotlin"
uniffi_lib="$target_dir/release/libblipmq_uniffi.so"
if selected kotlin; then
  if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    install_debs maven openjdk-17-jdk-headless
  fi
  if [[ "$skip_build" != "1" || ! -f "$uniffi_lib" || ! -f "$kotlin_build/classpath.txt" ]]; then
    say "kotlin: release uniffi library, the benchmark project with jnats"
    cargo build --release -q -p blipmq-uniffi
    if ! (cd bindings/uniffi/bench && mvn -B -q "-Dblipmq.build.dir=$kotlin_build" compile \
      dependency:build-classpath "-Dmdep.outputFile=$kotlin_build/classpath.txt" 2>&1 |
      sed -u 's/\x1b\[[0-9;]*m//g' >"$work/maven.log"); then
      say "kotlin: the Maven build failed (see $work/maven.log); Kotlin is skipped"
      skipped+=("Kotlin: the Maven build of bindings/uniffi/bench failed (jnats or the Kotlin toolchain could not be resolved)")
    fi
  fi
fi

web_project="$work/web-project"
if selected web; then
  if [[ "$skip_build" != "1" || ! -f bindings/wasm/native/blipmq_wasm_bg.wasm ]]; then
    say "web: the wasm package (scripts/test-web.sh --build-only)"
    scripts/test-web.sh --build-only >"$work/web-build.log" 2>&1 || {
      cat "$work/web-build.log" >&2
      exit 1
    }
  fi
  if [[ ! -f "$web_project/node_modules/nats.ws/package.json" ]]; then
    say "web: nats.ws into a scratch project"
    mkdir -p "$web_project"
    cat >"$web_project/package.json" <<'EOF'
{ "name": "blipmq-web-idiomatic-bench", "private": true, "version": "0.0.0", "type": "module" }
EOF
    (cd "$web_project" && npm install --no-audit --no-fund --no-package-lock --silent "nats.ws@1.30.3")
  fi
  if [[ ! -x /usr/bin/chromium ]]; then install_debs chromium; fi
fi

# --- servers ----------------------------------------------------------------------
bench_work="$(mktemp -d)"
server_pids=()
stop_servers() {
  local pid
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  server_pids=()
}

# BlipMQ on its defaults: only where it listens (and, with "ws", the
# WebSocket listener, off by default). Runs in the scratch directory, so no
# blipmq.toml is found; sets $blipmq_addr (and $blipmq_ws).
start_blipmq_defaults() {
  local ws="${1:-}" out="$bench_work/blipmq-$RANDOM.out" env_ws=()
  [[ "$ws" == ws ]] && env_ws=(BLIPMQ_WEBSOCKET_BIND_ADDR=127.0.0.1:0)
  (cd "$bench_work" && exec env BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_BIND_ADDR=127.0.0.1:0 \
    "${env_ws[@]}" RUST_LOG=warn "$target_dir/release/blipmq" >"$out" 2>"$out.err") &
  server_pids+=($!)
  bench_pids+=($!)
  blipmq_addr=""
  for _ in $(seq 200); do
    blipmq_addr="$(sed -n 's/^blipmq ready clients=\([^ ]*\).*/\1/p' "$out" 2>/dev/null || true)"
    [[ -n "$blipmq_addr" ]] && break
    kill -0 "${server_pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  if [[ -z "$blipmq_addr" ]]; then
    say "the BlipMQ broker did not start:"
    cat "$out.err" >&2
    exit 1
  fi
  blipmq_ws="$(sed -n 's/^blipmq ready .* websocket=\([^ ]*\).*/\1/p' "$out")"
}

# nats-server on its defaults (sets $nats_addr), or with "ws" from a config
# that only adds a WebSocket listener (sets $nats_ws).
start_nats_defaults() {
  local ws="${1:-}" port wsport
  port="$(free_port)"
  if [[ "$ws" == ws ]]; then
    wsport="$(free_port)"
    cat >"$bench_work/nats-ws.conf" <<EOF
listen: 127.0.0.1:$port
websocket {
  host: 127.0.0.1
  port: $wsport
  no_tls: true
}
EOF
    nats-server -c "$bench_work/nats-ws.conf" >"$bench_work/nats-ws.log" 2>&1 &
  else
    nats-server -a 127.0.0.1 -p "$port" >"$bench_work/nats.log" 2>&1 &
  fi
  server_pids+=($!)
  bench_pids+=($!)
  if ! wait_port "${server_pids[-1]}" "$port" || { [[ "$ws" == ws ]] && ! wait_port "${server_pids[-1]}" "$wsport"; }; then
    say "nats-server did not start"
    cat "$bench_work"/nats*.log >&2
    exit 1
  fi
  nats_addr="127.0.0.1:$port"
  [[ "$ws" == ws ]] && nats_ws="ws://127.0.0.1:$wsport"
  return 0
}

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain -- broker schema client-rs bindings 2>/dev/null | head -1)"
blipmq_version="$("$target_dir/release/blipmq" --version) (release build of this tree, commit $commit${dirty:+ + local changes})"
nats_version="nats-server $(nats-server --version | sed 's/^nats-server: //') (Debian $(dpkg-query -W -f='${Version}' nats-server 2>/dev/null || echo '?'))"

# --- measure ------------------------------------------------------------------------
runs="$work/runs.jsonl"
: >"$runs"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
deadline=$((SECONDS + ${BENCH_TIMEOUT:-1800}))

# run_one SDK SYSTEM SIZE ROUND ORDER: one bounded run, its JSON line (or an
# error line) appended to $runs.
run_one() {
  local sdk="$1" system="$2" size="$3" round="$4" order="$5" line="" status=0 left
  left=$((deadline - SECONDS))
  if ((left <= 0)); then
    say "BENCH_TIMEOUT reached: $sdk $system $size B round $round not run"
    return 0
  fi
  local t=$((LIMIT + 40 < left ? LIMIT + 40 : left))
  local common=(--count "$count" --size "$size" --quiet "$quiet" --limit "$LIMIT")
  set +e
  case "$sdk" in
    python)
      local addr="$blipmq_addr"; [[ "$system" == nats ]] && addr="$nats_addr"
      line="$(cd "$bench_work" && timeout "$t" "$venv/bin/python" "$REPO_ROOT/bindings/python/bench/idiomatic.py" \
        "$system" --addr "$addr" "${common[@]}" 2>>"$bench_work/python.err" | tail -1)"
      status=$? ;;
    node)
      local addr="$blipmq_addr"; [[ "$system" == nats ]] && addr="$nats_addr"
      line="$(cd "$node_project" && timeout "$t" node idiomatic.mjs "$system" --addr "$addr" "${common[@]}" \
        2>>"$bench_work/node.err" | tail -1)"
      status=$? ;;
    kotlin)
      local addr="$blipmq_addr"; [[ "$system" == nats ]] && addr="$nats_addr"
      line="$(timeout "$t" java -cp "$kotlin_build/classes:$(cat "$kotlin_build/classpath.txt")" \
        "-Duniffi.component.blipmq_uniffi.libraryOverride=$uniffi_lib" \
        dev.blipmq.bench.IdiomaticKt "$system" "$addr" "$count" "$size" "$quiet" "$LIMIT" \
        2>>"$bench_work/kotlin.err" | tail -1)"
      status=$? ;;
    web)
      local url="ws://$blipmq_ws"; [[ "$system" == nats ]] && url="$nats_ws"
      line="$(timeout "$t" node bindings/wasm/bench/idiomatic.mjs "$system" --url "$url" \
        --nats-ws "$web_project/node_modules/nats.ws" "${common[@]}" 2>>"$bench_work/web.err" | tail -1)"
      status=$? ;;
  esac
  set -e
  if [[ "$line" != "{"* ]] || ((status != 0)); then
    local why="exit status $status"
    [[ -s "$bench_work/$sdk.err" ]] && why="$why: $(tail -3 "$bench_work/$sdk.err" | tr '\n"\\' '   ' | cut -c1-300)"
    line="{\"sdk\":\"$sdk\",\"system\":\"$system\",\"size\":$size,\"error\":\"$why\"}"
  fi
  line="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["round"]=int(sys.argv[2]); r["order"]=int(sys.argv[3]); r.setdefault("size", int(sys.argv[4])); print(json.dumps(r))' \
    "$line" "$round" "$order" "$size")"
  echo "$line" >>"$runs"
  say "$line"
}

for sdk in "${only[@]}"; do
  if [[ "$sdk" == kotlin && ! -f "$kotlin_build/classpath.txt" ]]; then continue; fi
  ws=""
  [[ "$sdk" == web ]] && ws=ws
  start_blipmq_defaults "$ws"
  start_nats_defaults "$ws"
  say "$sdk: servers up (BlipMQ ${blipmq_ws:-$blipmq_addr}, NATS ${nats_ws:-$nats_addr})"
  for round in $(seq "$rounds"); do
    for size in $sizes; do
      if ((round % 2)); then order=(blipmq nats); else order=(nats blipmq); fi
      run_one "$sdk" "${order[0]}" "$size" "$round" 0
      run_one "$sdk" "${order[1]}" "$size" "$round" 1
    done
  done
  stop_servers
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
say "done in $((SECONDS - started)) s"

# --- report ---------------------------------------------------------------------------
mkdir -p bench/results
skipped_text="$(printf '%s; ' "${skipped[@]+"${skipped[@]}"}")"
python3 - "$work/meta.json" <<EOF
import json, sys, datetime
json.dump({
    "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "seconds": $((SECONDS - started)),
    "command": """$command_line""",
    "load_before": "$load_before",
    "load_after": "$load_after",
    "blipmq_version": """BlipMQ: $blipmq_version""",
    "nats_version": """NATS: $nats_version""",
    "count": $count,
    "sizes": [int(s) for s in "$sizes".split()],
    "quiet": $quiet,
    "rounds": $rounds,
    "skipped": """${skipped_text%; }""",
}, open(sys.argv[1], "w"))
EOF
python3 bench/idiomatic/report.py --runs "$runs" --meta "$work/meta.json" --out "$report_out"
