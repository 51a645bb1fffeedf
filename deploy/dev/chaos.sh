#!/usr/bin/env bash
# `make chaos`: the crash/fault suite at full load (issue 10; tests/src/chaos). Every fault one
# after another under signed GitHub deliveries at each rate of CHAOS_RATES (default 1000,2000),
# against a three-node RabbitMQ cluster, a PostgreSQL cluster, two ingress replicas and two
# workers that the suite starts for itself on free loopback ports and tears down at the end: the
# shared broker and database are never touched. The services run from the release build; the
# tables are printed and appended to .hookline/chaos-<time>.md.
#
#   CHAOS_RATES=1000,2000   deliveries per second, one run each
#   CHAOS_FAULTS=all        or a comma-separated list: kill-ingress, kill-worker,
#                           kill-broker-leader, kill-all-brokers, pg-stop, cut-worker-broker,
#                           cut-ingress-db, sigterm-worker, queue-full
#   CHAOS_KEEP=1            keep the run's directory (logs of every process) in /tmp
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p .hookline
report="$root/.hookline/chaos-$(date -u +%Y%m%dT%H%M%SZ).md"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
{
  echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GiB; $(/usr/lib/postgresql/15/bin/postgres --version); RabbitMQ $(basename /usr/lib/rabbitmq/lib/rabbitmq_server-* | sed "s/rabbitmq_server-//")"
  echo "command: CHAOS_RATES=${CHAOS_RATES:-1000,2000} CHAOS_FAULTS=${CHAOS_FAULTS:-all} make chaos"
  echo
} | tee "$report"
export HOOKLINE_BIN_DIR="$root/target/release"
export CHAOS_REPORT="$report"
export CHAOS_RATES="${CHAOS_RATES:-1000,2000}"
cargo nextest run -p hookline-tests --test chaos --run-ignored only --no-capture -E 'test(chaos_full)'
echo "tables saved in ${report#$root/}"
