# Sourced by the dev scripts: a local HOOKLINE_SECRET_KEY kept in .hookline/dev.env (made once,
# git-ignored), the binaries of the current build, and the local service URLs.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$root/.hookline"
profile="${HOOKLINE_PROFILE:-debug}"
# Where cargo put the binaries: CARGO_TARGET_DIR when set (relative to where make runs, as cargo
# reads it), else the repository's target/.
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
bin="$target/$profile"
if [ ! -f "$root/.hookline/dev.env" ]; then
  printf 'HOOKLINE_SECRET_KEY=%s\n' "$("$bin/hookline-worker" keygen)" > "$root/.hookline/dev.env"
  chmod 600 "$root/.hookline/dev.env"
fi
set -a
# shellcheck disable=SC1091
. "$root/.hookline/dev.env"
set +a
export HOOKLINE_DATABASE_URL="${HOOKLINE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hookline}"
export HOOKLINE_AMQP_URL="${HOOKLINE_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export HOOKLINE_INGRESS_ADDR="${HOOKLINE_INGRESS_ADDR:-127.0.0.1:8080}"
export HOOKLINE_INGRESS_ADMIN_ADDR="${HOOKLINE_INGRESS_ADMIN_ADDR:-127.0.0.1:9091}"

# Creates the database named in HOOKLINE_DATABASE_URL if it does not exist.
ensure_database() {
  local db="${HOOKLINE_DATABASE_URL##*/}"
  db="${db%%\?*}"
  if ! psql -h 127.0.0.1 -U postgres -w -tAc "select 1 from pg_database where datname = '$db'" postgres | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -w -qc "create database \"$db\"" postgres
  fi
}
