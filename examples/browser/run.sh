#!/usr/bin/env bash
# The one command for the browser example: build the wasm package and the
# broker, then serve the chat page next to a fresh local broker.
#   examples/browser/run.sh [--port 8080]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
scripts/test-web.sh --build-only
cargo build --bin blipmq
exec node examples/browser/serve.mjs "$@"
