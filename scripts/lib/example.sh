# check_example: run one of examples/ against a fresh broker and compare what
# it prints with examples/expected-output.txt, which every language's
# quickstart prints alike (so the examples show the same thing, and a test
# notices when one of them stops doing it).
#
#   source scripts/lib/example.sh
#   check_example LABEL BROKER_BIN COMMAND...
#
# The broker listens on 127.0.0.1:0 with a write-ahead log in a scratch
# directory (the examples publish at QoS 1) and is stopped before this
# returns; `{addr}` in any argument of COMMAND becomes its client address.
# The example must exit 0 by itself within EXAMPLE_TIMEOUT seconds (60).

check_example() (
  # A subshell: its EXIT trap stops the broker whatever happens, without
  # touching the calling script's own traps.
  local label="$1" broker_bin="$2"
  shift 2
  local root scratch broker_pid addr status=0
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  scratch="$(mktemp -d)"
  broker_pid=""
  trap '[[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$scratch"' EXIT

  BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_BIND_ADDR=127.0.0.1:0 \
    BLIPMQ_WAL_DIR="$scratch/wal" RUST_LOG=warn \
    "$broker_bin" >"$scratch/broker.out" 2>"$scratch/broker.err" &
  broker_pid=$!
  for _ in $(seq 100); do
    grep -q '^blipmq ready' "$scratch/broker.out" && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  addr="$(sed -n 's/^blipmq ready clients=\([^ ]*\) .*/\1/p' "$scratch/broker.out")"
  if [[ -z "$addr" ]]; then
    echo "example $label: the broker did not get ready" >&2
    cat "$scratch/broker.err" >&2
    exit 1
  fi

  local command=()
  for arg in "$@"; do
    command+=("${arg//\{addr\}/$addr}")
  done
  timeout "${EXAMPLE_TIMEOUT:-60}" "${command[@]}" >"$scratch/stdout" 2>"$scratch/stderr" || status=$?
  # Debian's Maven 3.8 writes colour resets around a program's output even
  # in batch mode; no example prints escape codes of its own.
  sed 's/\x1b\[[0-9;]*m//g' "$scratch/stdout" >"$scratch/printed"
  if ((status != 0)) || ! diff -u --label expected --label "$label" "$root/examples/expected-output.txt" "$scratch/printed" >&2; then
    echo "example $label: FAILED (exit $status); its stdout and stderr:" >&2
    cat "$scratch/stdout" "$scratch/stderr" >&2
    exit 1
  fi
  echo "example $label: ok"
)
