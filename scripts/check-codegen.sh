#!/usr/bin/env bash
# Fails if schema/src/generated/blipmq_generated.rs, or the Python package in
# conformance-tests/testees/python-protocol/generated/, is not exactly what the
# pinned flatc generates from schema/blipmq.fbs, or if an SDK's error classes are
# not what scripts/lib/gen_errors.py writes from blipmq.fbs and schema/errors.toml.
# Fix with scripts/regen-codegen.sh.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/flatc.sh
source "$REPO_ROOT/scripts/lib/flatc.sh"

ensure_flatc

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

generate_rust "$tmp"
fresh="$tmp/blipmq_generated.rs"
if [[ ! -f "$fresh" ]]; then
  echo "error: flatc did not produce $fresh" >&2
  exit 1
fi

committed="$REPO_ROOT/$GENERATED_RS"
if [[ ! -f "$committed" ]]; then
  echo "error: $GENERATED_RS is missing; run scripts/regen-codegen.sh" >&2
  exit 1
fi

if ! diff -u --label "$GENERATED_RS (committed)" --label "$GENERATED_RS (flatc $FLATC_VERSION)" \
  "$committed" "$fresh"; then
  echo >&2
  echo "error: $GENERATED_RS is out of date with $FBS_SCHEMA (flatc $FLATC_VERSION)." >&2
  echo "       Run scripts/regen-codegen.sh and commit the result." >&2
  exit 1
fi

echo "ok: $GENERATED_RS matches $FBS_SCHEMA (flatc $FLATC_VERSION)"

# The Python package of the python-protocol conformance testee.
generate_python "$tmp/py"
if [[ ! -d "$tmp/py/blipmq/wire" ]]; then
  echo "error: flatc did not produce $tmp/py/blipmq/wire" >&2
  exit 1
fi

committed_py="$REPO_ROOT/$GENERATED_PY_DIR"
if [[ ! -d "$committed_py" ]]; then
  echo "error: $GENERATED_PY_DIR is missing; run scripts/regen-codegen.sh" >&2
  exit 1
fi

# __pycache__ is what running the testee leaves behind, not generated code.
if ! diff -ru -x __pycache__ "$committed_py" "$tmp/py"; then
  echo >&2
  echo "error: $GENERATED_PY_DIR is out of date with $FBS_SCHEMA (flatc $FLATC_VERSION)." >&2
  echo "       (above: committed on the left, fresh flatc output on the right)" >&2
  echo "       Run scripts/regen-codegen.sh and commit the result." >&2
  exit 1
fi

echo "ok: $GENERATED_PY_DIR matches $FBS_SCHEMA (flatc $FLATC_VERSION)"

# Every SDK's error classes, from blipmq.fbs and schema/errors.toml (the two npm
# packages share one JavaScript copy, in bindings/js, @blipmq/core).
python3 "$REPO_ROOT/scripts/lib/gen_errors.py" --check
