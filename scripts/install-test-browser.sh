#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium (the /docs page, the console) and
# axe-core (pinned in tests/browser/package-lock.json), which the console test runs in the page.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Chromium is missing and this is not root: install the 'chromium' package, or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
fi
if [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
  (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund --silent) >&2
fi
