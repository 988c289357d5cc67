#!/usr/bin/env bash
# Prints the rate-limit demo: /ratelimit/ allows 3 requests per minute per client IP (fixed
# window, exact across Envoy workers); the 4th gets 429 with Retry-After and RateLimit headers.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
cat <<TXT

  # rate-limit: 3 requests per minute per client on /ratelimit/ (the 4th is 429 rate_limited;
  # every response carries RateLimit-Policy and RateLimit, the 429 also Retry-After)
  for i in 1 2 3 4; do curl -s -o /dev/null -D - $LISTENER/ratelimit/hello | grep -iE '^(HTTP|ratelimit|retry-after)'; done
  # the body of the refusal
  curl -s $LISTENER/ratelimit/hello
TXT
