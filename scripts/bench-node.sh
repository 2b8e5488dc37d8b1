#!/usr/bin/env bash
# The Node SDK beside the `nats` npm client, on this machine, on 127.0.0.1.
#
# Builds the release broker and the release addon, packs the `blipmq` npm
# package, installs the tarball and `nats` into a scratch project at
# ${CARGO_TARGET_DIR:-target}/node-bench-project, installs nats-server from
# Debian's packages when it is missing, starts both servers on free ports,
# runs bindings/node/bench/sdk-bench.mjs there (publish and receive
# throughput at 16 B and 1 KiB, latency at a fixed rate; medians of 3
# rounds) and stops the servers by their PIDs on exit. Prints the report and
# writes it to bench/results/sdk-node.md. Every run inside is bounded in
# count and time; the whole measurement is capped by BENCH_TIMEOUT seconds
# (900).
#
# Usage: scripts/bench-node.sh [sdk-bench.mjs run options]
#   e.g. scripts/bench-node.sh --rounds 1 --count 50000
# Environment: BLIPMQ_BENCH_SKIP_BUILD=1 reuses the last scratch project.
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
command_line="scripts/bench-node.sh${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
target_dir="$CARGO_TARGET_DIR"
NODE_DIR="$REPO_ROOT/bindings/node"
# shellcheck source=lib/npm-pack.sh
source "$REPO_ROOT/scripts/lib/npm-pack.sh"
say() { echo "bench-node: $*" >&2; }

# shellcheck source=lib/sdk-bench-servers.sh
source scripts/lib/sdk-bench-servers.sh
ensure_nats_server

# --- build: the release broker and addon, the packed package, the project -----
project="$target_dir/node-bench-project"
if [[ "${BLIPMQ_BENCH_SKIP_BUILD:-0}" != "1" || ! -d "$project/node_modules/blipmq" ]]; then
  cargo build --release -q --bins -p blipmq-broker
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --silent)
  scratch="$target_dir/node-bench-build"
  rm -rf "$scratch"
  mkdir -p "$scratch/package"
  # Pack from a copy, so the source tree's addon (a debug build from
  # scripts/test-node.sh) stays as it is.
  cp "$NODE_DIR"/{package.json,README.md,index.js,index.d.ts,native.cjs,native.d.ts} \
    "$scratch/package/"
  (cd "$NODE_DIR" && npx napi build --platform --release --output-dir "$scratch/package" \
    --js native.cjs --dts native.d.ts)
  # With @blipmq/core, the one dependency (scripts/lib/npm-pack.sh).
  read -r core_tarball tarball < <(pack_with_core "$scratch/package" "$scratch")
  rm -rf "$project"
  mkdir -p "$project"
  cat >"$project/package.json" <<'EOF'
{ "name": "blipmq-node-bench-project", "private": true, "version": "0.0.0", "type": "module" }
EOF
  (cd "$project" && npm install --no-audit --no-fund --no-package-lock --silent \
    "$core_tarball" "$tarball" "nats@2.29.3")
fi
cp "$NODE_DIR/bench/sdk-bench.mjs" "$project/sdk-bench.mjs"

# --- the servers ------------------------------------------------------------------
start_blipmq "$target_dir/release/blipmq"
start_nats

# --- measure ------------------------------------------------------------------------
say "servers up; measuring (${BENCH_TIMEOUT:-900} s at most)"
started=$SECONDS
mkdir -p bench/results
(cd "$project" && timeout "${BENCH_TIMEOUT:-900}" node sdk-bench.mjs run \
  --blipmq "$blipmq_addr" --nats "$nats_addr" \
  --server-version "$blipmq_version" --server-version "$nats_version" \
  --out "$REPO_ROOT/bench/results/sdk-node.md" --command "$command_line" "$@")
say "done in $((SECONDS - started)) s"
