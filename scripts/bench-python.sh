#!/usr/bin/env bash
# The Python SDK beside nats-py, on this machine, on 127.0.0.1.
#
# Builds the release broker and the release wheel (what users install),
# makes a virtualenv with the wheel and nats-py at
# ${CARGO_TARGET_DIR:-target}/python-bench-venv, installs nats-server from
# Debian's packages when it is missing, starts both servers on free ports,
# runs bindings/python/bench/sdk_bench.py (publish and receive throughput at
# 16 B and 1 KiB, latency at a fixed rate; medians of 3 rounds) and stops
# the servers by their PIDs on exit. Prints the report and writes it to
# bench/results/sdk-python.md. Every run inside is bounded in count and
# time; the whole measurement is capped by BENCH_TIMEOUT seconds (900).
#
# Usage: scripts/bench-python.sh [sdk_bench.py run options]
#   e.g. scripts/bench-python.sh --rounds 1 --count 50000
#   (see: python bindings/python/bench/sdk_bench.py run --help)
# Environment: BLIPMQ_BENCH_SKIP_BUILD=1 reuses the last wheel and venv.
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
command_line="scripts/bench-python.sh${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
target_dir="$CARGO_TARGET_DIR"
say() { echo "bench-python: $*" >&2; }

# shellcheck source=lib/sdk-bench-servers.sh
source scripts/lib/sdk-bench-servers.sh
ensure_nats_server

# --- build: the release broker, the release wheel, the venv -------------------
venv="$target_dir/python-bench-venv"
if [[ "${BLIPMQ_BENCH_SKIP_BUILD:-0}" != "1" || ! -x "$venv/bin/python" ]]; then
  cargo build --release -q --bins -p blipmq-broker
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -m pip show -q maturin >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "maturin>=1.9,<2"
  fi
  wheel_dir="$target_dir/wheels/python-bench"
  rm -rf "$wheel_dir"
  .venv/bin/maturin build --release --manifest-path bindings/python/Cargo.toml --out "$wheel_dir"
  wheel=("$wheel_dir"/blipmq-*.whl)
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "${wheel[0]}" "nats-py==2.16.0"
fi

# --- the servers ------------------------------------------------------------------
start_blipmq "$target_dir/release/blipmq"
start_nats

# --- measure ------------------------------------------------------------------------
say "servers up; measuring (${BENCH_TIMEOUT:-900} s at most)"
started=$SECONDS
mkdir -p bench/results
# Run from outside the source tree: `import blipmq` finds the installed wheel.
(cd "$bench_work" && timeout "${BENCH_TIMEOUT:-900}" "$venv/bin/python" \
  "$REPO_ROOT/bindings/python/bench/sdk_bench.py" run \
  --blipmq "$blipmq_addr" --nats "$nats_addr" \
  --server-version "$blipmq_version" --server-version "$nats_version" \
  --out "$REPO_ROOT/bench/results/sdk-python.md" --command "$command_line" "$@")
say "done in $((SECONDS - started)) s"
