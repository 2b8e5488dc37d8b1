#!/usr/bin/env bash
# Build `blipmq` as one statically linked executable (glibc, crt-static):
# it runs on any x86_64 Linux without the project's toolchain.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
target="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p blipmq-broker --bin blipmq --target "$target"
binary="target/$target/release/blipmq"
ls -l "$binary"
file "$binary" 2>/dev/null || true
