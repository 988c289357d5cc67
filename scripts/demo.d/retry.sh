#!/usr/bin/env bash
# Prints the retry demo: on /retry/ the filter (router mode) lets Envoy's router retry idempotent
# requests; /retry/down/ goes to a port nothing listens on, so each GET is tried 3 times
# (x-wasmgate-retry-attempts: 3), a POST without Idempotency-Key only once, and after 3 failed
# requests the circuit opens: 503 circuit_open with Retry-After, without touching the upstream.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
cat <<TXT

  # retry on /retry/: a healthy upstream answers at once (no x-wasmgate-retry-attempts header)
  curl -si $LISTENER/retry/hello
  # a dead upstream: 503 after 3 attempts (x-wasmgate-retry-attempts: 3); POST without a key: 1 attempt
  curl -si $LISTENER/retry/down/orders
  curl -si -X POST $LISTENER/retry/down/orders -d '{}'
  curl -si -X POST $LISTENER/retry/down/orders -H 'idempotency-key: order-42' -d '{}'
  # after 3 failed requests the circuit is open for 10 s: 503 circuit_open with Retry-After
  curl -si $LISTENER/retry/down/orders
  # retries and circuit state in the metrics
  curl -s http://127.0.0.1:9901/stats/prometheus | grep wasmgate_retry
TXT
