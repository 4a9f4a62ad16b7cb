#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the HTML report test
# (tests/sweep/test_sweep_report.py::test_html_renders_in_headless_chromium), which skips without it
# unless NOISESEARCH_CHROMIUM_TESTS=1. Needs root (or sudo) and network access to the Debian mirror.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  /usr/bin/chromium --version
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
/usr/bin/chromium --version
