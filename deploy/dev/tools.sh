#!/usr/bin/env bash
# Tools `make test` needs beyond Rust: promtool (Debian package `prometheus`), which checks the
# alert rules and the Prometheus config in deploy/. Does nothing when it is already installed.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "[tools] installing promtool (Debian package prometheus)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a Prometheus server where an init system runs; tests only need promtool.
$SUDO service prometheus stop >/dev/null 2>&1 || true
command -v promtool >/dev/null
