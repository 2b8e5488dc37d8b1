# Servers for the SDK benchmarks (scripts/bench-python.sh, bench-node.sh):
# a release `blipmq` and `nats-server`, each on a free port on 127.0.0.1,
# stopped by PID when the calling script exits. Sourced, not run; the
# caller defines `say`. Builds on the generic helpers of bench-servers.sh.

# shellcheck source=bench-servers.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-servers.sh"

#
# After start_blipmq: $blipmq_addr, $blipmq_version. After start_nats:
# $nats_addr, $nats_version. Both start in $bench_work, a scratch directory
# made by the first of them (after the builds) and removed on exit.

bench_work=""
bench_pids=()
bench_cleanup() {
  local pid
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${bench_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$bench_work" ]]; then rm -rf "$bench_work"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# nats-server from Debian's packages, when it is missing.
ensure_nats_server() {
  command -v nats-server >/dev/null 2>&1 || install_debs nats-server
}

# BlipMQ binds a free port itself and prints `blipmq ready clients=ADDR ...`.
# The `block` overflow policy makes its figures lossless.
start_blipmq() {
  local binary="$1"
  [[ -n "$bench_work" ]] || bench_work="$(mktemp -d)"
  BLIPMQ_SERVER_BIND_ADDR=127.0.0.1:0 BLIPMQ_METRICS_ENABLED=false \
    BLIPMQ_QUEUES_OVERFLOW_POLICY=block RUST_LOG=warn \
    "$binary" >"$bench_work/blipmq.out" 2>"$bench_work/blipmq.err" &
  bench_pids+=($!)
  blipmq_addr=""
  for _ in $(seq 200); do
    # The file may not exist yet: the broker's shell opens it after the fork.
    blipmq_addr="$(sed -n 's/^blipmq ready clients=\([^ ]*\).*/\1/p' "$bench_work/blipmq.out" 2>/dev/null || true)"
    [[ -n "$blipmq_addr" ]] && break
    kill -0 "${bench_pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  if [[ -z "$blipmq_addr" ]]; then
    say "the BlipMQ broker did not start:"
    cat "$bench_work/blipmq.err" >&2
    exit 1
  fi
  local commit dirty
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  dirty="$(git status --porcelain -- broker schema client-rs bindings 2>/dev/null | head -1)"
  blipmq_version="BlipMQ: $("$binary" --version) (release build of this tree, commit $commit${dirty:+ + local changes}), overflow_policy=block"
}

start_nats() {
  local port
  [[ -n "$bench_work" ]] || bench_work="$(mktemp -d)"
  port="$(free_port)"
  nats-server -a 127.0.0.1 -p "$port" >"$bench_work/nats.log" 2>&1 &
  bench_pids+=($!)
  for _ in $(seq 200); do
    kill -0 "${bench_pids[-1]}" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      nats_addr="127.0.0.1:$port"
      nats_version="NATS: $(nats-server --version) (Debian $(dpkg-query -W -f='${Version}' nats-server 2>/dev/null || echo '?')), defaults"
      return 0
    fi
    sleep 0.05
  done
  say "nats-server did not start: $(tail -1 "$bench_work/nats.log")"
  exit 1
}
