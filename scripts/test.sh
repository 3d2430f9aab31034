#!/usr/bin/env bash
# npm test: the whole set-up and the whole suite. Installs the dependencies when they are missing (scripts/install.sh),
# type-checks everything (tests included), lints, builds, and runs vitest, whose global setup starts Redis and Cassandra
# when they do not answer (scripts/services.sh) and stops what it started. Arguments go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/vitest ] || ! command -v st >/dev/null || ! command -v mosquitto_pub >/dev/null ||
  ! command -v haproxy >/dev/null || ! command -v docker-compose >/dev/null || ! python3 -c 'import paho.mqtt' 2>/dev/null; then
  bash scripts/install.sh
fi
npm run typecheck
npm run lint
npm run build
exec node_modules/.bin/vitest run "$@"
