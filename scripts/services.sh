#!/usr/bin/env bash
# Redis and Apache Cassandra on loopback, for the cluster tier's tests and benchmark.
#
#   scripts/services.sh install   Debian's redis-server, redis-sentinel and haproxy; Cassandra 5.0 jars from Maven Central (scripts/cassandra/pom.xml)
#   scripts/services.sh start [redis|cassandra]   start both, or one (if not running), and wait until they answer
#   scripts/services.sh stop [redis|cassandra]    stop both, or one
#   scripts/services.sh status    say what answers
#
# Ports: CHORUS_TEST_REDIS_PORT (6399), CHORUS_TEST_CASSANDRA_PORT (9142); state lives in .services/ (git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.services"
redis_port=${CHORUS_TEST_REDIS_PORT:-6399}
cassandra_port=${CHORUS_TEST_CASSANDRA_PORT:-9142}
cassandra_storage_port=${CHORUS_TEST_CASSANDRA_STORAGE_PORT:-7100}
cassandra_lib="$state/cassandra/lib"
cassandra_heap=${CHORUS_TEST_CASSANDRA_HEAP:-1G}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
  local deadline=$((SECONDS + $3))
  until answers "$2"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$1 did not answer on port $2 within $3 s" >&2
      return 1
    fi
    sleep 1
  done
  echo "$1 answers on 127.0.0.1:$2"
}

install() {
  # Debian's packages: Redis and its Sentinel, and HAProxy for the load-balancer tests.
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
  command -v haproxy >/dev/null || missing+=(haproxy)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v java >/dev/null || { echo "java (JDK 17) is required for Cassandra" >&2; exit 1; }
  if [ ! -f "$cassandra_lib/.complete" ]; then
    command -v mvn >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; }
    mkdir -p "$cassandra_lib"
    mvn -q -B -f "$root/scripts/cassandra/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$cassandra_lib" -DincludeScope=runtime
    touch "$cassandra_lib/.complete"
  fi
}

start_redis() {
  answers "$redis_port" && { echo "redis already answers on $redis_port"; return; }
  mkdir -p "$state/redis"
  # No persistence on purpose: Chorus must survive a Redis that loses everything.
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize yes \
    --dir "$state/redis" --pidfile "$state/redis/redis.pid" --logfile "$state/redis/redis.log"
  wait_for redis "$redis_port" 30
}

start_cassandra() {
  answers "$cassandra_port" && { echo "cassandra already answers on $cassandra_port"; return; }
  local dir="$state/cassandra"
  mkdir -p "$dir/conf" "$dir/logs"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$cassandra_port|g" -e "s|@STORAGE_PORT@|$cassandra_storage_port|g" \
    "$root/scripts/cassandra/cassandra.yaml.in" > "$dir/conf/cassandra.yaml"
  local options
  options=$(grep '^-' "$root/scripts/cassandra/jvm17-server.options")
  # shellcheck disable=SC2086
  nohup java $options -Xms"$cassandra_heap" -Xmx"$cassandra_heap" \
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" \
    -Dcassandra.storagedir="$dir" -Dcassandra.logdir="$dir/logs" \
    -Dlogback.configurationFile="$root/scripts/cassandra/logback.xml" \
    -Dcassandra-foreground=yes -Dcassandra.jmx.local.port=0 -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -cp "$cassandra_lib/*" org.apache.cassandra.service.CassandraDaemon \
    > "$dir/logs/stdout.log" 2>&1 &
  echo $! > "$dir/cassandra.pid"
  wait_for cassandra "$cassandra_port" 240 || { tail -40 "$dir/logs/system.log" "$dir/logs/stdout.log" >&2; return 1; }
}

stop_one() { # pidfile
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

case "${1:-}" in
  install) install ;;
  start)
    install
    [ "${2:-redis}" = redis ] && start_redis
    [ "${2:-cassandra}" = cassandra ] && start_cassandra
    true ;;
  stop)
    [ "${2:-cassandra}" = cassandra ] && stop_one "$state/cassandra/cassandra.pid"
    [ "${2:-redis}" = redis ] && stop_one "$state/redis/redis.pid"
    true ;;
  status)
    answers "$redis_port" && echo "redis: up ($redis_port)" || echo "redis: down"
    answers "$cassandra_port" && echo "cassandra: up ($cassandra_port)" || echo "cassandra: down" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
