#!/usr/bin/env bash
# The browser SDK (bindings/wasm, npm package `@blipmq/web`), tested as users
# get it:
#   1. install the build and test tools from package-lock.json (npm ci:
#      binaryen's wasm-opt, typescript, ws, playwright-core);
#   2. build the wasm (profile wasm-release), run wasm-bindgen (the CLI of
#      exactly the version in Cargo.lock, installed into the target dir when
#      it is not on PATH), put its JS glue in native/ (generated, not
#      committed: it carries closure indices that move with any change to
#      client-rs) and check that the committed types (native/blipmq_wasm.d.ts,
#      the module's API) are what it generates;
#   3. optimise with wasm-opt and enforce the size budget: gzipped under
#      100 KiB;
#   4. `npm pack` the package with @blipmq/core (bindings/js, the layer it
#      shares with the Node SDK; scripts/lib/npm-pack.sh) and install the two
#      tarballs into a fresh project at
#      ${CARGO_TARGET_DIR:-target}/web-test-project (which the conformance
#      testee `wasm` runs from, see conformance-tests/testees.toml);
#   5. type-check a consumer under `tsc --strict` against the installed types;
#   6. run the tests with `node --test` from there against the real broker:
#      the package's own (bindings/wasm/test) and the shared layer's
#      (bindings/js/test, run with BLIPMQ_SDK=web),
#      in Node (over the `ws` package), and in headless Chromium (Debian's
#      chromium, driven by playwright-core, over ws:// and over wss:// with
#      a test CA from blipmq-test-pki; screenshots land in
#      ${CARGO_TARGET_DIR:-target}/web-test/).
# `--build-only` stops after step 3 (what `npm run build` in bindings/wasm
# does). Idempotent: every run rebuilds the scratch folders from scratch.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
WEB_DIR="$REPO_ROOT/bindings/wasm"
# shellcheck source=lib/npm-pack.sh
source "$REPO_ROOT/scripts/lib/npm-pack.sh"
PROJECT="$TARGET_DIR/web-test-project"
SCRATCH="$TARGET_DIR/web-build"
# The optimised .wasm, gzipped, must stay under this (the issue's budget).
SIZE_BUDGET=$((100 * 1024))

step() {
  echo
  echo "==> web: $*"
}

step "npm ci (build and test tools)"
# The lock file records no download addresses (.npmrc:
# omit-lockfile-registry-resolved); refuse one that does. (The link to
# ../js is recorded as `"resolved": "../js"`: a path, not an address.)
if grep -q '"resolved": "[a-z+]*:' "$WEB_DIR/package-lock.json"; then
  echo "bindings/wasm/package-lock.json has \"resolved\" URLs; regenerate it with the .npmrc in place" >&2
  exit 1
fi
(cd "$WEB_DIR" && npm ci --no-audit --no-fund)

step "wasm-bindgen CLI matching Cargo.lock"
version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)"
if [[ -z "$version" ]]; then
  echo "no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
WASM_BINDGEN=""
for candidate in "$(command -v wasm-bindgen || true)" "$TARGET_DIR/tools/bin/wasm-bindgen"; do
  if [[ -n "$candidate" && -x "$candidate" && "$("$candidate" --version)" == "wasm-bindgen $version" ]]; then
    WASM_BINDGEN="$candidate"
    break
  fi
done
if [[ -z "$WASM_BINDGEN" ]]; then
  # Into the target dir, so the tool version follows Cargo.lock and nothing
  # outside the checkout changes.
  cargo install wasm-bindgen-cli --version "$version" --root "$TARGET_DIR/tools"
  WASM_BINDGEN="$TARGET_DIR/tools/bin/wasm-bindgen"
fi
echo "using $WASM_BINDGEN ($("$WASM_BINDGEN" --version))"

step "build the wasm and its glue, and the committed types match"
cargo build -p blipmq-wasm --target wasm32-unknown-unknown --profile wasm-release
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
"$WASM_BINDGEN" --target web --weak-refs --out-dir "$SCRATCH" --out-name blipmq_wasm \
  "$TARGET_DIR/wasm32-unknown-unknown/wasm-release/blipmq_wasm.wasm"
cp "$SCRATCH/blipmq_wasm.js" "$WEB_DIR/native/blipmq_wasm.js"
if ! diff -u "$WEB_DIR/native/blipmq_wasm.d.ts" "$SCRATCH/blipmq_wasm.d.ts"; then
  echo "bindings/wasm/native/blipmq_wasm.d.ts is stale (the wasm module's API changed): copy $SCRATCH/blipmq_wasm.d.ts there, check index.js and index.d.ts still fit it, and commit it" >&2
  exit 1
fi

step "wasm-opt, and the size budget"
# binaryen from npm (package-lock.json), never Debian's: its version 108
# emits broken modules. --converge repeats -Oz until it stops shrinking
# the module (about 1.2 KB less gzipped than one pass).
"$WEB_DIR/node_modules/.bin/wasm-opt" -Oz --converge --strip-debug --strip-producers \
  "$SCRATCH/blipmq_wasm_bg.wasm" -o "$WEB_DIR/native/blipmq_wasm_bg.wasm"
raw=$(wc -c <"$WEB_DIR/native/blipmq_wasm_bg.wasm")
gzipped=$(gzip -9 -c "$WEB_DIR/native/blipmq_wasm_bg.wasm" | wc -c)
echo "blipmq_wasm_bg.wasm: $raw bytes, $gzipped bytes gzipped (budget $SIZE_BUDGET)"
if ((gzipped >= SIZE_BUDGET)); then
  echo "the gzipped wasm is over its budget of $SIZE_BUDGET bytes" >&2
  exit 1
fi
if [[ "${1:-}" == "--build-only" ]]; then
  exit 0
fi

step "broker binary, and blipmq-test-pki (the wss test's certificates)"
cargo build --bins -p blipmq-broker -p blipmq-testkit

step "chromium"
if [[ ! -x /usr/bin/chromium ]]; then
  echo "/usr/bin/chromium is missing: scripts/setup.sh installs it" >&2
  exit 1
fi
/usr/bin/chromium --version

step "npm pack with @blipmq/core, and install the tarballs into a fresh project"
read -r core_tarball tarball < <(pack_with_core "$WEB_DIR" "$SCRATCH")
rm -rf "$PROJECT"
mkdir -p "$PROJECT"
cat >"$PROJECT/package.json" <<'EOF'
{ "name": "blipmq-web-test-project", "private": true, "version": "0.0.0", "type": "module" }
EOF
# The test tools at the versions package-lock.json pins (npm's cache has
# them from `npm ci` above).
tools=()
for tool in ws playwright-core typescript; do
  tools+=("$tool@$(node -p "require('$WEB_DIR/package-lock.json').packages['node_modules/$tool'].version")")
done
(cd "$PROJECT" && npm install --prefer-offline --no-audit --no-fund --no-package-lock "$core_tarball" "$tarball" "${tools[@]}")
cp -r "$WEB_DIR/test" "$PROJECT/test"
# The shared tests, and the helpers the package's own tests import from
# test/shared/ (broker.mjs, sdk.mjs).
cp -r "$REPO_ROOT/bindings/js/test" "$PROJECT/test/shared"
cp -r "$REPO_ROOT/examples/browser" "$PROJECT/example"
# What every language's quickstart prints, for the quickstart page's test.
cp "$REPO_ROOT/examples/expected-output.txt" "$PROJECT/example/expected-output.txt"
cp "$REPO_ROOT/conformance-tests/testees/js/testee.mjs" "$PROJECT/testee.mjs"
# The error table every SDK's classes are generated from, for errors.test.mjs.
cp "$REPO_ROOT/schema/error-classes.json" "$PROJECT/test/error-classes.json"

step "tsc --strict on a consumer of the installed types"
"$PROJECT/node_modules/.bin/tsc" -p "$PROJECT/test/tsconfig.json"

step "node --test against $TARGET_DIR/debug/blipmq (Node, then headless Chromium)"
# A test that hangs fails after three minutes instead of holding CI.
cd "$PROJECT"
BLIPMQ_BIN="$TARGET_DIR/debug/blipmq" BLIPMQ_TEST_PKI="$TARGET_DIR/debug/blipmq-test-pki" \
  SCREENSHOT_DIR="$TARGET_DIR/web-test" BLIPMQ_SDK=web \
  node --test --test-reporter=spec --test-concurrency=1 --test-timeout=180000 test/*.test.mjs test/shared/*.test.mjs
