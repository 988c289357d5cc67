#!/usr/bin/env bash
# Prints the jwt-auth demo: /jwt/ requires an HS256 token from the demo issuer (demo secret
# "wasmgate-demo-secret-not-for-production", the oct key in envoy/demo.yaml); /jwt/admin also
# requires the scope "admin". Tokens are minted here by the wasmgate CLI (`make run` builds it,
# jwt-auth's own signing code), valid for one hour.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
WASMGATE=${WASMGATE:-target/release/wasmgate}
SECRET=wasmgate-demo-secret-not-for-production
jwt() { # extra arguments: claims and --exp
  "$WASMGATE" token --secret "$SECRET" --kid demo --iss https://demo.wasmgate.dev --aud demo "$@"
}
USER_TOKEN=$(jwt --claim sub=alice --claim scope=read)
ADMIN_TOKEN=$(jwt --claim sub=root --claim "scope=read admin")
EXPIRED_TOKEN=$(jwt --claim sub=alice --exp -1h)
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
  # mint your own: $WASMGATE token --secret $SECRET --kid demo --iss https://demo.wasmgate.dev --aud demo --claim sub=you
TXT
