#!/usr/bin/env bash
# `make soak`: the ingress at SOAK_RATE req/s (default 2000, 10% duplicates) for SOAK_FOR
# (default 10m) with a worker storing every event, in a database and vhost of their own (removed
# at the end). Prints the RSS of the ingress and the worker every SOAK_EVERY (30s) as a series,
# the CPU per accepted request, every transport error and unexpected status by kind, then waits
# for the queue to drain and checks that every accepted event was stored exactly once and that
# nothing was dead-lettered.
set -euo pipefail
export HOOKLINE_PROFILE=release
. "$(dirname "$0")/env.sh"

rate="${SOAK_RATE:-2000}"
soak_for="${SOAK_FOR:-10m}"
every="${SOAK_EVERY:-30s}"
db=hookline_soak
vhost=hookline-soak
api=http://127.0.0.1:15672/api
export HOOKLINE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export HOOKLINE_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
export HOOKLINE_INGRESS_ADDR=127.0.0.1:18280
export HOOKLINE_INGRESS_ADMIN_ADDR=127.0.0.1:18291
export HOOKLINE_WORKER_ADDR=127.0.0.1:19290
export HOOKLINE_BENCH_SECRET="bench-secret-$RANDOM$RANDOM"
export RUST_LOG=warn
results="$root/.hookline/soak-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
pids=()

psql_() { psql -h 127.0.0.1 -U postgres -w -qtAc "$1" "${2:-$db}"; }
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  curl -fsS -u guest:guest -X DELETE "$api/vhosts/$vhost" >/dev/null 2>&1 || true
  psql_ "drop database if exists $db with (force)" postgres || true
}
trap cleanup EXIT
wait_http() { for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
queue_depth() { curl -fsS -u guest:guest "$api/queues/$vhost/hookline.work" | jq '.messages // 0'; }

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

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/hookline-ingress" > "$root/.hookline/soak-ingress.log" 2>&1 &
ingress_pid=$!
pids+=("$ingress_pid")
"$bin/hookline-worker" run > "$root/.hookline/soak-worker.log" 2>&1 &
worker_pid=$!
pids+=("$worker_pid")
wait_http "http://$HOOKLINE_INGRESS_ADMIN_ADDR/readyz"
wait_http "http://$HOOKLINE_WORKER_ADDR/readyz"

echo "== soak: $rate req/s for $soak_for, RSS every $every"
"$bin/hookline-loadgen" ingress --url "http://$HOOKLINE_INGRESS_ADDR/webhooks/bench-github" \
  --rate "$rate" --duration "$soak_for" --concurrency 256 --duplicates 0.1 \
  --cpu "ingress=$ingress_pid" --cpu "worker=$worker_pid" --pg-db "$db" --rss-every "$every" \
  | tee -a "$results"
accepted="$(grep '^{' "$results" | tail -n 1 | jq '.accepted')"

echo "== draining the work queue"
for _ in $(seq 1 1200); do
  [ "$(queue_depth)" -eq 0 ] && break
  sleep 0.5
done
echo "after the drain: ingress $(grep VmRSS /proc/"$ingress_pid"/status | awk '{printf "%.1f MB", $2/1024}'), worker $(grep VmRSS /proc/"$worker_pid"/status | awk '{printf "%.1f MB", $2/1024}')"
# Every accepted event once: rows, distinct dedup keys, dead letters.
read -r rows keys < <(psql_ "select count(*), count(distinct dedup_key) from events" | tr '|' ' ')
dead="$(psql_ "select count(*) from dead_letters")"
echo "accepted $accepted; stored $rows rows for $keys distinct deliveries; dead-lettered $dead"
if [ "$rows" -ne "$accepted" ] || [ "$keys" -ne "$accepted" ] || [ "$dead" -ne 0 ]; then
  echo "soak: an accepted event was lost, stored twice or dead-lettered" >&2
  exit 1
fi
echo "soak: every accepted event stored exactly once; figures in ${results#$root/}"
