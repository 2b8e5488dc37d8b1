#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the WAL's recovery, the
# queue manifest's parser and the broker's connections; see fuzz/README.md.
# Installs the nightly toolchain and cargo-fuzz when missing, builds every
# target once, runs them side by side for FUZZ_SECONDS (default 30) each,
# starting from a copy of each committed corpus (so the tree stays clean),
# and exits non-zero if any target crashed, hung or ran out of memory,
# printing the input that did.
#
# Usage: scripts/fuzz.sh [TARGET...]        (default: every target)
#        FUZZ_SECONDS=600 scripts/fuzz.sh wal_recovery
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
# An input that runs this long is reported as a hang (libFuzzer's default,
# 20 minutes, would outlast any time box).
FUZZ_INPUT_TIMEOUT="${FUZZ_INPUT_TIMEOUT:-20}"
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=(wal_recovery manifest_parse connection_frames)
fi
started=$SECONDS

# The sanitizer and coverage flags cargo-fuzz passes need a nightly rustc.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# fuzz/ is a workspace of its own, so the root's format check skips it.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

echo "==> building ${targets[*]}"
for target in "${targets[@]}"; do
  cargo +nightly fuzz build "$target"
done

scratch="$(mktemp -d "${TMPDIR:-/tmp}/blipmq-fuzz.XXXXXX")"
# The harnesses' own temporary directories (WAL directories, the broker's
# log) go under one parent, in RAM when /dev/shm exists since recovery
# fsyncs, removed at the end: a fuzzer that crashes, or ends the way
# libFuzzer does (exit()), cannot remove them itself.
shm=/dev/shm
[[ -d $shm ]] || shm="${TMPDIR:-/tmp}"
BLIPMQ_FUZZ_TMP="$(mktemp -d "$shm/blipmq-fuzz-tmp.XXXXXX")"
export BLIPMQ_FUZZ_TMP
# The targets run side by side: each still gets FUZZ_SECONDS, and the step
# takes that long once rather than once per target.
pids=()
# Stopped early (Ctrl-C, a step timeout), stop them too; each also ends by
# itself after FUZZ_SECONDS.
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$BLIPMQ_FUZZ_TMP"' EXIT
for target in "${targets[@]}"; do
  dir="$scratch/$target"
  mkdir -p "$dir/corpus"
  cp -R "fuzz/corpus/$target/." "$dir/corpus/"
  cargo +nightly fuzz run "$target" "$dir/corpus" -- \
    -max_total_time="$FUZZ_SECONDS" \
    -timeout="$FUZZ_INPUT_TIMEOUT" \
    -artifact_prefix="$dir/" \
    -print_final_stats=1 \
    >"$dir/log" 2>&1 &
  pids+=($!)
done
echo "==> fuzzing ${targets[*]} for ${FUZZ_SECONDS} s each, side by side"

failed=()
for i in "${!targets[@]}"; do
  target="${targets[$i]}"
  dir="$scratch/$target"
  status=0
  wait "${pids[$i]}" || status=$?
  if [[ $status -eq 0 ]]; then
    # The closing lines: executions, speed, coverage.
    grep -E '^(#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$dir/log" || true
    echo "<== $target ok"
  else
    # The report: the panic or sanitizer message and its first frames (the
    # abort that follows a panic only adds libFuzzer's own frames).
    grep -m1 -A24 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$dir/log" ||
      tail -n 40 "$dir/log"
    grep -E '^SUMMARY|Test unit written' "$dir/log" || true
    echo "<== $target FAILED (exit $status)"
    for artifact in "$dir"/crash-* "$dir"/timeout-* "$dir"/oom-* "$dir"/leak-*; do
      [[ -e "$artifact" ]] || continue
      echo "    input: $artifact"
      echo "    reproduce: cargo +nightly fuzz run $target $artifact"
    done
    echo "    full log: $dir/log"
    failed+=("$target")
  fi
done

echo "fuzzing took $((SECONDS - started)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz targets that failed: ${failed[*]} (inputs and logs kept in $scratch)" >&2
  exit 1
fi
rm -rf "$scratch"
echo "fuzz: ${#targets[@]} targets, no failure"
