#!/usr/bin/env bash
# Throughput through the browser SDK (@blipmq/web): builds the wasm package
# and the release broker, then runs bindings/wasm/bench/bench.mjs (bounded:
# --count messages, 120 s at most), in headless Chromium and in Node.
#   scripts/bench-web.sh [--count 100000] [--size 16]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
scripts/test-web.sh --build-only
cargo build --release --bin blipmq
BLIPMQ_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/blipmq" node bindings/wasm/bench/bench.mjs "$@"
