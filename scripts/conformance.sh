#!/usr/bin/env bash
# Build the broker, the testees and the runner, then run every conformance
# scenario against every testee and every producer × consumer pair.
# Extra arguments go to the runner (e.g. --only pubsub, --testee rust, --no-pairs).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
cargo build --bins -p blipmq-broker -p blipmq-testee-rust -p blipmq-conformance
target_dir="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
exec "$target_dir/debug/conformance" --broker "$target_dir/debug/blipmq" "$@"
