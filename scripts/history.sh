#!/usr/bin/env bash
# Jepsen-style check of QoS 1 durability: build the broker and the
# blipmq-history runner (debug), then run the runner against the real
# `blipmq` binary: 60 s of pipelined QoS 1 publishers, durable consumers and
# a queue group while a nemesis kills, freezes and restarts the broker, then
# a drain on a healthy broker and a check of the recorded history. Exits
# non-zero on any violation; the seed is printed first, and the run's
# directory (broker log, log segments, history.jsonl) is kept on failure.
#
# Usage: scripts/history.sh [blipmq-history options]
#   scripts/history.sh --seed 42          replay a run
#   scripts/history.sh --duration 1800    a long run
# (see history/README.md, or: target/debug/blipmq-history --help)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build -p blipmq-broker --bin blipmq -p blipmq-history --bin blipmq-history
target_dir="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
# On the repository's disk rather than /tmp, which may be a tmpfs where
# fsync costs nothing and the broker's timing is unlike a real disk's.
mkdir -p "$target_dir/history"
exec "$target_dir/debug/blipmq-history" \
  --broker "$target_dir/debug/blipmq" --dir "$target_dir/history" --duration 60 "$@"
