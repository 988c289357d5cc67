#!/usr/bin/env bash
# Prints the transform demo: on /transform/ the filter removes, sets and adds headers, edits the
# query, rewrites /transform/v1/ to /transform/api/v1/ (and re-routes), edits JSON bodies in both
# directions, and refuses invalid (400) or oversized (413, over 1024 bytes) JSON bodies.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
cat <<TXT

  # transform on /transform/: the echo shows what the upstream received (x-internal removed,
  # x-user set from x-jwt-sub, x-source added, debug removed, lang=en added, path rewritten)
  curl -s '$LISTENER/transform/v1/users?debug=1&id=7' -H 'x-internal: secret' -H 'x-jwt-sub: alice'
  # JSON body edits: password removed, user_name renamed, meta.source set (response: header_list removed)
  curl -s $LISTENER/transform/v1/users -H 'content-type: application/json' -d '{"user_name": "bob", "password": "hunter2"}'
  # refused: a body that is not JSON (415 unsupported_media_type), invalid JSON (400 invalid_json) and a JSON body over 1024 bytes (413 body_too_large)
  curl -s $LISTENER/transform/v1/users -H 'content-type: text/plain' -d '{"password": "hunter2"}'
  curl -s $LISTENER/transform/v1/users -H 'content-type: application/json' -d '{"user_name": '
  curl -s $LISTENER/transform/v1/users -H 'content-type: application/json' -d "{\"d\": \"\$(printf '%02000d' 0)\"}"
TXT
