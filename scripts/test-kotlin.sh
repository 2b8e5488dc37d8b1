#!/usr/bin/env bash
# The uniffi bindings (bindings/uniffi): the Kotlin (JVM) SDK tested as users
# get it, and the Swift bindings kept generated and checked.
#   1. build the native library (cdylib + staticlib), uniffi-bindgen and the
#      broker, all in the dev profile;
#   2. generate the Kotlin and Swift bindings from the library into a scratch
#      folder and check that the committed copies match
#      (BLIPMQ_UNIFFI_WRITE=1 rewrites the committed copies instead);
#   3. `mvn -B -q test` in bindings/uniffi/kotlin: JUnit 5 through Surefire
#      against the real broker, with the library just built inside the jar;
#      then install the jar into the local Maven repository (~/.m2);
#   4. build the conformance testee, as a user of that jar, into
#      ${CARGO_TARGET_DIR:-target}/kotlin-testee (conformance-tests/testees.toml
#      runs it from there);
#   5. build examples/kotlin and run its subscriber and publisher, then its
#      quickstart, against a broker.
# Maven output goes under the cargo target dir, never into the source tree.
# Maven downloads into ~/.m2 on its first run; every plugin version is
# pinned, so later runs need no network. When Maven Central cannot be
# reached, this fails and says so: it never skips.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
UNIFFI_DIR="$REPO_ROOT/bindings/uniffi"
SCRATCH="$TARGET_DIR/uniffi-build"
MAVEN_LOG="$SCRATCH/maven.log"

step() {
  echo
  echo "==> kotlin: $*"
}

# Maven in batch mode; a failure to download from Maven Central is named as
# such, since it is the machine's problem rather than the code's.
maven() {
  local status
  # (Debian's Maven 3.8 writes colour resets even in batch mode: dropped.)
  set +e
  mvn -B "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g' | tee "$MAVEN_LOG"
  status=${PIPESTATUS[0]}
  set -e
  if ((status != 0)); then
    if grep -qE "Could not (resolve|transfer|download)|Non-resolvable|Unknown host|UnknownHostException|Network is unreachable|Connection (refused|timed out)|could not be resolved" "$MAVEN_LOG"; then
      echo "test-kotlin: FAILED: Maven could not download what it needs from Maven Central." >&2
      echo "test-kotlin: the Kotlin SDK cannot be built or tested without it (nothing was skipped)." >&2
    fi
    exit "$status"
  fi
}

step "java and maven"
if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven openjdk-17-jdk-headless
  else
    echo "test-kotlin: FAILED: Maven (mvn) and a JDK 17+ are needed" >&2
    exit 1
  fi
fi
java -version 2>&1 | sed -n 1p
mvn -v 2>&1 | sed -n 1p

step "native library, uniffi-bindgen and broker (dev profile)"
cargo build -p blipmq-uniffi -p blipmq-uniffi-bindgen
cargo build --bins -p blipmq-broker -p blipmq-testkit
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/native"
# The jar carries the library without its debug info (80 MB -> 4 MB): JNA
# copies it out of the jar at every JVM start.
strip --strip-debug -o "$SCRATCH/native/libblipmq_uniffi.so" "$TARGET_DIR/debug/libblipmq_uniffi.so"

step "generate the Kotlin and Swift bindings, and compare with the committed copies"
"$TARGET_DIR/debug/uniffi-bindgen" generate --library "$TARGET_DIR/debug/libblipmq_uniffi.so" \
  --language kotlin --language swift --no-format --out-dir "$SCRATCH/generated"
# generated file -> committed copy
pairs=(
  "dev/blipmq/ffi/blipmq_uniffi.kt:kotlin/src/main/kotlin/dev/blipmq/ffi/blipmq_uniffi.kt"
  "BlipMQ.swift:swift/Sources/BlipMQ/BlipMQ.swift"
  "BlipMQFFI.h:swift/Sources/BlipMQFFI/BlipMQFFI.h"
  "BlipMQFFI.modulemap:swift/Sources/BlipMQFFI/module.modulemap"
)
stale=0
for pair in "${pairs[@]}"; do
  generated="$SCRATCH/generated/${pair%%:*}"
  committed="$UNIFFI_DIR/${pair#*:}"
  if [[ "${BLIPMQ_UNIFFI_WRITE:-0}" == "1" ]]; then
    mkdir -p "$(dirname "$committed")"
    cp "$generated" "$committed"
  elif ! diff -u "$committed" "$generated"; then
    echo "bindings/uniffi/${pair#*:} is stale" >&2
    stale=1
  fi
done
if ((stale)); then
  echo "regenerate with: BLIPMQ_UNIFFI_WRITE=1 scripts/test-kotlin.sh, and commit the result" >&2
  exit 1
fi

maven_properties=(
  "-Dblipmq.native.dir=$SCRATCH/native"
  "-Dblipmq.bin=$TARGET_DIR/debug/blipmq"
  "-Dblipmq.pki=$TARGET_DIR/debug/blipmq-test-pki"
)

step "mvn -q test (JUnit 5 against $TARGET_DIR/debug/blipmq)"
(cd "$UNIFFI_DIR/kotlin" && maven -q test "${maven_properties[@]}" "-Dblipmq.build.dir=$TARGET_DIR/kotlin-sdk")
# -q hides Surefire's summary; count from its reports.
reports=("$TARGET_DIR"/kotlin-sdk/surefire-reports/TEST-*.xml)
tests=0 failed=0 skipped=0
for report in "${reports[@]}"; do
  header="$(grep -m1 -o '<testsuite [^>]*>' "$report")"
  attr() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$header"; }
  tests=$((tests + $(attr tests)))
  failed=$((failed + $(attr failures) + $(attr errors)))
  skipped=$((skipped + $(attr skipped)))
done
if ((tests == 0)); then
  echo "test-kotlin: FAILED: Surefire ran no test" >&2
  exit 1
fi
echo "kotlin sdk: $((tests - failed - skipped)) passed, $failed failed, $skipped skipped (${#reports[@]} classes)"

step "install the jar into the local Maven repository"
(cd "$UNIFFI_DIR/kotlin" && maven -q install -DskipTests "${maven_properties[@]}" "-Dblipmq.build.dir=$TARGET_DIR/kotlin-sdk")

step "conformance testee into $TARGET_DIR/kotlin-testee"
rm -rf "$TARGET_DIR/kotlin-testee"
(cd conformance-tests/testees/kotlin && maven -q package \
  "-Dblipmq.build.dir=$TARGET_DIR/kotlin-testee-build" "-Dblipmq.testee.lib=$TARGET_DIR/kotlin-testee")

step "examples/kotlin: the subscriber receives what the publisher sends"
broker_out="$SCRATCH/broker.out"
BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_BIND_ADDR=127.0.0.1:0 \
  BLIPMQ_WAL_DIR="$SCRATCH/wal" RUST_LOG=warn \
  "$TARGET_DIR/debug/blipmq" >"$broker_out" 2>/dev/null &
broker_pid=$!
subscriber_pid=""
cleanup() {
  [[ -n "$subscriber_pid" ]] && kill "$subscriber_pid" 2>/dev/null || true
  kill "$broker_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  grep -q '^blipmq ready' "$broker_out" && break
  sleep 0.1
done
addr="$(sed -n 's/^blipmq ready clients=\([^ ]*\) .*/\1/p' "$broker_out")"
if [[ -z "$addr" ]]; then
  echo "test-kotlin: the broker did not get ready" >&2
  exit 1
fi
examples=(-q "-Dblipmq.build.dir=$TARGET_DIR/kotlin-examples")
(cd examples/kotlin && maven "${examples[@]}" compile)
subscriber_out="$SCRATCH/subscriber.out"
(cd examples/kotlin && exec mvn -B "${examples[@]}" exec:java \
  -Dexec.mainClass=dev.blipmq.examples.SubscriberKt -Dexec.args="$addr orders.> 3") >"$subscriber_out" 2>&1 &
subscriber_pid=$!
for _ in $(seq 300); do
  grep -q '^subscribed' "$subscriber_out" && break
  kill -0 "$subscriber_pid" 2>/dev/null || break
  sleep 0.1
done
(cd examples/kotlin && maven "${examples[@]}" exec:java \
  -Dexec.mainClass=dev.blipmq.examples.PublisherKt -Dexec.args="$addr orders.created 3")
for _ in $(seq 300); do
  kill -0 "$subscriber_pid" 2>/dev/null || break
  sleep 0.1
done
sed 's/\x1b\[[0-9;]*m//g' "$subscriber_out"
if kill -0 "$subscriber_pid" 2>/dev/null || [[ $(grep -c '^orders.created #[0-9]* tenant=acme: order #[123]$' "$subscriber_out") != 3 ]]; then
  echo "test-kotlin: FAILED: the example subscriber did not print the three orders" >&2
  exit 1
fi
wait "$subscriber_pid"
subscriber_pid=""

step "examples/kotlin: the quickstart prints what every example prints"
# shellcheck source=lib/example.sh
source "$REPO_ROOT/scripts/lib/example.sh"
check_example kotlin "$TARGET_DIR/debug/blipmq" mvn -B -q -f examples/kotlin/pom.xml \
  "${examples[@]}" exec:java -Dexec.mainClass=dev.blipmq.examples.QuickstartKt "-Dexec.args={addr}"
echo "kotlin: all checks passed"
