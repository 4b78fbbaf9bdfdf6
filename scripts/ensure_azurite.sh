#!/usr/bin/env bash
# The Azure Blob tests run Azurite (npm package azurite, pinned in package.json and package-lock.json);
# install it into node_modules/ when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x node_modules/.bin/azurite-blob ]; then exit 0; fi
if ! command -v npm >/dev/null; then
  echo "the Azure Blob tests need Azurite and npm is missing: install Node.js 20 and npm (apt-get install nodejs npm)" >&2
  exit 1
fi
echo "installing Azurite (npm ci, from package-lock.json)..."
npm ci --no-audit --no-fund --loglevel=error
