#!/usr/bin/env bash
# `make bench`: hookline's benchmarks against the real ingress, worker, broker and database on
# this machine (release build), in a database and vhost of their own that are removed at the end.
#
#   1 ingress at a fixed rate    latency at BENCH_RATE req/s (default 2000), open loop; first, on
#                                a settled broker (after the phases that fill and delete big
#                                queues, the broker's background work shows in the tail latency)
#   2 raw confirmed publish      the broker's ceiling for persistent 1 KiB publishes with confirms
#   3 ingress flat out           signed GitHub webhooks, 10% duplicates, 64 connections
#   4 mixed providers flat out   the same over 20 sources of 11 providers (round robin)
#   5 raw consume-and-ack        the broker's ceiling for what a worker does with a message
#   6 worker, 1 replica          events/s from a pre-filled queue through parse, route, store
#   7 worker, 2 replicas         the same with two replicas
#   8 management API             event search on 1,000,000 events with realistic filters, and
#                                retention's cost (deploy/dev/bench-api.sh; alone: make bench-api)
#
# Every ingress phase also reports, from /proc over the same window, the CPU time per accepted
# request of the ingress, RabbitMQ (beam.smp, less its idle rate measured just before: the broker
# is shared), the PostgreSQL backends connected to the bench database and the load generator,
# and the ingress's peak RSS. A summary of the headline figures closes the run.
#
# Durations and sizes: BENCH_RAW (10s), BENCH_FLAT (20s), BENCH_FIXED (20s), BENCH_MIXED (15s),
# BENCH_RATE (2000), BENCH_EVENTS (50000). BENCH_PHASES picks phases: a comma-separated list of
# `ingress` (1-4), `worker` (5-7) and `api` (8); default all.
set -euo pipefail
export HOOKLINE_PROFILE=release
. "$(dirname "$0")/env.sh"

raw_for="${BENCH_RAW:-10s}"
flat_for="${BENCH_FLAT:-20s}"
fixed_for="${BENCH_FIXED:-20s}"
rate="${BENCH_RATE:-2000}"
events="${BENCH_EVENTS:-50000}"
mixed_for="${BENCH_MIXED:-15s}"
phases="${BENCH_PHASES:-all}"
has() { [ "$phases" = all ] || [[ ",$phases," == *",$1,"* ]]; }

db=hookline_bench
vhost=hookline-bench
api=http://127.0.0.1:15672/api
export HOOKLINE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export HOOKLINE_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
export HOOKLINE_INGRESS_ADDR=127.0.0.1:18080
export HOOKLINE_INGRESS_ADMIN_ADDR=127.0.0.1:18091
export HOOKLINE_WORKER_ADDR=127.0.0.1:19090
export HOOKLINE_BENCH_SECRET="bench-secret-$RANDOM$RANDOM"
export RUST_LOG=warn
results="$root/.hookline/bench-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
pids=()

psql_() { psql -h 127.0.0.1 -U postgres -w -qtAc "$1" "${2:-$db}"; }
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  curl -fsS -u guest:guest -X DELETE "$api/vhosts/$vhost" >/dev/null 2>&1 || true
  psql_ "drop database if exists $db with (force)" postgres || true
}
trap cleanup EXIT
purge_work() { curl -fsS -u guest:guest -X DELETE "$api/queues/$vhost/hookline.work/contents" >/dev/null; }
wait_http() { for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
say() { printf '\n== %s\n' "$*"; }

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
# The mixed phase's twenty sources: id provider secret [option...]
"$bin/hookline-loadgen" mixed-sources | while read -r id provider secret options; do
  opts=()
  for o in $options; do opts+=(--option "$o"); done
  printf '%s' "$secret" | "$bin/hookline-worker" sources add --provider "$provider" --tenant bench \
    --id "$id" --secret-stdin "${opts[@]}" >/dev/null
done

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GiB; $(psql --version | head -1); RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?')"

"$bin/hookline-ingress" > "$root/.hookline/bench-ingress.log" 2>&1 &
pids+=($!)
wait_http "http://$HOOKLINE_INGRESS_ADMIN_ADDR/readyz"
ingress_pid=$!
url="http://$HOOKLINE_INGRESS_ADDR/webhooks/bench-github"
lg="$bin/hookline-loadgen"
# What each ingress phase measures besides latency: CPU per accepted request and peak RSS.
rabbit_pid="$(pgrep -o -x beam.smp || true)"
watch=(--cpu "ingress=$ingress_pid" --pg-db "$db")
[ -n "$rabbit_pid" ] && watch+=(--cpu "rabbitmq=$rabbit_pid" --idle-baseline 2s)

if has ingress; then
say "1 ingress at $rate req/s ($fixed_for)"
"$lg" ingress --url "$url" --rate "$rate" --duration "$fixed_for" --concurrency 256 --duplicates 0.1 "${watch[@]}" | tee -a "$results"
purge_work

say "2 raw confirmed publish (the ceiling)"
"$lg" raw-publish --amqp-url "$HOOKLINE_AMQP_URL" --duration "$raw_for" | tee -a "$results"

say "3 ingress flat out ($flat_for, 64 connections, 10% duplicates)"
"$lg" ingress --url "$url" --duration "$flat_for" --concurrency 64 --duplicates 0.1 "${watch[@]}" | tee -a "$results"
purge_work

say "4 mixed providers flat out ($mixed_for, 20 sources of 11 providers, 64 connections, 10% duplicates)"
"$lg" ingress --mixed "http://$HOOKLINE_INGRESS_ADDR/webhooks" --duration "$mixed_for" --concurrency 64 \
  --duplicates 0.1 "${watch[@]}" | tee -a "$results"
purge_work
fi

summary() {
  echo
  echo "== summary (${results#$root/})"
  grep '^{' "$results" | jq -rs '
    def r: . * 10 | round / 10;
    (map(select(.phase == "raw_publish"))[0].per_s // 0) as $ceiling
    | .[] | select(.phase == "ingress") as $p
    | ($p.cpu // {}) as $c
    | "ingress \(if $p.mixed then "mixed, " else "" end)\(if $p.rate then "at \($p.rate)/s" else "flat out" end): \($p.accepted_per_s | round) accepted/s + \($p.duplicates / $p.seconds | round) duplicates/s\(if ($p.rate | not) and $ceiling > 0 then " (\($p.accepted_per_s / $ceiling * 100 | round)% of the ceiling \($ceiling | round)/s)" else "" end), p50 \($p.p50_ms | r) ms, p99 \($p.p99_ms | r) ms, errors \($p.errors_5xx + $p.errors_other + $p.errors_transport)\n    CPU µs per accepted: ingress \($c.ingress.us_per_accepted // 0 | r), rabbitmq \($c.rabbitmq.us_per_accepted // 0 | r), postgres \($c.postgres.us_per_accepted // 0 | r) (load generator \($c.loadgen.us_per_accepted // 0 | r)); ingress peak RSS \($p.rss.ingress.peak_rss_mb_in_run // 0 | r) MB; ingress context switches per accepted \($p.context_switches.ingress.voluntary_per_accepted // 0 | . * 100 | round / 100) voluntary, \($p.context_switches.ingress.involuntary_per_accepted // 0 | . * 100 | round / 100) involuntary"
  '
  grep '^{' "$results" | jq -rs '
    (map(select(.phase == "raw_consume"))[0].per_s // 0) as $ceiling
    | .[] | select(.phase == "worker")
    | "worker x\(.replicas): \(.per_s | round) events/s stored, attempts recorded\(if $ceiling > 0 then " (\(.per_s / $ceiling * 100 | round)% of raw consume-and-ack \($ceiling | round)/s)" else "" end)"
  '
}

if has worker; then
say "5 raw consume-and-ack (the worker's ceiling)"
"$lg" raw-consume --amqp-url "$HOOKLINE_AMQP_URL" --count "$events" | tee -a "$results"

worker_phase() { # replicas
  local replicas="$1"
  purge_work
  psql_ "truncate events, processed"
  "$lg" ingress --url "$url" --duration 10m --concurrency 64 --duplicates 0 --accepted "$events" >/dev/null
  echo "queue pre-filled with $events events through the ingress; starting $replicas worker(s)"
  local wpids=()
  for i in $(seq 1 "$replicas"); do
    HOOKLINE_WORKER_ADDR="127.0.0.1:$((19090 + i))" "$bin/hookline-worker" run \
      > "$root/.hookline/bench-worker-$i.log" 2>&1 &
    wpids+=($!)
    pids+=($!)
  done
  local n=0
  for _ in $(seq 1 1200); do
    n="$(psql_ "select count(*) from events")"
    [ "$n" -ge "$events" ] && break
    sleep 0.25
  done
  for p in "${wpids[@]}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
  # Throughput from the rows themselves: first to last processed_at, so start-up is not counted.
  psql_ "select json_build_object('phase', 'worker', 'replicas', $replicas, 'events', count(*),
           'seconds', extract(epoch from max(processed_at) - min(processed_at)),
           'per_s', count(*) / greatest(extract(epoch from max(processed_at) - min(processed_at)), 0.001))
         from events" | tee -a "$results" | sed "s/^/worker x$replicas: /"
}

say "6 worker, 1 replica ($events events)"
worker_phase 1
say "7 worker, 2 replicas ($events events)"
worker_phase 2

fi

if has api; then
say "8 management API: event search on ${BENCH_API_EVENTS:-1000000} events"
BENCH_RESULTS="$results" bash "$(dirname "$0")/bench-api.sh"
fi

summary
