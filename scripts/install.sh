#!/usr/bin/env bash
# Installs what Chorus needs to build and test on a fresh Debian machine: Node.js >= 20 must already be there.
# Native addons (better-sqlite3) build from source, against Node's headers from /usr/include/node when present,
# because downloads of prebuilt binaries and of node headers may be impossible.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Chorus needs Node.js 20 or later (found $(node --version))" >&2
  exit 1
fi
if [ -d /usr/include/node ] && [ -z "${npm_config_nodedir:-}" ]; then
  export npm_config_nodedir=/usr
fi
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
