#!/usr/bin/env bash
# BlipMQ from the shell, with blipmq-cli: publish and subscribe, then a QoS 1
# publish that the broker confirms once it is on disk, received and acked.
#
#   examples/cli/quickstart.sh 127.0.0.1:7878
#
# BLIPMQ_CLI names the blipmq-cli binary (default: the one on PATH).
set -euo pipefail
cli=("${BLIPMQ_CLI:-blipmq-cli}" --addr "${1:-127.0.0.1:7878}")

# `blipmq-cli sub ARGS... --count 1` in the background, its output readable
# on fd $from_sub; returns once it says "subscribed to" (on stderr), that is
# once the broker has the subscription.
subscribe() {
  coproc sub_process { "${cli[@]}" sub "$@" --count 1 --format json 2>&1; }
  sub_pid=$sub_process_PID
  # A copy of its output: bash closes the coprocess's own when it exits.
  exec {from_sub}<&"${sub_process[0]}"
  read -r _subscribed <&"$from_sub"
}

# Wait for the subscriber to exit (after its one message, acked at QoS 1),
# and set $message to what it printed, as "topic: payload" (the JSON format
# carries the payload in base64).
received() {
  local json topic payload
  read -r json <&"$from_sub"
  wait "$sub_pid"
  topic="$(sed -n 's/.*"topic":"\([^"]*\)".*/\1/p' <<<"$json")"
  payload="$(sed -n 's/.*"payload":"\([^"]*\)".*/\1/p' <<<"$json" | base64 -d)"
  message="$topic: $payload"
}

# QoS 0.
subscribe 'orders.*'
"${cli[@]}" pub orders.created 'order #1'
received
echo "received $message"

# QoS 1: `pub --qos 1` exits 0 once the broker has stored the message;
# `sub --qos 1` acks every message it prints.
subscribe 'jobs.>' --qos 1
"${cli[@]}" pub --qos 1 jobs.resize 'img-1'
echo "confirmed jobs.resize"
received
echo "acked $message"
