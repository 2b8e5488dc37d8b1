#!/usr/bin/env bash
# Build the container image from the static binary (scripts/build-static.sh
# first). Uses docker, or podman when docker is missing.
#   deploy/container/build.sh [TAG]      (default blipmq:<version>)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
target="$(rustc -vV | sed -n 's/^host: //p')"
binary="${CARGO_TARGET_DIR:-target}/$target/release/blipmq"
[[ -x "$binary" ]] || { echo "no static binary at $binary: run scripts/build-static.sh" >&2; exit 1; }
version="$("$binary" --version | awk '{print $2}')"
tag="${1:-blipmq:$version}"
engine="$(command -v docker || command -v podman || true)"
[[ -n "$engine" ]] || { echo "neither docker nor podman is installed" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/context/data"
cp "$binary" "$context/context/blipmq"
cp deploy/container/Containerfile "$context/Containerfile"
"$engine" build -f "$context/Containerfile" -t "$tag" "$context"
echo "built $tag"
