#!/usr/bin/env bash
# Fails if schema/src/generated/blipmq_generated.rs is not exactly what the
# pinned flatc generates from schema/blipmq.fbs. Fix with scripts/regen-codegen.sh.
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
