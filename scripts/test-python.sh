#!/usr/bin/env bash
# Build the Python SDK (bindings/python) into a wheel and test it as a user
# gets it: installed into a fresh virtualenv, with the tests run from outside
# the source tree against the real broker binary, so a packaging mistake
# fails here. Idempotent; installs its build tools into .venv only when
# missing.
#
# The fresh virtualenv stays at ${CARGO_TARGET_DIR:-target}/python-venv
# afterwards: the conformance testee for Python runs with its interpreter.
#
# Environment:
#   BLIPMQ_PY_RELEASE=1  build the wheel with --release. The default is a debug
#                        build: the tests check behaviour, not speed, and the
#                        release profile (fat LTO, one codegen unit) takes
#                        minutes on a 2-core machine. Benchmarks want release.
#   BLIPMQ_PY_RUNS=N     run the pytest suite N times in a row (default 1);
#                        every run also checks a dozen interpreter exits.
#                        0 only builds the wheel and the virtualenv (what the
#                        conformance testee needs).
#   BLIPMQ_BIN=PATH      test against this broker binary instead of building one.
#                        (blipmq-test-pki, which makes the TLS tests'
#                        certificates, is built either way.)
# Extra arguments go to pytest (e.g. -k sync, -x).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# maturin builds in cargo's target dir; share it with every other build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
target_dir="$CARGO_TARGET_DIR"

# Build tools in the project's virtualenv, each installed only when missing.
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
for requirement in "maturin>=1.9,<2" "pytest" "pytest-asyncio>=0.23"; do
  name="${requirement%%[<>=]*}"
  if ! .venv/bin/python -m pip show -q "$name" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "$requirement"
  fi
done

# The broker the tests run against.
if [[ -z "${BLIPMQ_BIN:-}" ]]; then
  cargo build --bins -p blipmq-broker
  BLIPMQ_BIN="$target_dir/debug/blipmq"
fi
export BLIPMQ_BIN
# The TLS tests' throwaway certificates, made at test time.
cargo build --bins -p blipmq-testkit
export BLIPMQ_TEST_PKI="$target_dir/debug/blipmq-test-pki"

# The wheel, alone in its output directory.
wheel_dir="$target_dir/wheels/python"
rm -rf "$wheel_dir"
profile_flag=()
if [[ "${BLIPMQ_PY_RELEASE:-0}" == "1" ]]; then
  profile_flag=(--release)
fi
.venv/bin/maturin build --manifest-path bindings/python/Cargo.toml \
  --out "$wheel_dir" "${profile_flag[@]}"
wheel=("$wheel_dir"/blipmq-*.whl)

# A fresh virtualenv with only the wheel and the test tools (mypy for the
# stub and typing checks).
venv="$target_dir/python-venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "${wheel[0]}" pytest "pytest-asyncio>=0.23" mypy

# Run from a copy of the tests outside the source tree, so `import blipmq`
# can only find the installed package.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r bindings/python/tests "$work/tests"
# The error table every SDK's classes are generated from, for test_errors.py.
cp schema/error-classes.json "$work/tests/error-classes.json"
cd "$work/tests"
runs="${BLIPMQ_PY_RUNS:-1}"
for ((run = 1; run <= runs; run++)); do
  if ((runs > 1)); then
    echo "pytest run $run of $runs"
  fi
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
done

# examples/python, run as a user runs it, with the installed package.
if ((runs > 0)); then
  # shellcheck source=lib/example.sh
  source "$REPO_ROOT/scripts/lib/example.sh"
  check_example python "$BLIPMQ_BIN" "$venv/bin/python" "$REPO_ROOT/examples/python/quickstart.py" "{addr}"
fi
