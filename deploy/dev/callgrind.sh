#!/usr/bin/env bash
# `make profile`: user-space instructions per request of the release ingress, counted by
# valgrind's callgrind. Instruction counts do not depend on what else the machine is doing, so
# two builds can be compared on a busy machine where req/s cannot (kernel time, i.e. thread
# wake-ups and syscalls, is not counted: read the CPU µs per request of `make bench` for that).
#
# Runs the ingress under callgrind against a database and vhost of its own, sends
# PROFILE_WARMUP requests (not counted), then PROFILE_REQUESTS signed GitHub requests (10%
# duplicates, PROFILE_CONCURRENCY connections) with instrumentation on, and prints instructions
# per request and the functions that cost most (inclusive). The profile is kept in
# .hookline/callgrind.out.<time> for callgrind_annotate / kcachegrind.
set -euo pipefail
export HOOKLINE_PROFILE=release
. "$(dirname "$0")/env.sh"

requests="${PROFILE_REQUESTS:-3000}"
warmup="${PROFILE_WARMUP:-300}"
concurrency="${PROFILE_CONCURRENCY:-16}"
db=hookline_profile
vhost=hookline-profile
api=http://127.0.0.1:15672/api
export HOOKLINE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export HOOKLINE_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
export HOOKLINE_INGRESS_ADDR=127.0.0.1:18180
export HOOKLINE_INGRESS_ADMIN_ADDR=127.0.0.1:18191
export HOOKLINE_BENCH_SECRET="bench-secret-$RANDOM$RANDOM"
# Under valgrind everything is ~50x slower: give publishes and claims room.
export HOOKLINE_PUBLISH_TIMEOUT=30s HOOKLINE_CLAIM_STALE_AFTER=30s
export RUST_LOG=warn
out="$root/.hookline/callgrind.out.$(date -u +%Y%m%dT%H%M%SZ)"
pid=""

psql_() { psql -h 127.0.0.1 -U postgres -w -qtAc "$1" "${2:-$db}"; }
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  curl -fsS -u guest:guest -X DELETE "$api/vhosts/$vhost" >/dev/null 2>&1 || true
  psql_ "drop database if exists $db with (force)" postgres || true
}
trap cleanup EXIT

command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
psql_ "drop database if exists $db with (force)" postgres
psql_ "create database $db" postgres
curl -fsS -u guest:guest -X DELETE "$api/vhosts/$vhost" >/dev/null 2>&1 || true
curl -fsS -u guest:guest -X PUT "$api/vhosts/$vhost" -H 'content-type: application/json' -d '{}' >/dev/null
curl -fsS -u guest:guest -X PUT "$api/permissions/$vhost/guest" -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' >/dev/null
"$bin/hookline-worker" migrate >/dev/null
"$bin/hookline-worker" topology declare >/dev/null
"$bin/hookline-worker" sources add --provider github --tenant bench --id bench-github \
  --secret-env HOOKLINE_BENCH_SECRET >/dev/null

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  "$bin/hookline-ingress" > "$root/.hookline/profile-ingress.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  curl -fsS "http://$HOOKLINE_INGRESS_ADMIN_ADDR/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
url="http://$HOOKLINE_INGRESS_ADDR/webhooks/bench-github"
lg=("$bin/hookline-loadgen" ingress --url "$url" --duration 10m --concurrency "$concurrency" --duplicates 0.1)
"${lg[@]}" --requests "$warmup" >/dev/null
callgrind_control -i on "$pid" >/dev/null
summary="$("${lg[@]}" --requests "$requests")"
echo "${summary%%$'\n'*}"
callgrind_control -i off "$pid" >/dev/null
callgrind_control -d "$pid" >/dev/null
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=""
# The dump of the counted window is the file with the highest part number.
dump="$(ls -1v "$out".* | tail -n 1)"
total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}')"
# valgrind's CPU has no SHA extensions, so SHA-256 runs in software here; natively (SHA-NI) it
# costs a fraction of this. Shown apart so that it does not drown the rest.
sha="$(callgrind_annotate "$dump" 2>/dev/null | awk '/sha2::sha256::.*compress/ {gsub(",", "", $1); s += $1} END {print s + 0}')"
echo "instructions per request: $((total / requests)), of which SHA-256 in software $((sha / requests)), the rest $(((total - sha) / requests)) ($total over $requests requests, $concurrency connections)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '1,60p' > "$dump.top"
echo "top functions (inclusive) in ${dump#$root/}.top; profile in ${dump#$root/}"
