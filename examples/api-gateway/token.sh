#!/usr/bin/env bash
# Mints a demo access token for the api-gateway example: RS256, signed with demo-signing-key.pem
# (a DEMO key committed to the repository: never trust it anywhere), issuer
# https://auth.example.com, audience api.example.com, key id demo-2026.
#   usage: token.sh [subject] [lifetime in seconds, default 3600; negative for an expired token]
# In production your identity provider issues the tokens; Envoy only needs its public keys.
set -euo pipefail
SUB=${1:-alice}
TTL=${2:-3600}
KEY="$(dirname "$0")/demo-signing-key.pem"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
head=$(printf '%s' '{"alg":"RS256","typ":"JWT","kid":"demo-2026"}' | b64url)
body=$(printf '{"iss":"https://auth.example.com","aud":"api.example.com","sub":"%s","scope":"orders:read orders:write","iat":%d,"exp":%d}' \
  "$SUB" "$now" "$((now + TTL))" | b64url)
sig=$(printf '%s' "$head.$body" | openssl dgst -sha256 -sign "$KEY" -binary | b64url)
printf '%s.%s.%s\n' "$head" "$body" "$sig"
