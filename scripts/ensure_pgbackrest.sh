#!/usr/bin/env bash
# The PITR benchmarks compare with pgBackRest 2.45 (Debian's package); install it when missing.
set -euo pipefail
if command -v pgbackrest >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "the PITR benchmarks need pgbackrest: run 'sudo apt-get install pgbackrest'" >&2
  exit 1
fi
echo "installing pgbackrest (Debian package)..."
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null
