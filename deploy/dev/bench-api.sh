#!/usr/bin/env bash
# The management API's event search on a realistic table (`make bench`, phase 7; alone:
# `make bench-api`): BENCH_API_EVENTS events (default 1,000,000) over 30 days for 20 tenants
# (one holds 40 %, the next 15 %), three providers each with their own event types (skewed: a few
# are common, most are rare), entities seen ~20 times each, and what the worker would have
# recorded beside them: a `store` attempt for every event, an `http` attempt for half of them
# (5 % of those answered 503 first: delivered on the second attempt, or still in the retry
# ladder when received within the last hour; 0.5 % answered 410 and were dead-lettered). Then
# the release API
# answers every query class BENCH_API_ROUNDS times (default 200, after a warm-up) with one client,
# then with four, and the p50/p95/p99 per class and over all are printed and saved. Last,
# retention's cost: the oldest day removed by an API replica's first sweep.
#
# In a database of its own, removed at the end unless BENCH_API_KEEP=1, which also reuses a kept
# one of the same size (to measure the queries again without generating again). Needs only PostgreSQL (the
# API's broker connection is not used by reads).
set -euo pipefail
export HOOKLINE_PROFILE="${HOOKLINE_PROFILE:-release}"
. "$(dirname "$0")/env.sh"

events="${BENCH_API_EVENTS:-1000000}"
rounds="${BENCH_API_ROUNDS:-200}"
db=hookline_bench_api
export HOOKLINE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export HOOKLINE_API_ADDR=127.0.0.1:18081
export HOOKLINE_API_RATE_LIMIT=100000
# Retention would start deleting the 30 days of generated history.
export HOOKLINE_RETENTION_EVENTS=0s HOOKLINE_RETENTION_ATTEMPTS=0s HOOKLINE_RETENTION_DEAD_LETTERS=0s
export RUST_LOG=warn
results="${BENCH_RESULTS:-$root/.hookline/bench-api-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
queries="$root/.hookline/bench-api-queries.txt"
pids=()

psql_() { psql -h 127.0.0.1 -U postgres -w -qtAc "$1" "${2:-$db}"; }
keep="${BENCH_API_KEEP:-0}"
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$keep" = 1 ] || psql_ "drop database if exists $db with (force)" postgres || true
}
trap cleanup EXIT

if [ "$keep" = 1 ] && [ "$(psql_ "select count(*) from events" 2>/dev/null || echo 0)" = "$events" ]; then
  echo "reusing the kept database $db ($events events)"
  "$bin/hookline-worker" migrate >/dev/null
else
psql_ "drop database if exists $db with (force)" postgres
psql_ "create database $db" postgres
"$bin/hookline-worker" migrate >/dev/null

echo "generating $events events, their attempts and dead letters"
started=$(date +%s)
psql_ "
CREATE TEMP TABLE gen AS
SELECT n, r1, r2, r3, r4, r5,
  CASE WHEN r1 < 0.40 THEN 't00' WHEN r1 < 0.55 THEN 't01'
       ELSE 't' || lpad((2 + floor((r1 - 0.55) / 0.45 * 18))::int::text, 2, '0') END AS tenant,
  (ARRAY['github', 'stripe', 'shopify'])[1 + floor(r2 * 3)::int] AS provider
FROM (SELECT n, random() r1, random() r2, random() r3, random() r4, random() r5
      FROM generate_series(1, $events) n) s;
INSERT INTO events (id, source_id, tenant, provider, module, event_type, entity_id, dedup_key,
                    payload, received_at, processed_at)
SELECT gen_random_uuid(), tenant || '-' || provider, tenant, provider,
       CASE WHEN provider = 'stripe' THEN regexp_replace(et, '\.[^.]*$', '') ELSE split_part(et, '.', 1) END,
       et, 'e' || floor(r4 * ($events / 20))::int, 'k' || n,
       jsonb_build_object('n', n, 'amount', n % 997, 'note', repeat('x', 200)),
       ts, ts + interval '30 milliseconds'
FROM (SELECT g.*, now() - r5 * interval '30 days' AS ts,
        CASE provider
          WHEN 'github' THEN (ARRAY['push', 'pull_request.opened', 'pull_request.closed',
            'issues.opened', 'issues.closed', 'issue_comment.created', 'release.published',
            'ping'])[1 + floor(power(r3, 2) * 8)::int]
          WHEN 'stripe' THEN (ARRAY['invoice.paid', 'charge.succeeded', 'invoice.created',
            'customer.updated', 'customer.created', 'invoice.payment_failed', 'charge.refunded',
            'customer.subscription.deleted'])[1 + floor(power(r3, 2) * 8)::int]
          ELSE (ARRAY['orders.create', 'orders.paid', 'orders.fulfilled', 'products.update',
            'customers.create', 'refunds.create'])[1 + floor(power(r3, 2) * 6)::int]
        END AS et
      FROM gen g) x;
INSERT INTO attempts (event_id, tenant, source_id, handler, destination, attempt, started_at,
                      duration_ms, outcome, worker)
SELECT id, tenant, source_id, 'store', NULL, 1, processed_at, 4, 'done', 'bench:1' FROM events;
CREATE TEMP TABLE crm AS
SELECT id, tenant, source_id, processed_at, random() AS r FROM events WHERE random() < 0.5;
INSERT INTO attempts (event_id, tenant, source_id, handler, destination, attempt, started_at,
                      duration_ms, outcome, http_status, error_class, worker)
SELECT id, tenant, source_id, 'crm', 'https://crm.example.com/hooks', 1, processed_at, 80,
       CASE WHEN r < 0.05 THEN 'retry' WHEN r < 0.055 THEN 'dead_letter' ELSE 'done' END,
       CASE WHEN r < 0.05 THEN 503 WHEN r < 0.055 THEN 410 ELSE 200 END,
       CASE WHEN r < 0.055 THEN 'status' END, 'bench:1'
FROM crm;
INSERT INTO attempts (event_id, tenant, source_id, handler, destination, attempt, started_at,
                      duration_ms, outcome, http_status, worker)
SELECT id, tenant, source_id, 'crm', 'https://crm.example.com/hooks', 2,
       processed_at + interval '5 seconds', 70, 'done', 200, 'bench:1'
FROM crm WHERE r < 0.05 AND processed_at < now() - interval '1 hour';
INSERT INTO dead_letters (event_id, source_id, tenant, provider, module, handler, reason, attempts,
                          last_error, first_failed_at, last_failed_at, body, headers, received_at)
SELECT e.id, e.source_id, e.tenant, e.provider, e.module, 'crm', 'permanent_failure', 1,
       'destination answered 410 Gone', c.processed_at, c.processed_at, '{}'::bytea, '{}'::jsonb,
       e.received_at
FROM crm c JOIN events e ON e.id = c.id WHERE c.r >= 0.05 AND c.r < 0.055;
" >/dev/null
for t in events attempts dead_letters; do psql_ "VACUUM ANALYZE $t" >/dev/null; done
echo "generated in $(( $(date +%s) - started ))s: $(psql_ "select count(*) from events") events, $(psql_ "select count(*) from attempts") attempts, $(psql_ "select count(*) from dead_letters") dead letters; events table $(psql_ "select pg_size_pretty(pg_total_relation_size('events'))")"
fi

"$bin/hookline-worker" api > "$root/.hookline/bench-api.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://$HOOKLINE_API_ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
key_of() { sed -n 's/.*"key": "\(hl_[^"]*\)".*/\1/p'; }
admin="$("$bin/hookline-worker" api-keys create --name bench --scope read | key_of)"
big="$("$bin/hookline-worker" api-keys create --name bench-t00 --scope read --tenant t00 | key_of)"
small="$("$bin/hookline-worker" api-keys create --name bench-t07 --scope read --tenant t07 | key_of)"

# Query classes: what a console or a script asks. Values vary per request (entities, windows,
# event ids) so the cache does not answer the same rows every time.
day() { psql_ "select to_char(now() - interval '$1 days', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"; }
{
  for _ in $(seq 1 5); do echo "newest /v1/events"; done
  echo "walk_5_pages walk:/v1/events?limit=50"
  for s in github stripe shopify; do echo "by_source /v1/events?source=t00-$s"; done
  for t in invoice.paid charge.refunded customer.subscription.deleted issues.opened refunds.create; do
    echo "event_type /v1/events?event_type=$t"
  done
  for t in 'invoice.*' '*.created' 'customer.*' 'orders.*'; do echo "event_type_wildcard /v1/events?event_type=$t"; done
  for e in $(psql_ "select entity_id from events where tenant = 't00' order by random() limit 50"); do
    echo "entity /v1/events?entity_id=$e"
  done
  for d in 3 9 14 21 27; do echo "time_window /v1/events?since=$(day $((d + 1)))&until=$(day "$d")"; done
  for s in dead retrying delivered stored; do echo "status /v1/events?status=$s"; done
  echo "combined /v1/events?provider=stripe&event_type=invoice.*&status=delivered&since=$(day 7)"
  for e in $(psql_ "select id from events where tenant = 't00' order by random() limit 50"); do
    echo "one_event /v1/events/$e"
  done
} > "$queries.t00"
# The same classes with the small tenant's key and, for the operator, across tenants.
sed 's/t00-/t07-/' "$queries.t00" | grep -v ' /v1/events/' > "$queries.t07"
{
  echo "all_tenants_newest /v1/events"
  echo "all_tenants_wildcard /v1/events?event_type=*.created"
  echo "all_tenants_status /v1/events?status=dead"
  echo "all_tenants_walk walk:/v1/events?tenant=t03&limit=50"
} > "$queries.all"

lg="$bin/hookline-loadgen"
run() { # label key file concurrency
  echo
  echo "== $1 (concurrency $4)"
  HOOKLINE_BENCH_API_KEY="$2" "$lg" api-search --url "http://$HOOKLINE_API_ADDR" \
    --queries "$3" --rounds "$rounds" --concurrency "$4" | tee /dev/stderr | tail -1 \
    | sed "s/^{/{\"label\":\"$1\",/" >> "$results"
}
run "tenant t00 (40% of events)" "$big" "$queries.t00" 1
run "tenant t07 (2.5% of events)" "$small" "$queries.t07" 1
run "all tenants (operator key)" "$admin" "$queries.all" 1
run "tenant t00 (40% of events)" "$big" "$queries.t00" 4

# Retention's cost: an API replica started with 29-day windows removes the oldest day (about a
# thirtieth of each table) in its first sweep, in batches of 5,000 rows. Not on a kept database,
# which must stay as generated.
if [ "$keep" != 1 ]; then
echo
echo "== retention: the oldest of 30 days"
kill -TERM "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
pids=()
before="$(psql_ "select (select count(*) from events) || ' events, ' || (select count(*) from attempts) || ' attempts'")"
HOOKLINE_RETENTION_EVENTS=29d HOOKLINE_RETENTION_ATTEMPTS=29d HOOKLINE_RETENTION_DEAD_LETTERS=29d \
  RUST_LOG=info "$bin/hookline-worker" api > "$root/.hookline/bench-api-retention.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1200); do grep -q '"retention sweep"' "$root/.hookline/bench-api-retention.log" && break; sleep 0.25; done
sweep="$(grep -m1 '"retention sweep"' "$root/.hookline/bench-api-retention.log")"
echo "before: $before; sweep: $sweep"
printf '%s\n' "$sweep" | sed 's/^{/{"label":"retention",/' >> "$results"
fi
echo
echo "figures saved in ${results#$root/}"
