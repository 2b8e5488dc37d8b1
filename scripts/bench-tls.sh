#!/usr/bin/env bash
# The TLS cell of the side-by-side benchmark: BlipMQ and NATS core, 1→1,
# 1 KiB, QoS 0, each over plaintext and over TLS 1.3 (both servers with a
# certificate from a throwaway PKI, both clients trusting its CA), so the
# report gives BlipMQ/NATS over TLS and what TLS costs each. Writes
# bench/results/tls.md. Every run is bounded (blipmq-bench's --cell-secs;
# the whole is capped at BENCH_TIMEOUT seconds, default 900).
#
# Usage: scripts/bench-tls.sh [--rounds N] [--count N]
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
command_line="scripts/bench-tls.sh${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"
say() { echo "bench-tls: $*" >&2; }
# shellcheck source=lib/bench-servers.sh
source "$REPO_ROOT/scripts/lib/bench-servers.sh"

rounds=3 count=200000
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    *) say "unknown argument $1"; exit 2 ;;
  esac
done

command -v nats-server >/dev/null 2>&1 || install_debs nats-server
cargo build --release -q --bins -p blipmq-broker -p blipmq-bench
cargo build -q -p blipmq-testkit

work="$(mktemp -d)"
pids=()
trap stop_servers EXIT
trap 'exit 130' INT TERM

target/debug/blipmq-test-pki "$work/pki" >/dev/null
cert="$work/pki/broker.pem" key="$work/pki/broker.key" ca="$work/pki/ca.pem"

# Each server is started here, not in a command substitution: a subshell
# would keep its PID from `pids`, and stop_servers would leave it running.

# start_blipmq VAR NAME [ENV...]: BlipMQ as bench-compare.sh runs it (block
# policy: lossless max rates), its client address into VAR.
start_blipmq() {
  local var="$1" name="$2" ready
  shift 2
  env BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
    BLIPMQ_QUEUES_OVERFLOW_POLICY=block BLIPMQ_WAL_DIR="$work/$name-wal" RUST_LOG=warn "$@" \
    target/release/blipmq >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  ready="$(wait_blipmq_ready "${pids[-1]}" "$work/$name.out")" ||
    { say "BlipMQ ($name) did not start:"; cat "$work/$name.err" >&2; exit 1; }
  printf -v "$var" '%s' "${ready%% *}"
}
start_blipmq plain_blipmq plain
start_blipmq tls_blipmq tls BLIPMQ_TLS_CERT_FILE="$cert" BLIPMQ_TLS_KEY_FILE="$key"

# start_nats VAR NAME [ARGS...]: nats-server on a free port, the port into VAR.
start_nats() {
  local var="$1" name="$2" port
  shift 2
  port="$(free_port)"
  nats-server -a 127.0.0.1 -p "$port" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_port "${pids[-1]}" "$port" ||
    { say "nats-server ($name) did not start"; cat "$work/$name.log" >&2; exit 1; }
  printf -v "$var" '%s' "$port"
}
start_nats plain_nats_port nats-plain
start_nats tls_nats_port nats-tls --tls --tlscert "$cert" --tlskey "$key"

bench() { # OUT-DIR [ARGS...]
  local out="$1"; shift
  timeout "${BENCH_TIMEOUT:-900}" target/release/blipmq-bench --workloads fanout:1:1024 \
    --rounds "$rounds" --count "$count" --out "$out" "$@" >/dev/null
}
say "measuring plaintext"
bench "$work/plain" --blipmq "$plain_blipmq" --nats "127.0.0.1:$plain_nats_port"
say "measuring TLS"
bench "$work/tls" --tls-ca "$ca" --blipmq "tls://localhost:${tls_blipmq##*:}" \
  --nats "tls://localhost:$tls_nats_port"

python3 - "$work/plain/latest.json" "$work/tls/latest.json" "$command_line" \
  "$(target/release/blipmq --version)" "$(nats-server --version)" "$(nproc)" \
  >bench/results/tls.md <<'PY'
import json, statistics, sys, datetime
plain, tls = (json.load(open(p)) for p in sys.argv[1:3])
command, blipmq, nats, cores = sys.argv[3:7]
def rate(report, system):
    for cell in report["cells"]:
        if cell["system"] == system:
            rounds = cell["rounds"]
            return statistics.median(r["msgs_per_sec"] for r in rounds), max(r["lost_pct"] for r in rounds)
    raise SystemExit(f"no {system} cell")
b_plain, b_plain_lost = rate(plain, "blipmq")
n_plain, n_plain_lost = rate(plain, "nats")
b_tls, b_tls_lost = rate(tls, "blipmq")
n_tls, n_tls_lost = rate(tls, "nats")
print("# BlipMQ and NATS core over TLS: 1→1, 1 KiB, QoS 0\n")
print(f"Generated {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by `{command}` on {cores} cores, "
      f"{plain['rounds']} rounds of {plain['count']:,} messages (medians).\n")
print(f"- Servers: {blipmq} (release build of this tree, overflow_policy=block) and {nats}; "
      "each once plaintext and once with a certificate from a throwaway CA (TLS 1.3, the "
      "clients' default), both on 127.0.0.1.")
print("- Clients: the blipmq crate and async-nats, both rustls with ring, in one process "
      "(blipmq-bench, `--workloads fanout:1:1024`), the TLS clients trusting the test CA.\n")
print("| | BlipMQ msg/s | NATS msg/s | BlipMQ/NATS |")
print("|---|---:|---:|---:|")
print(f"| plaintext | {b_plain:,.0f} | {n_plain:,.0f} | {b_plain / n_plain:.2f}× |")
print(f"| TLS | {b_tls:,.0f} | {n_tls:,.0f} | {b_tls / n_tls:.2f}× |")
print(f"| TLS / plaintext | {b_tls / b_plain:.2f} | {n_tls / n_plain:.2f} | |")
print(f"\nLost: BlipMQ {max(b_plain_lost, b_tls_lost):.2f}% at most, NATS {max(n_plain_lost, n_tls_lost):.2f}% at most.")
PY
cat bench/results/tls.md
