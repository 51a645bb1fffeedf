#!/usr/bin/env bash
# `make bench-console`: how long the operator console's pages take to load with 1 million events
# stored. Fills a database of its own (`hookline_console_bench`, dropped at the end unless
# CONSOLE_BENCH_KEEP=1) with BENCH_EVENTS events (default 1,000,000) over the last 7 days from 20
# sources of 5 tenants, one store attempt each, an http delivery for one event in five (some
# retried, one in a thousand dead-lettered), then starts `hookline-worker api` on it and loads
# each page in Debian's chromium (tests/console/load-time.mjs): as an all-tenant admin, then as
# a tenant key. A benchmark, not a test: it prints figures and fails only if something breaks.
# CONSOLE_BENCH_KEEP=1 keeps the database; CONSOLE_BENCH_REUSE=1 measures again on a kept one.
set -euo pipefail
. "$(dirname "$0")/env.sh"
events="${BENCH_EVENTS:-1000000}"
runs="${CONSOLE_BENCH_RUNS:-7}"
db=hookline_console_bench
export HOOKLINE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export HOOKLINE_API_ADDR="${CONSOLE_BENCH_ADDR:-127.0.0.1:18081}"
# The bench's events span 7 days: keep the retention sweep from touching them.
export HOOKLINE_RETENTION_EVENTS=0s HOOKLINE_RETENTION_ATTEMPTS=0s HOOKLINE_RETENTION_DEAD_LETTERS=0s HOOKLINE_RETENTION_OUTCOMES=0s
# Page loads are many small API calls from one key: not what the rate limit is for.
export HOOKLINE_API_RATE_LIMIT=10000
psql_() { psql -h 127.0.0.1 -U postgres -w -v ON_ERROR_STOP=1 -qtA "$@"; }
say() { printf '\n== %s\n' "$*"; }

bash "$root/deploy/dev/tools.sh"
if [ "${CONSOLE_BENCH_REUSE:-0}" = 1 ] \
    && psql_ -c "select 1 from pg_database where datname = '$db'" postgres | grep -q 1; then
  fill=0
  say "reusing $db: $(psql_ -c "select count(*) from events" "$db") events"
else
  fill=1
fi
if [ "$fill" = 1 ]; then
psql_ -c "drop database if exists $db" postgres
psql_ -c "create database $db" postgres
"$bin/hookline-worker" migrate >/dev/null

say "20 sources, 5 tenants"
for t in acme globex initech umbrella hooli; do
  for n in 1 2 3 4; do
    if [ $((n % 2)) -eq 1 ]; then p=github; else p=stripe; fi
    HOOKLINE_BENCH_SECRET="bench-secret-$t-$n" "$bin/hookline-worker" sources add --provider "$p" \
      --tenant "$t" --id "$t-$n" --secret-env HOOKLINE_BENCH_SECRET >/dev/null
  done
done

say "filling $events events (and their attempts and dead letters)"
start=$(date +%s)
psql_ "$db" <<SQL
-- Event g: source g % 20, received (g × 7 days / N) ago, id md5(g) so its attempts can name it.
CREATE TEMP TABLE srcs AS
  SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, tenant, provider FROM sources;
CREATE TEMP TABLE kinds (provider text, n int, module text, event_type text);
INSERT INTO kinds VALUES
  ('github', 0, 'push', 'push'), ('github', 1, 'issues', 'issues.opened'),
  ('github', 2, 'pull_request', 'pull_request.opened'), ('github', 3, 'issues', 'issues.closed'),
  ('stripe', 0, 'invoice', 'invoice.paid'), ('stripe', 1, 'customer', 'customer.created'),
  ('stripe', 2, 'invoice', 'invoice.payment_failed'), ('stripe', 3, 'charge', 'charge.succeeded');
INSERT INTO events (id, source_id, tenant, provider, module, event_type, entity_id, dedup_key,
                    payload, headers, received_at, processed_at)
SELECT md5(g::text)::uuid, s.id, s.tenant, s.provider, k.module, k.event_type,
       'ent_' || (g % 50000), 'sha256:' || md5('d' || g),
       jsonb_build_object('id', 'evt_' || g, 'type', k.event_type,
         'data', jsonb_build_object('object', jsonb_build_object('id', 'ent_' || (g % 50000),
           'amount', g % 10000, 'currency', 'eur', 'description', repeat('x', 200)))),
       jsonb_build_object('content-type', 'application/json', 'user-agent', 'bench'),
       now() - g * (interval '7 days' / $events), now() - g * (interval '7 days' / $events) + interval '30 ms'
FROM generate_series(1, $events) g
JOIN srcs s ON s.n = g % 20
JOIN kinds k ON k.provider = s.provider AND k.n = (g / 20) % 4;

-- Attempts are written as they happen, so the table is in time order on disk (which its BRIN
-- index on started_at relies on): one insert, ordered. Every event has its store attempt; one
-- event in five goes to an http destination; one in a hundred of those is retried once after a
-- 503, one in a thousand events fails three times and is dead-lettered.
INSERT INTO attempts (event_id, tenant, source_id, handler, destination, attempt, started_at,
                      duration_ms, outcome, http_status, error_class, error, worker)
SELECT * FROM (
  SELECT id AS event_id, tenant, source_id, 'store' AS handler, NULL::text AS destination,
         1 AS attempt, received_at + interval '10 ms' AS started_at, 2 AS duration_ms,
         'done' AS outcome, NULL::int AS http_status, NULL::text AS error_class,
         NULL::text AS error, 'bench:1' AS worker
  FROM events
  UNION ALL
  SELECT md5(g::text)::uuid, s.tenant, s.id, 'crm', 'https://crm.example/hooks', a,
         now() - g * (interval '7 days' / $events) + a * interval '2 s',
         40 + (g % 60), CASE WHEN g % 1000 = 0 AND a = 3 THEN 'dead_letter'
                             WHEN g % 1000 = 0 OR (g % 100 = 0 AND a = 1) THEN 'retry' ELSE 'done' END,
         CASE WHEN g % 1000 = 0 OR (g % 100 = 0 AND a = 1) THEN 503 ELSE 200 END,
         CASE WHEN g % 1000 = 0 OR (g % 100 = 0 AND a = 1) THEN 'status' END,
         CASE WHEN g % 1000 = 0 OR (g % 100 = 0 AND a = 1) THEN 'status: destination answered 503' END,
         'bench:1'
  FROM generate_series(5, $events, 5) g
  JOIN srcs s ON s.n = g % 20
  CROSS JOIN LATERAL generate_series(1, CASE WHEN g % 1000 = 0 THEN 3 WHEN g % 100 = 0 THEN 2 ELSE 1 END) a
) t
ORDER BY started_at;
INSERT INTO dead_letters (event_id, source_id, tenant, provider, module, handler, reason, attempts,
                          last_error, first_failed_at, last_failed_at, body, headers, content_type,
                          received_at)
SELECT e.id, e.source_id, e.tenant, e.provider, e.module, 'crm', 'retries_exhausted', 3,
       'destination answered 503', e.received_at + interval '2 s', e.received_at + interval '6 s',
       convert_to(e.payload::text, 'UTF8'), '{}'::jsonb, 'application/json', e.received_at
FROM generate_series(1000, $events, 1000) g
JOIN events e ON e.id = md5(g::text)::uuid;
-- What the ingress answered: every source, every minute of the last 2 days (the default
-- retention), queued and duplicate, and a verification failure in one minute of ten.
INSERT INTO ingress_outcomes (source_id, minute, outcome, count, first_at, last_at)
SELECT s.id, m, o.outcome, o.n, m, m + interval '59 s'
FROM srcs s
CROSS JOIN generate_series(date_trunc('minute', now()) - interval '2 days', date_trunc('minute', now()), interval '1 minute') m
CROSS JOIN LATERAL (VALUES ('queued', 7), ('duplicate', 1), ('invalid_signature', 1)) o(outcome, n)
WHERE o.outcome <> 'invalid_signature' OR extract(minute FROM m)::int % 10 = 0;
SQL
# What autovacuum does on a live system: statistics, and the BRIN ranges of attempts summarized
# (a range not summarized yet is read whole by any query on started_at).
psql_ "$db" -c "VACUUM ANALYZE"
echo "filled in $(( $(date +%s) - start )) s: $(psql_ -c "select count(*) from events" "$db") events, $(psql_ -c "select count(*) from attempts" "$db") attempts, $(psql_ -c "select count(*) from ingress_outcomes" "$db") outcome rows, $(psql_ -c "select count(*) from dead_letters" "$db") dead letters, database $(psql_ -c "select pg_size_pretty(pg_database_size('$db'))" "$db")"
fi
"$bin/hookline-worker" migrate >/dev/null

node=node
[ -x "$root/.hookline/node/node_modules/.bin/node" ] && node="$root/.hookline/node/node_modules/.bin/node"
key_of() { sed -n 's/.*"key": "\(hl_[^"]*\)".*/\1/p'; }
admin="$("$bin/hookline-worker" api-keys create --name bench-admin --scope admin | key_of)"
tenant="$("$bin/hookline-worker" api-keys create --name bench-tenant --scope read --tenant acme | key_of)"

"$bin/hookline-worker" api > "$root/.hookline/console-bench-api.log" 2>&1 &
api=$!
cleanup() {
  kill -TERM "$api" 2>/dev/null || true
  wait "$api" 2>/dev/null || true
  if [ "${CONSOLE_BENCH_KEEP:-0}" != 1 ]; then psql_ -c "drop database if exists $db" postgres; fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://$HOOKLINE_API_ADDR/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done

say "page loads, all-tenant admin key ($runs loads each; ms from navigation to the page's data on screen)"
echo "machine: $(nproc) vCPU, load average $(cut -d' ' -f1-3 /proc/loadavg), binaries: $profile"
"$node" "$root/tests/console/load-time.mjs" "http://$HOOKLINE_API_ADDR" "$admin" "$runs" acme-1
say "page loads, tenant key (acme, read)"
"$node" "$root/tests/console/load-time.mjs" "http://$HOOKLINE_API_ADDR" "$tenant" "$runs" acme-1
