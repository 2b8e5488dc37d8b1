#!/usr/bin/env bash
# Regenerates schema/src/generated/blipmq_generated.rs from schema/blipmq.fbs
# with the pinned flatc. scripts/check-codegen.sh verifies the result.
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
