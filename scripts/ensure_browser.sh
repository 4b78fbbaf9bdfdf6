#!/usr/bin/env bash
# The browser test needs Debian's Chromium and its driver; install them when missing.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "the browser test needs chromium and chromium-driver: run 'sudo apt-get install chromium chromium-driver'" >&2
  exit 1
fi
echo "installing chromium and chromium-driver (Debian packages)..."
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
