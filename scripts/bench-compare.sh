#!/usr/bin/env bash
# Side-by-side benchmark: BlipMQ beside NATS core, Redis pub/sub and
# Mosquitto (MQTT QoS 0), all on this machine, on 127.0.0.1.
#
# Installs the peers from Debian packages when they are missing, builds the
# release broker and bench/ (blipmq-bench), starts every server itself on a
# free port, runs blipmq-bench against all of them and stops each server by
# its PID on exit. Writes bench/results/latest.md (printed too), latest.json
# and latest.png. Every run inside is bounded in count and time; the whole
# measurement is also capped (BENCH_TIMEOUT seconds, default 1800).
#
# BlipMQ runs with the `block` overflow policy, so its max-rate figures are
# lossless; the peers keep their defaults.
#
# Usage: scripts/bench-compare.sh [blipmq-bench options]
#   e.g. scripts/bench-compare.sh --rounds 1 --count 50000
#   (see: target/release/blipmq-bench --help)
# Not part of scripts/test.sh: a benchmark is not a test.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
command_line="scripts/bench-compare.sh${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
say() { echo "bench-compare: $*" >&2; }
# shellcheck source=lib/bench-servers.sh
source "$REPO_ROOT/scripts/lib/bench-servers.sh"

# --- the peers, from Debian packages ---------------------------------------
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
[[ -f "$font" ]] || missing+=(fonts-dejavu-core) # for the PNG chart's text
install_debs "${missing[@]}"

# --- build --------------------------------------------------------------------
# --bins: with several -p, `--bin X` would restrict every package to X.
cargo build --release -q --bins -p blipmq-broker -p blipmq-bench

# --- start the servers --------------------------------------------------------
work="$(mktemp -d)"
pids=()
trap stop_servers EXIT
trap 'exit 130' INT TERM

args=(--out bench/results)
skip() { # SYSTEM REASON
  say "skipping $1: $2"
  args+=(--skipped "$1=$2")
}

# BlipMQ: binds a free port itself and prints `blipmq ready clients=ADDR ...`.
BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
  BLIPMQ_QUEUES_OVERFLOW_POLICY=block RUST_LOG=warn \
  target/release/blipmq >"$work/blipmq.out" 2>"$work/blipmq.err" &
pids+=($!)
blipmq_addr=""
for _ in $(seq 200); do
  blipmq_addr="$(sed -n 's/^blipmq ready clients=\([^ ]*\).*/\1/p' "$work/blipmq.out")"
  [[ -n "$blipmq_addr" ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || break
  sleep 0.05
done
if [[ -z "$blipmq_addr" ]]; then
  say "the BlipMQ broker did not start:"
  cat "$work/blipmq.err" >&2
  exit 1
fi
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain -- broker schema client-rs 2>/dev/null | head -1)"
args+=(--blipmq "$blipmq_addr" --pid "blipmq=${pids[-1]}"
  --server-version "blipmq=$(target/release/blipmq --version) (this tree, commit $commit${dirty:+ + local changes}), overflow_policy=block")

if command -v nats-server >/dev/null 2>&1; then
  port="$(free_port)"
  nats-server -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
  pids+=($!)
  if wait_port "${pids[-1]}" "$port"; then
    args+=(--nats "127.0.0.1:$port" --pid "nats=${pids[-1]}"
      --server-version "nats=$(nats-server --version) (Debian $(deb_version nats-server)), defaults")
  else
    skip nats "nats-server did not start: $(tail -1 "$work/nats.log")"
  fi
else
  skip nats "nats-server is not installed and apt-get could not install it"
fi

if command -v redis-server >/dev/null 2>&1; then
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
  pids+=($!)
  if wait_port "${pids[-1]}" "$port"; then
    v="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
    args+=(--redis "127.0.0.1:$port" --pid "redis=${pids[-1]}"
      --server-version "redis=redis-server $v (Debian $(deb_version redis-server)), --save '' --appendonly no")
  else
    skip redis "redis-server did not start: $(tail -1 "$work/redis.log")"
  fi
else
  skip redis "redis-server is not installed and apt-get could not install it"
fi

if command -v mosquitto >/dev/null 2>&1; then
  port="$(free_port)"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" \
    >"$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  if wait_port "${pids[-1]}" "$port"; then
    v="$( (mosquitto -h 2>/dev/null || true) | sed -n '1s/^mosquitto version //p')"
    args+=(--mqtt "127.0.0.1:$port" --pid "mqtt=${pids[-1]}"
      --server-version "mqtt=mosquitto $v (Debian $(deb_version mosquitto)), defaults")
  else
    skip mqtt "mosquitto did not start: $(tail -1 "$work/mosquitto.log")"
  fi
else
  skip mqtt "mosquitto is not installed and apt-get could not install it"
fi

clients="blipmq (this tree), async-nats $(lock_version async-nats), redis $(lock_version redis) (tokio), rumqttc $(lock_version rumqttc)"

# --- measure --------------------------------------------------------------------
say "servers up; measuring (${BENCH_TIMEOUT:-1800} s at most)"
started=$SECONDS
timeout "${BENCH_TIMEOUT:-1800}" target/release/blipmq-bench "${args[@]}" \
  --clients "$clients" --command "$command_line" "$@"
say "done in $((SECONDS - started)) s"

# --- the TLS cell -----------------------------------------------------------------
# BlipMQ and NATS over TLS (1→1, 1 KiB) and what TLS costs each, into
# bench/results/tls.md; BENCH_SKIP_TLS=1 leaves it out.
if [[ -z "${BENCH_SKIP_TLS:-}" ]]; then
  stop_servers
  pids=()
  trap - EXIT
  scripts/bench-tls.sh
fi
