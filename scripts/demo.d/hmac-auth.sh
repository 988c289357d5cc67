#!/usr/bin/env bash
# Prints the hmac-auth demo: on /hmac/ every request needs a GitHub webhook signature
# (X-Hub-Signature-256 with the demo secret "wasmgate-demo-secret"); /hmac/stripe/ needs a Stripe
# signature (secret "whsec_wasmgate_demo_secret"). Signatures are computed now, so the Stripe
# command is valid for 5 minutes; each signed command passes once and is a replay (409) after.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
# Signatures come from the wasmgate CLI (`make run` builds it): hmac-auth's own signing code.
WASMGATE=${WASMGATE:-target/release/wasmgate}
now=$(date +%s)
delivery="demo-$now"
body='{"action": "opened", "number": 1}'
github_headers=$("$WASMGATE" sign github --secret wasmgate-demo-secret --data "$body" -H "X-GitHub-Delivery: $delivery")
stripe_body='{"id": "evt_demo", "type": "invoice.paid"}'
stripe_curl=$("$WASMGATE" sign stripe --secret whsec_wasmgate_demo_secret --timestamp "$now" --data "$stripe_body" --url "$LISTENER/hmac/stripe/events" --format curl)
cat <<TXT

  # hmac-auth on /hmac/: a signed GitHub delivery passes (run it twice: the second is 409 replayed)
  curl -s $LISTENER/hmac/github $github_headers -d '$body'
  # refused: body changed after signing (401 invalid_signature), no signature (401 missing_signature)
  curl -s $LISTENER/hmac/github $github_headers -d '{"action": "closed", "number": 1}'
  curl -s $LISTENER/hmac/github -d '$body'
  # a Stripe event on /hmac/stripe/ (signed over "<t>.<body>", valid for 5 minutes)
  $stripe_curl
  # sign your own (every scheme: $WASMGATE sign --help):
  #   $WASMGATE sign github --secret wasmgate-demo-secret --body FILE --url $LISTENER/hmac/github --format curl
TXT
