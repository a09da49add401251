#!/usr/bin/env bash
# Make sure headless Chromium is here for tests/reports/test_browser.py: installs Debian's
# `chromium` package if /usr/bin/chromium is missing. Idempotent; prints one line on success
# (the apt log only if the install fails).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log=$(mktemp /tmp/chromium-apt.XXXXXX)
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1
  then
    cat "$log" >&2
    echo "chromium.sh: installing Debian's chromium package failed" >&2
    exit 1
  fi
  rm -f "$log"
fi
echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null)"
