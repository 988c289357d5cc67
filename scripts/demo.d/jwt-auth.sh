#!/usr/bin/env bash
# Prints the jwt-auth demo: /jwt/ requires an HS256 token from the demo issuer (demo secret
# "wasmgate-demo-secret-not-for-production", the oct key in envoy/demo.yaml); /jwt/admin also
# requires the scope "admin". Tokens are signed here with openssl, valid for one hour.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
SECRET=wasmgate-demo-secret-not-for-production
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwt() { # $1 = claims JSON
  local head body sig
  head=$(printf '%s' '{"alg":"HS256","typ":"JWT","kid":"demo"}' | b64url)
  body=$(printf '%s' "$1" | b64url)
  sig=$(printf '%s' "$head.$body" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)
  printf '%s.%s.%s' "$head" "$body" "$sig"
}
now=$(date +%s)
USER_TOKEN=$(jwt "{\"iss\":\"https://demo.wasmgate.dev\",\"aud\":\"demo\",\"sub\":\"alice\",\"scope\":\"read\",\"exp\":$((now + 3600))}")
ADMIN_TOKEN=$(jwt "{\"iss\":\"https://demo.wasmgate.dev\",\"aud\":\"demo\",\"sub\":\"root\",\"scope\":\"read admin\",\"exp\":$((now + 3600))}")
EXPIRED_TOKEN=$(jwt "{\"iss\":\"https://demo.wasmgate.dev\",\"aud\":\"demo\",\"sub\":\"alice\",\"exp\":$((now - 3600))}")
cat <<TXT

  # jwt-auth: /jwt/ needs a Bearer token from the demo issuer (HS256, tokens valid for 1 h)
  # no token: 401 missing_token with WWW-Authenticate: Bearer realm="127.0.0.1"
  curl -s -i $LISTENER/jwt/hello
  # valid token: 200; the upstream sees x-jwt-sub: alice and no Authorization header
  curl -s $LISTENER/jwt/hello -H 'Authorization: Bearer $USER_TOKEN'
  # the same token in the access_token query parameter also works (and is removed)
  curl -s '$LISTENER/jwt/hello?access_token=$USER_TOKEN'
  # expired token: 401 token_expired, error="invalid_token"
  curl -s -i $LISTENER/jwt/hello -H 'Authorization: Bearer $EXPIRED_TOKEN'
  # /jwt/admin also needs scope "admin": 403 insufficient_scope for alice, 200 for root
  curl -s -i $LISTENER/jwt/admin -H 'Authorization: Bearer $USER_TOKEN'
  curl -s $LISTENER/jwt/admin -H 'Authorization: Bearer $ADMIN_TOKEN'
TXT
