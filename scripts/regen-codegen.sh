#!/usr/bin/env bash
# Regenerates schema/src/generated/blipmq_generated.rs and the Python package in
# conformance-tests/testees/python-protocol/generated/ from schema/blipmq.fbs
# with the pinned flatc, and every SDK's error classes from blipmq.fbs and
# schema/errors.toml (scripts/lib/gen_errors.py). scripts/check-codegen.sh
# verifies the result.
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

target="$REPO_ROOT/$GENERATED_RS"
mkdir -p "$(dirname "$target")"
if [[ -f "$target" ]] && cmp -s "$fresh" "$target"; then
  echo "unchanged: $GENERATED_RS"
else
  cp "$fresh" "$target"
  echo "rewrote: $GENERATED_RS (flatc $FLATC_VERSION)"
fi

# The Python package of the python-protocol conformance testee: replaced as a
# whole, so that files for removed types do not linger.
generate_python "$tmp/py"
if [[ ! -d "$tmp/py/blipmq/wire" ]]; then
  echo "error: flatc did not produce $tmp/py/blipmq/wire" >&2
  exit 1
fi

target_py="$REPO_ROOT/$GENERATED_PY_DIR"
if [[ -d "$target_py" ]] && diff -rq -x __pycache__ "$target_py" "$tmp/py" >/dev/null; then
  echo "unchanged: $GENERATED_PY_DIR"
else
  rm -rf "$target_py"
  mkdir -p "$target_py"
  cp -R "$tmp/py/." "$target_py/"
  echo "rewrote: $GENERATED_PY_DIR (flatc $FLATC_VERSION)"
fi

# Every SDK's error classes, from blipmq.fbs and schema/errors.toml (the two npm
# packages share one JavaScript copy, in bindings/js, @blipmq/core).
python3 "$REPO_ROOT/scripts/lib/gen_errors.py"
