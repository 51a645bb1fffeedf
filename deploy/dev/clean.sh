#!/usr/bin/env bash
# `make clean-dev`: forget the development state. The demo database goes with the development
# key in .hookline/: its sources were sealed under that key, and a new key could not open them
# (the next `make run` would start with broken sources).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
url="${HOOKLINE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hookline}"
db="${url##*/}"
db="${db%%\?*}"
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -w -qc "drop database if exists \"$db\" with (force)" postgres
  echo "dropped database $db"
else
  echo "PostgreSQL is not running: database $db left as it is (\`make clean-dev\` again once it runs)"
fi
rm -rf "$root/.hookline"
echo "removed .hookline (development key and logs)"
