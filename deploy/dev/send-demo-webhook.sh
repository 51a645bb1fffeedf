#!/usr/bin/env bash
# `make demo`: with `make run` going, posts signed webhooks from three providers to the demo
# sources, repeats one (a duplicate), sends one with a bad signature, then shows the events the
# worker stored, the GitHub `ping` that the demo routes send to an unreachable destination
# arriving in the DLQ, and its replay.
set -euo pipefail
. "$(dirname "$0")/env.sh"
addr="$HOOKLINE_INGRESS_ADDR"
uuid() { cat /proc/sys/kernel/random/uuid; }
hmac_hex() { openssl dgst -sha256 -hmac "$1" -hex | sed 's/^.*= //'; }
post() { # path, body, headers...
  local path="$1" body="$2"; shift 2
  local args=(); for h in "$@"; do args+=(-H "$h"); done
  curl -sS -X POST "http://$addr$path" -H 'Content-Type: application/json' "${args[@]}" \
    --data-binary "$body" -w '  (HTTP %{http_code})\n'
}

echo "== GitHub (X-Hub-Signature-256)"
delivery="$(uuid)"
body='{"action":"opened","issue":{"id":1347,"title":"Found a bug"},"repository":{"full_name":"octo/hello"}}'
sig="sha256=$(printf '%s' "$body" | hmac_hex demo-secret)"
for attempt in first repeat; do
  printf '  issues.opened, %s delivery -> ' "$attempt"
  post /webhooks/demo-github "$body" "X-GitHub-Event: issues" "X-GitHub-Hook-ID: 1" "X-GitHub-Delivery: $delivery" "X-Hub-Signature-256: $sig"
done
printf '  bad signature -> '
post /webhooks/demo-github "$body" "X-GitHub-Event: issues" "X-GitHub-Delivery: $(uuid)" "X-Hub-Signature-256: sha256=00"
ping_body='{"zen":"Keep it logically awesome.","hook_id":1}'
printf '  ping (routed to an unreachable destination) -> '
post /webhooks/demo-github "$ping_body" "X-GitHub-Event: ping" "X-GitHub-Hook-ID: 1" "X-GitHub-Delivery: $(uuid)" \
  "X-Hub-Signature-256: sha256=$(printf '%s' "$ping_body" | hmac_hex demo-secret)"

echo "== Stripe (Stripe-Signature t=…,v1=…)"
ts="$(date +%s)"
body="{\"id\":\"evt_$(uuid | tr -d -)\",\"type\":\"customer.created\",\"data\":{\"object\":{\"id\":\"cus_123\"}}}"
printf '  customer.created -> '
post /webhooks/demo-stripe "$body" "Stripe-Signature: t=$ts,v1=$(printf '%s.%s' "$ts" "$body" | hmac_hex whsec_demo_stripe_secret)"

echo "== Standard Webhooks (webhook-id / webhook-timestamp / webhook-signature)"
id="msg_$(uuid | tr -d -)"
body='{"type":"contact.created","data":{"id":"c_42","email":"ada@example.com"}}'
key_hex="$(printf '%s' 'ZGVtby1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ=' | base64 -d | od -An -tx1 | tr -d ' \n')"
sig="$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64)"
printf '  contact.created -> '
post /webhooks/demo-sw "$body" "webhook-id: $id" "webhook-timestamp: $ts" "webhook-signature: v1,$sig"

db="${HOOKLINE_DATABASE_URL##*/}"
echo "== events stored by the worker"
for _ in $(seq 1 50); do
  n="$(psql -h 127.0.0.1 -U postgres -w -tAc "select count(*) from events where received_at > now() - interval '1 minute'" "$db")"
  [ "$n" -ge 4 ] && break; sleep 0.2
done
psql -h 127.0.0.1 -U postgres -w -c "select provider, module, event_type, entity_id, received_at from events order by received_at desc limit 5" "$db"

echo "== waiting for the ping to exhaust its 2 attempts and reach the DLQ"
for _ in $(seq 1 100); do
  "$bin/hookline-worker" dlq list --module ping --since 5m | grep -q retries_exhausted && break; sleep 0.2
done
"$bin/hookline-worker" dlq list --module ping --since 5m
echo "== replaying it (it will fail again: the destination still does not exist)"
"$bin/hookline-worker" dlq replay --module ping --since 5m
