#!/usr/bin/env bash
# Starts the demo upstream and Envoy with envoy/demo.yaml, prints curl commands, stops on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

LISTENER=http://127.0.0.1:10000
mkdir -p .run
target/release/demo-upstream 127.0.0.1:18080 > .run/upstream.log 2>&1 &
upstream=$!
"$ENVOY_BIN" -c envoy/demo.yaml --use-dynamic-base-id -l info > .run/envoy.log 2>&1 &
envoy=$!
trap 'kill $envoy $upstream 2>/dev/null; wait 2>/dev/null; echo; echo "demo stopped"' EXIT
trap 'exit 0' INT TERM

for _ in $(seq 1 300); do
  if curl -fsS http://127.0.0.1:9901/ready >/dev/null 2>&1; then break; fi
  if ! kill -0 $envoy 2>/dev/null; then cat .run/envoy.log; exit 1; fi
  sleep 0.1
done
curl -fsS http://127.0.0.1:9901/ready >/dev/null || { cat .run/envoy.log; exit 1; }

cat <<TXT

wasmgate demo: Envoy on $LISTENER (admin http://127.0.0.1:9901), echo upstream on 127.0.0.1:18080
Logs: .run/envoy.log, .run/upstream.log. Metrics: curl -s http://127.0.0.1:9901/stats/prometheus | grep wasmgate_

  # no filter: the upstream echoes the request
  curl -s $LISTENER/echo/hello
TXT
for demo in scripts/demo.d/*.sh; do
  [ -e "$demo" ] && LISTENER=$LISTENER bash "$demo"
done
echo
echo "Press Ctrl-C to stop."
wait $envoy
