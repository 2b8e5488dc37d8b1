# Helpers shared by scripts/bench-compare.sh, bench-durable.sh and bench-tls.sh:
# installing peers from Debian packages, free ports, waiting for a server,
# versions. Source it; it defines functions only (and `say` if missing).

declare -F say >/dev/null || say() { echo "bench: $*" >&2; }

# stop_servers: kill the servers the script started (their PIDs in `pids`),
# wait for them, and remove its scratch directory `$work`. The scripts set
# `trap stop_servers EXIT` once `pids` and `work` exist.
stop_servers() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}

# install_debs PACKAGE...: apt-get install the ones given (sudo -n when not
# root); a failure is reported, not fatal: the caller skips what is missing.
install_debs() {
  (($#)) || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else sudo=(false); fi
  fi
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  # `apt-get update` once, and only when the package lists do not know the
  # packages yet.
  if ! apt-cache show "$@" >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -qq || say "apt-get update failed"
  fi
  "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null ||
    say "apt-get install failed; the peers that are still missing are skipped"
}

# A port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# wait_port PID PORT: wait until PID listens on PORT (up to 10 s); fail if
# it exits.
wait_port() {
  local pid="$1" port="$2"
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# wait_blipmq_ready PID OUTFILE: wait (up to 10 s) for the broker's
# `blipmq ready clients=ADDR metrics=ADDR` line; prints "ADDR METRICS".
wait_blipmq_ready() {
  local pid="$1" out="$2" line
  for _ in $(seq 200); do
    line="$(sed -n 's/^blipmq ready clients=\([^ ]*\) metrics=\([^ ]*\).*/\1 \2/p' "$out")"
    if [[ -n "$line" ]]; then
      echo "$line"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }

# The version of crate NAME in Cargo.lock.
lock_version() {
  awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}
