#!/usr/bin/env bash
# Prints the key-auth demo: /keys/ requires an API key of a demo client (envoy/demo.yaml keeps
# only their SHA-256 digests); POST /keys/orders needs the scope orders:write, /keys/admin only
# team-a. `wasmgate apikey` makes a key of your own with its digest and a config snippet.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
WASMGATE=${WASMGATE:-target/release/wasmgate}
TEAM_A=wg_demo_team_a_key_not_for_production
PARTNER=wg_demo_partner_key_not_for_production
cat <<TXT

  # key-auth: /keys/ needs an API key (x-api-key, Authorization: Bearer, or ?api_key=)
  # no key: 401 missing_api_key, WWW-Authenticate names where a key goes
  curl -s -i $LISTENER/keys/orders
  # a valid key: 200; the upstream sees x-client-id: team-a, x-client-scopes, and not the key
  curl -s $LISTENER/keys/orders -H 'x-api-key: $TEAM_A'
  curl -s $LISTENER/keys/orders -H 'Authorization: Bearer $PARTNER'
  # a wrong key: 401 invalid_api_key; two different keys: 400 ambiguous_credentials
  curl -s -i $LISTENER/keys/orders -H 'x-api-key: not-a-key-0123456789'
  curl -s -i '$LISTENER/keys/orders?api_key=$PARTNER' -H 'x-api-key: $TEAM_A'
  # POST /keys/orders needs orders:write: 403 insufficient_scope for partner-x, 200 for team-a
  curl -s -i -X POST $LISTENER/keys/orders -H 'x-api-key: $PARTNER'
  curl -s -X POST $LISTENER/keys/orders -H 'x-api-key: $TEAM_A'
  # /keys/admin allows team-a only: 403 client_not_allowed for partner-x
  curl -s -i $LISTENER/keys/admin -H 'x-api-key: $PARTNER'
  # make a key of your own (prints the key, its digest and a config snippet)
  $WASMGATE apikey --client my-team
TXT
