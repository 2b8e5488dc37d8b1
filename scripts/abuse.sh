#!/usr/bin/env bash
# Adversarial tests of the real broker binary (abuse/): each case attacks a
# broker of its own as one hostile peer would and checks the broker's RSS,
# file descriptors and a bystander client's Ping round trip against the
# bounds the case states; then a short soak test (a mixed workload that fails
# on growth). CI runs the default counts on a debug build.
#
# Usage: scripts/abuse.sh [blipmq-abuse options]
#   scripts/abuse.sh --case subscriptions       some cases
#   scripts/abuse.sh --list                     what there is
#   BLIPMQ_BIN=target/release/blipmq scripts/abuse.sh --full
#                                               the issue's counts, release build
#   SOAK_SECS=3600 BLIPMQ_BIN=target/release/blipmq scripts/abuse.sh --case none
#                                               the hour-long soak
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build -p blipmq-broker --bin blipmq
cargo build -p blipmq-abuse
target_dir="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
export BLIPMQ_BIN="${BLIPMQ_BIN:-$target_dir/debug/blipmq}"
# Scratch directories on the repository's disk, not a tmpfs.
export BLIPMQ_ABUSE_DIR="$target_dir/abuse"
mkdir -p "$BLIPMQ_ABUSE_DIR"
"$target_dir/debug/blipmq-abuse" "$@"
if [[ "${SOAK_SECS:-120}" != 0 ]]; then
  "$target_dir/debug/blipmq-abuse" --soak-secs "${SOAK_SECS:-120}"
fi
