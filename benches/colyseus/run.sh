#!/usr/bin/env bash
# Colyseus 0.18 under the load of benches/edge.rs: the server pinned to core 0, the load
# pinned to core 1, both on the Node.js 22 this package installs (Colyseus 0.18 needs
# Node >= 22). Arguments go to load.mjs: --clients N --period-ms P --seconds S.
#   benches/colyseus/run.sh --clients 2000 --period-ms 1000 --seconds 10
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund >&2
node=node_modules/.bin/node
port=${PORT:-2567}
PORT=$port taskset -c 0 "$node" server.mjs >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
# The server prints nothing we need; wait until it accepts connections.
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.1
done
# `taskset` execs node, so $server is the server's own pid: its /proc is what is read.
if [ "$(cat /proc/$server/comm)" != node ]; then
  echo "expected the Colyseus server (node) at pid $server" >&2
  exit 1
fi
taskset -c 1 "$node" load.mjs --url "ws://127.0.0.1:$port" --server-pid "$server" "$@"
