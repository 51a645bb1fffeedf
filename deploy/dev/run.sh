#!/usr/bin/env bash
# `make run`: migrate, declare the topology, create a demo GitHub source, start a worker, the
# management API and the ingress. Ctrl-C stops them.
set -euo pipefail
. "$(dirname "$0")/env.sh"
export HOOKLINE_WORKER_ADDR="${HOOKLINE_WORKER_ADDR:-127.0.0.1:9090}"
export HOOKLINE_API_ADDR="${HOOKLINE_API_ADDR:-127.0.0.1:8081}"
export HOOKLINE_ROUTES="${HOOKLINE_ROUTES:-$root/deploy/dev/routes.toml}"
export HOOKLINE_DEMO_DESTINATION_SECRET="whsec_ZGVtby1kZXN0aW5hdGlvbi1zZWNyZXQ="

ensure_database
"$bin/hookline-worker" migrate
"$bin/hookline-worker" topology declare
# Demo sources with well-known secrets (deploy/dev/send-demo-webhook.sh signs with them).
# A demo source this key cannot open (sealed under another HOOKLINE_SECRET_KEY: another checkout,
# or a .hookline/ removed by hand) is re-created with its well-known secret.
demo_source() { # id provider secret
  local shown
  if shown="$("$bin/hookline-worker" sources show "$1" 2>/dev/null)"; then
    if ! grep -q '"problem": "undecryptable_secret' <<<"$shown"; then
      return 0
    fi
    "$bin/hookline-worker" sources remove "$1" >/dev/null
    echo "source $1 was sealed under another HOOKLINE_SECRET_KEY: re-creating it"
  fi
  HOOKLINE_DEMO_SECRET="$3" "$bin/hookline-worker" sources add \
    --provider "$2" --tenant demo --id "$1" --secret-env HOOKLINE_DEMO_SECRET >/dev/null
  echo "created source $1 (provider $2)"
}
demo_source demo-github github "demo-secret"
demo_source demo-stripe stripe "whsec_demo_stripe_secret"
demo_source demo-sw standard-webhooks "whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ="

"$bin/hookline-worker" run > "$root/.hookline/worker.log" 2>&1 &
worker=$!
"$bin/hookline-worker" api > "$root/.hookline/api.log" 2>&1 &
api=$!
trap 'kill -TERM $worker $api 2>/dev/null; wait $worker $api 2>/dev/null' EXIT
# An admin key for the management API, kept with the development settings; made again when the
# database no longer knows it (dropped and re-created by hand).
key_id="$(cat "$root/.hookline/api-key.id" 2>/dev/null || true)"
if [ ! -s "$root/.hookline/api-key" ] || [ -z "$key_id" ] \
    || ! "$bin/hookline-worker" api-keys list --json | grep -q "\"$key_id\""; then
  created="$("$bin/hookline-worker" api-keys create --name dev --scope admin)"
  printf '%s\n' "$created" | sed -n 's/.*"key": "\(hl_[^"]*\)".*/\1/p' > "$root/.hookline/api-key"
  printf '%s\n' "$created" | sed -n 's/.*"id": "\(key_[^"]*\)".*/\1/p' > "$root/.hookline/api-key.id"
fi

cat <<MSG

hookline-ingress is starting on http://$HOOKLINE_INGRESS_ADDR, a worker on http://$HOOKLINE_WORKER_ADDR
  (worker log: .hookline/worker.log, routes: ${HOOKLINE_ROUTES#$root/})
  send signed test webhooks:    make demo        (in another terminal)
  health / metrics:             curl http://$HOOKLINE_INGRESS_ADMIN_ADDR/readyz ; curl http://$HOOKLINE_INGRESS_ADMIN_ADDR/metrics ; curl http://$HOOKLINE_WORKER_ADDR/metrics
  management API:               curl -H "Authorization: Bearer \$(cat .hookline/api-key)" http://$HOOKLINE_API_ADDR/v1/events
                                (log: .hookline/api.log; OpenAPI: http://$HOOKLINE_API_ADDR/v1/openapi.json)
  operator console:             http://$HOOKLINE_API_ADDR/  (sign in with the key in .hookline/api-key)
  operator CLI:                 set -a; . .hookline/dev.env; set +a; ${bin#$root/}/hookline-worker dlq list
Stop with Ctrl-C.

MSG
"$bin/hookline-ingress"
