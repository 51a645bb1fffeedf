#!/usr/bin/env bash
# Makes sure what hookline needs locally is installed and running: PostgreSQL (reachable as
# postgres@127.0.0.1 without a password) and RabbitMQ with its management plugin (the tests create
# one vhost per test through its HTTP API). Safe to run again; does nothing that is already done.
# For development machines and CI only: it may edit pg_hba.conf to trust local TCP connections.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
say() { printf '[services] %s\n' "$*"; }

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql postgresql-client)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- PostgreSQL -----------------------------------------------------------------------------
pg_version="$(ls /etc/postgresql | sort -V | tail -n1)"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL $pg_version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start || true
fi
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
pg_isready -q -h 127.0.0.1 -p 5432 || { say "PostgreSQL did not start"; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -w -tAc 'select 1' postgres >/dev/null 2>&1; then
  hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
  say "allowing password-less local TCP connections in $hba (development/CI only)"
  $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$pg_version" main reload
  sleep 1
  psql -h 127.0.0.1 -U postgres -w -tAc 'select 1' postgres >/dev/null
fi

# --- RabbitMQ -------------------------------------------------------------------------------
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  say "starting RabbitMQ"
  $SUDO rabbitmq-server -detached
fi
$SUDO rabbitmqctl -q await_startup --timeout 120 >/dev/null
if ! $SUDO rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
  say "enabling the RabbitMQ management plugin"
  $SUDO rabbitmq-plugins enable -q rabbitmq_management >/dev/null
fi
for _ in $(seq 1 120); do
  curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null || { say "RabbitMQ management API is not answering"; exit 1; }
say "PostgreSQL and RabbitMQ are ready"
