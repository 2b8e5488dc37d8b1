#!/usr/bin/env bash
# The Node SDK (bindings/node, npm package `blipmq`), tested as users get it:
#   1. install the build tools from package-lock.json (npm ci);
#   2. build the addon with napi-rs into a scratch folder and check that the
#      committed generated files (native.js, native.d.ts) are what the build
#      generates;
#   3. `npm pack` the package with @blipmq/core (bindings/js, the layer it
#      shares with the browser SDK; scripts/lib/npm-pack.sh) and install the
#      two tarballs into a fresh project at
#      ${CARGO_TARGET_DIR:-target}/node-test-project (which the conformance
#      testee `node` runs from, see conformance-tests/testees.toml);
#   4. type-check a consumer under `tsc --strict` against the installed types;
#   5. run the tests with `node --test` from there, against the real broker:
#      the package's own (bindings/node/test) and the shared layer's
#      (bindings/js/test, run with BLIPMQ_SDK=node);
#   6. run examples/node/quickstart.mjs from there against a broker.
# Idempotent: every run rebuilds the scratch folders from scratch.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
NODE_DIR="$REPO_ROOT/bindings/node"
# shellcheck source=lib/npm-pack.sh
source "$REPO_ROOT/scripts/lib/npm-pack.sh"
PROJECT="$TARGET_DIR/node-test-project"
SCRATCH="$TARGET_DIR/node-build"

step() {
  echo
  echo "==> node: $*"
}

step "broker binary, and blipmq-test-pki (the TLS tests' certificates)"
cargo build --bins -p blipmq-broker -p blipmq-testkit

step "npm ci (build tools)"
# The lock file records no download addresses (.npmrc:
# omit-lockfile-registry-resolved); refuse one that does. (The link to
# ../js is recorded as `"resolved": "../js"`: a path, not an address.)
if grep -q '"resolved": "[a-z+]*:' "$NODE_DIR/package-lock.json"; then
  echo "bindings/node/package-lock.json has \"resolved\" URLs; regenerate it with the .npmrc in place" >&2
  exit 1
fi
(cd "$NODE_DIR" && npm ci --no-audit --no-fund)

step "napi build, and the committed generated files match"
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
(cd "$NODE_DIR" && npx napi build --platform --output-dir "$SCRATCH" --js native.cjs --dts native.d.ts)
for generated in native.cjs native.d.ts; do
  if ! diff -u "$NODE_DIR/$generated" "$SCRATCH/$generated"; then
    echo "bindings/node/$generated is stale: run \`npm run build\` in bindings/node and commit it" >&2
    exit 1
  fi
done
rm -f "$NODE_DIR"/*.node
cp "$SCRATCH"/*.node "$NODE_DIR/"

step "npm pack with @blipmq/core, and install the tarballs into a fresh project"
read -r core_tarball tarball < <(pack_with_core "$NODE_DIR" "$SCRATCH")
rm -rf "$PROJECT"
mkdir -p "$PROJECT"
cat >"$PROJECT/package.json" <<'EOF'
{ "name": "blipmq-node-test-project", "private": true, "version": "0.0.0" }
EOF
# Its one dependency is the other tarball: installing needs no registry.
(cd "$PROJECT" && npm install --offline --no-audit --no-fund --no-package-lock "$core_tarball" "$tarball")
cp -r "$NODE_DIR/test" "$PROJECT/test"
# The shared tests, and the helpers the package's own tests import from
# test/shared/ (broker.mjs, sdk.mjs).
cp -r "$REPO_ROOT/bindings/js/test" "$PROJECT/test/shared"
cp "$REPO_ROOT/conformance-tests/testees/js/testee.mjs" "$PROJECT/testee.mjs"
# The error table every SDK's classes are generated from, for errors.test.mjs.
cp "$REPO_ROOT/schema/error-classes.json" "$PROJECT/test/error-classes.json"
# examples/node, beside the installed package it imports.
mkdir -p "$PROJECT/examples"
cp "$REPO_ROOT/examples/node/quickstart.mjs" "$PROJECT/examples/quickstart.mjs"

step "tsc --strict on a consumer of the installed types"
"$NODE_DIR/node_modules/.bin/tsc" -p "$PROJECT/test/tsconfig.json" --typeRoots "$NODE_DIR/node_modules/@types"

step "node --test against $TARGET_DIR/debug/blipmq"
cd "$PROJECT"
# A test that hangs fails after a minute instead of holding CI until its limit.
BLIPMQ_BIN="$TARGET_DIR/debug/blipmq" BLIPMQ_TEST_PKI="$TARGET_DIR/debug/blipmq-test-pki" BLIPMQ_SDK=node \
  node --test --test-reporter=spec --test-timeout=60000 test/*.test.mjs test/shared/*.test.mjs

step "examples/node: the quickstart prints what every example prints"
# shellcheck source=lib/example.sh
source "$REPO_ROOT/scripts/lib/example.sh"
check_example node "$TARGET_DIR/debug/blipmq" node "$PROJECT/examples/quickstart.mjs" "{addr}"
