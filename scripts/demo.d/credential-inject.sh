#!/usr/bin/env bash
# Prints the credential-inject demo: /inject/ adds the third-party API key the service does not
# hold (a static header credential; OAuth2 client-credentials tokens need a token endpoint: see
# envoy/credential-inject.yaml, which runs with the test OAuth2 server).
LISTENER=${LISTENER:-http://127.0.0.1:10000}
cat <<TXT

  # credential-inject: /inject/ adds x-api-key for the "third-party API" (the echo shows it)
  curl -s $LISTENER/inject/v1/contacts
  # a request that already carries its own key keeps it ("overwrite" is false)
  curl -s $LISTENER/inject/v1/contacts -H 'x-api-key: my-own-key'
TXT
