#!/usr/bin/env bash
# Installs what Chorus needs to build and test on a fresh Debian machine: Node.js >= 20 must already be there.
# Run as root (it may apt-get install Debian's chromium, mosquitto-clients, mosquitto, haproxy and docker-compose).
# Native addons (better-sqlite3) build from source, against Node's headers from /usr/include/node when present,
# because downloads of prebuilt binaries and of node headers may be impossible.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Chorus needs Node.js 20 or later (found $(node --version))" >&2
  exit 1
fi
# The browser tests drive Debian's Chromium with playwright-core (which never downloads a browser).
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The MQTT 5 tests drive Debian's mosquitto_pub / mosquitto_sub and paho-mqtt (PyPI) as well as MQTT.js.
if ! command -v mosquitto_pub >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients >/dev/null
fi
# The deployment tests run HAProxy in front of the nodes and check docker-compose.yml with docker-compose (no engine);
# `npm run bench` compares Chorus with Debian's mosquitto broker.
for tool in haproxy docker-compose mosquitto; do
  if ! PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done
# The OpenAPI test runs schemathesis (PyPI) against the live document.
if ! command -v st >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
if ! python3 -c 'import paho.mqtt' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'paho-mqtt==2.1.0'
fi
if [ -d /usr/include/node ] && [ -z "${npm_config_nodedir:-}" ]; then
  export npm_config_nodedir=/usr
fi
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
