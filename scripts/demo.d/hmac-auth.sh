#!/usr/bin/env bash
# Prints the hmac-auth demo: on /hmac/ every request needs a GitHub webhook signature
# (X-Hub-Signature-256 with the demo secret "wasmgate-demo-secret"); /hmac/stripe/ needs a Stripe
# signature (secret "whsec_wasmgate_demo_secret"). Signatures are computed now, so the Stripe
# command is valid for 5 minutes; each signed command passes once and is a replay (409) after.
LISTENER=${LISTENER:-http://127.0.0.1:10000}
hmac_hex() { # key message
  python3 -c 'import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())' "$1" "$2"
}
now=$(date +%s)
delivery="demo-$now"
body='{"action": "opened", "number": 1}'
github_sig=$(hmac_hex wasmgate-demo-secret "$body")
stripe_body='{"id": "evt_demo", "type": "invoice.paid"}'
stripe_sig=$(hmac_hex whsec_wasmgate_demo_secret "$now.$stripe_body")
cat <<TXT

  # hmac-auth on /hmac/: a signed GitHub delivery passes (run it twice: the second is 409 replayed)
  curl -s $LISTENER/hmac/github -H 'X-GitHub-Delivery: $delivery' -H 'X-Hub-Signature-256: sha256=$github_sig' -d '$body'
  # refused: body changed after signing (401 invalid_signature), no signature (401 missing_signature)
  curl -s $LISTENER/hmac/github -H 'X-GitHub-Delivery: $delivery-x' -H 'X-Hub-Signature-256: sha256=$github_sig' -d '{"action": "closed", "number": 1}'
  curl -s $LISTENER/hmac/github -d '$body'
  # a Stripe event on /hmac/stripe/ (signed over "<t>.<body>", valid for 5 minutes)
  curl -s $LISTENER/hmac/stripe/events -H 'Stripe-Signature: t=$now,v1=$stripe_sig' -d '$stripe_body'
  # sign your own: printf '%s' "\$BODY" | openssl dgst -sha256 -hmac wasmgate-demo-secret
TXT
