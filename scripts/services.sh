#!/usr/bin/env bash
# Redis and Apache Cassandra on loopback, for the cluster tier's tests, chaos run and benchmark.
#
#   scripts/services.sh install   Debian's redis-server and redis-sentinel; Cassandra 5.0 jars from Maven
#                                 Central (scripts/cassandra/pom.xml)
#   scripts/services.sh start [SERVICE]   start it (if not running) and wait until it answers; no SERVICE: redis and
#                                         cassandra, the quick default
#   scripts/services.sh stop [SERVICE|all]
#   scripts/services.sh status    say what answers
#
# SERVICE: redis (one Redis, 127.0.0.1:6399), cassandra (one node, 127.0.0.1:9142), ring (three Cassandra nodes on
# 127.0.0.2-4:9142, for replication factor 3), sentinel (Redis primary 6400 and replica 6401, Sentinels 26400-26402,
# master name "chorus"). Ports: CHORUS_TEST_REDIS_PORT, CHORUS_TEST_CASSANDRA_PORT; state lives in .services/.
# CHORUS_TEST_CASSANDRA_TIMER_SLACK_NS: the timer slack Cassandra runs with (default 1000000, 1 ms; 0: the kernel's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.services"
redis_port=${CHORUS_TEST_REDIS_PORT:-6399}
cassandra_port=${CHORUS_TEST_CASSANDRA_PORT:-9142}
cassandra_storage_port=${CHORUS_TEST_CASSANDRA_STORAGE_PORT:-7100}
cassandra_lib="$state/cassandra/lib"
cassandra_heap=${CHORUS_TEST_CASSANDRA_HEAP:-1G}
ring_heap=${CHORUS_TEST_CASSANDRA_RING_HEAP:-512M}
cassandra_timer_slack_ns=${CHORUS_TEST_CASSANDRA_TIMER_SLACK_NS:-1000000}
sentinel_redis_ports=(6400 6401)
sentinel_ports=(26400 26401 26402)
sentinel_name=chorus

answers() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# Polled every 0.1 s, as is a stop below: the fault tests time outages by these, and a 1 s poll added up to a second to
# each end of one (a "5 s" Redis stop was 7 s).
wait_for() { # name port seconds [address [pidfile]]
  local deadline=$((SECONDS + $3))
  until answers "$2" "${4:-127.0.0.1}"; do
    if [ -n "${5:-}" ] && ! kill -0 "$(cat "$5")" 2>/dev/null; then
      echo "$1 exited before it answered on ${4:-127.0.0.1}:$2" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$1 did not answer on ${4:-127.0.0.1}:$2 within $3 s" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$1 answers on ${4:-127.0.0.1}:$2"
}

install() {
  # Debian's packages: Redis and its Sentinel.
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
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

cassandra_node() { # dir address seeds token cluster heap
  local dir=$1
  mkdir -p "$dir/conf" "$dir/logs"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$cassandra_port|g" -e "s|@STORAGE_PORT@|$cassandra_storage_port|g" \
    -e "s|@ADDRESS@|$2|g" -e "s|@SEEDS@|$3|g" -e "s|@TOKEN@|$4|g" -e "s|@CLUSTER@|$5|g" \
    "$root/scripts/cassandra/cassandra.yaml.in" > "$dir/conf/cassandra.yaml"
  local options
  options=$(grep '^-' "$root/scripts/cassandra/jvm17-server.options")
  # While requests keep coming, Cassandra's request threads wait for the next one by parking 10 µs at a time (its
  # shared executor's spin). Beside the other processes of one small machine those wake-ups were two thirds of its
  # CPU: 0.63-0.73 of a core at 3,500-7,000 msg/s of the log alone, 0.19-0.25 with the slack (21,000-25,000 context
  # switches a second against 3,500-4,500; node dist/bench/cassandra-log.js). With a timer slack of 1 ms (prctl
  # PR_SET_TIMERSLACK, which every thread it starts inherits) those timed parks wake about once a millisecond. The
  # price is latency at low rates: a request that comes while a thread spins waits for that thread's park to end
  # (Cassandra starts another only when none spins), so requests one at a time took 1.4-1.5 ms against 0.6-0.9.
  # docs/performance.md: "Cassandra's idle spin".
  local launcher=()
  if [ "$cassandra_timer_slack_ns" != 0 ]; then
    if command -v python3 >/dev/null; then
      launcher=(python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(29, int(sys.argv[1]), 0, 0, 0) != 0:  # PR_SET_TIMERSLACK
    sys.exit("prctl(PR_SET_TIMERSLACK): " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[2], sys.argv[2:])' "$cassandra_timer_slack_ns")
    else
      echo "python3 not found: Cassandra starts with the kernel's default timer slack" >&2
    fi
  fi
  # shellcheck disable=SC2086
  nohup "${launcher[@]}" java $options -Xms"$6" -Xmx"$6" \
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" \
    -Dcassandra.storagedir="$dir" -Dcassandra.logdir="$dir/logs" \
    -Dlogback.configurationFile="$root/scripts/cassandra/logback.xml" \
    -Dcassandra-foreground=yes -Dcassandra.jmx.local.port=0 -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=1000 \
    -cp "$cassandra_lib/*" org.apache.cassandra.service.CassandraDaemon \
    > "$dir/logs/stdout.log" 2>&1 &
  echo $! > "$dir/cassandra.pid"
}

start_cassandra() {
  answers "$cassandra_port" && { echo "cassandra already answers on $cassandra_port"; return; }
  local dir="$state/cassandra"
  cassandra_node "$dir" 127.0.0.1 "127.0.0.1:$cassandra_storage_port" -9223372036854775808 chorus-local \
    "$cassandra_heap"
  wait_for cassandra "$cassandra_port" 240 127.0.0.1 "$dir/cassandra.pid" || { tail -n 40 "$dir/logs/system.log" "$dir/logs/stdout.log" >&2; return 1; }
}

# The ring: three nodes with a token each, on addresses of their own (as ccm does), the same ports as the single node.
ring_addresses=(127.0.0.2 127.0.0.3 127.0.0.4)
ring_tokens=(-9223372036854775808 -3074457345618258603 3074457345618258602)

start_ring() {
  # Every node a seed: a seed whose peers do not answer yet goes on (a non-seed gives up), so the three can start
  # together on a fresh machine.
  local seeds="${ring_addresses[0]}:$cassandra_storage_port,${ring_addresses[1]}:$cassandra_storage_port"
  seeds="$seeds,${ring_addresses[2]}:$cassandra_storage_port"
  local started=()
  for i in 0 1 2; do
    local address=${ring_addresses[$i]}
    answers "$cassandra_port" "$address" && continue
    cassandra_node "$state/cassandra-ring/node$((i + 1))" "$address" "$seeds" "${ring_tokens[$i]}" chorus-ring \
      "$ring_heap"
    started+=("$i")
  done
  for i in "${started[@]}"; do
    local dir="$state/cassandra-ring/node$((i + 1))"
    wait_for "cassandra ring node $((i + 1))" "$cassandra_port" 300 "${ring_addresses[$i]}" "$dir/cassandra.pid" ||
      { tail -n 40 "$dir/logs/system.log" "$dir/logs/stdout.log" >&2; return 1; }
  done
}

# Redis with Sentinel: a primary, a replica and three Sentinels that agree (quorum 2) on a failover after 1 s of silence.
start_sentinel() {
  local dir="$state/sentinel"
  mkdir -p "$dir"
  local port
  # A server started again joins whichever one the running Sentinels name as primary (after a failover, not the first):
  # made a replica of the first, a promoted first's old primary would replicate from its own replica, and no server
  # would be primary until the Sentinels untangled it. While they still name a server that is down and another one
  # runs, their failover is under way: it is waited for (up to 15 s), as a server back as a second primary meanwhile
  # would be demoted when the failover ends, and its clients moved twice. Named itself with no other server up, it
  # comes back as primary.
  local primary="${sentinel_redis_ports[0]}" named="" other
  named_primary() {
    answers "${sentinel_ports[0]}" &&
      redis-cli -p "${sentinel_ports[0]}" SENTINEL get-master-addr-by-name "$sentinel_name" 2>/dev/null | sed -n 2p
  }
  named=$(named_primary || true)
  for _ in $(seq 1 150); do
    [ -n "$named" ] && ! answers "$named" || break
    other=""
    for port in "${sentinel_redis_ports[@]}"; do [ "$port" != "$named" ] && answers "$port" && other="$port"; done
    [ -n "$other" ] || break
    sleep 0.1
    named=$(named_primary || true)
  done
  [ -n "$named" ] && primary="$named"
  for port in "${sentinel_redis_ports[@]}"; do
    answers "$port" && continue
    local replica_of=()
    [ "$port" != "$primary" ] && replica_of=(--replicaof 127.0.0.1 "$primary")
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes "${replica_of[@]}" \
      --dir "$dir" --dbfilename "dump-$port.rdb" --pidfile "$dir/redis-$port.pid" --logfile "$dir/redis-$port.log"
    wait_for "redis $port" "$port" 30
  done
  for port in "${sentinel_ports[@]}"; do
    answers "$port" && continue
    # Sentinel rewrites its file as it learns the topology: a fresh one per start.
    cat > "$dir/sentinel-$port.conf" <<CONF
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/sentinel-$port.pid
logfile $dir/sentinel-$port.log
dir $dir
sentinel monitor $sentinel_name 127.0.0.1 ${sentinel_redis_ports[0]} 2
sentinel down-after-milliseconds $sentinel_name 1000
sentinel failover-timeout $sentinel_name 5000
sentinel parallel-syncs $sentinel_name 1
CONF
    redis-sentinel "$dir/sentinel-$port.conf"
    wait_for "sentinel $port" "$port" 30
  done
}

stop_sentinel() {
  local port
  for port in "${sentinel_ports[@]}" "${sentinel_redis_ports[@]}"; do
    stop_one "$state/sentinel/sentinel-$port.pid"
    stop_one "$state/sentinel/redis-$port.pid"
  done
}

stop_one() { # pidfile
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

stop_ring() {
  local i
  for i in 1 2 3; do stop_one "$state/cassandra-ring/node$i/cassandra.pid" & done
  wait
}

what=${2:-}
case "${1:-}" in
  install) install ;;
  start)
    install
    case "$what" in
      '') start_redis; start_cassandra ;;
      redis) start_redis ;;
      cassandra) start_cassandra ;;
      ring) start_ring ;;
      sentinel) start_sentinel ;;
      *) echo "unknown service: $what" >&2; exit 2 ;;
    esac ;;
  stop)
    case "$what" in
      '') stop_one "$state/cassandra/cassandra.pid"; stop_one "$state/redis/redis.pid" ;;
      redis) stop_one "$state/redis/redis.pid" ;;
      cassandra) stop_one "$state/cassandra/cassandra.pid" ;;
      ring) stop_ring ;;
      sentinel) stop_sentinel ;;
      all) stop_ring; stop_sentinel; stop_one "$state/cassandra/cassandra.pid"; stop_one "$state/redis/redis.pid" ;;
      *) echo "unknown service: $what" >&2; exit 2 ;;
    esac ;;
  status)
    answers "$redis_port" && echo "redis: up ($redis_port)" || echo "redis: down"
    answers "$cassandra_port" && echo "cassandra: up ($cassandra_port)" || echo "cassandra: down"
    for address in "${ring_addresses[@]}"; do
      answers "$cassandra_port" "$address" && echo "ring $address: up" || echo "ring $address: down"
    done
    for port in "${sentinel_redis_ports[@]}" "${sentinel_ports[@]}"; do
      answers "$port" && echo "sentinel set $port: up" || echo "sentinel set $port: down"
    done ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
