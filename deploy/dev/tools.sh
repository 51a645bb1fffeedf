#!/usr/bin/env bash
# Tools `make test` needs beyond Rust, for the checks of deploy/ (tests/tests/deploy.rs):
# - promtool (Debian package `prometheus`): the alert rules and the Prometheus config;
# - kubernetes-validate (PyPI, schemas bundled, no cluster needed), in .hookline/venv: the
#   Kubernetes manifests, strictly;
# - check-jsonschema (PyPI, with the Compose specification's schema vendored), in .hookline/venv:
#   deploy/compose.yaml;
# - schemathesis (PyPI), in .hookline/venv: the management API against its OpenAPI document
#   (tests/tests/api_schemathesis.rs);
# - chromium (Debian's package; never a downloaded browser) and tests/console's locked node
#   packages (playwright-core, which drives that chromium, and axe-core), with `npm ci`: the
#   operator console's browser tests (tests/tests/console.rs). Node.js is the machine's when it
#   is 20 or newer (playwright-core's minimum); Debian 12's is 18, so there npm installs the
#   official Node.js 20 build (npm package `node`) into .hookline/node, which the tests then use.
# Does nothing for what is already installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v promtool >/dev/null 2>&1; then
  echo "[tools] installing promtool (Debian package prometheus)"
  apt_install prometheus
  # The package starts a Prometheus server where an init system runs; tests only need promtool.
  $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
for tool in kubernetes-validate check-jsonschema schemathesis; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "$root/.hookline/venv/bin/$tool" ]; then
    echo "[tools] installing $tool into .hookline/venv"
    [ -x "$root/.hookline/venv/bin/pip" ] || python3 -m venv "$root/.hookline/venv" 2>/dev/null \
      || { apt_install python3-venv; python3 -m venv "$root/.hookline/venv"; }
    "$root/.hookline/venv/bin/pip" install -q "$tool"
  fi
done
if [ ! -x /usr/bin/chromium ]; then
  echo "[tools] installing chromium (Debian package) for the console's browser tests"
  apt_install chromium
fi
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ] && [ ! -x "$root/.hookline/node/node_modules/.bin/node" ]; then
  echo "[tools] Node.js ${node_major} is older than 20 (playwright-core's minimum): Node.js 20 into .hookline/node"
  npm install --prefix "$root/.hookline/node" --no-audit --no-fund --loglevel=error node@20.20.2
fi
console="$root/tests/console"
# Reinstalled when the lock file is newer than what npm last installed from it.
if [ ! -f "$console/node_modules/.package-lock.json" ] \
  || [ "$console/package-lock.json" -nt "$console/node_modules/.package-lock.json" ]; then
  echo "[tools] npm ci in tests/console"
  (cd "$console" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
