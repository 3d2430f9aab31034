import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { ChorusConfig } from '../config/config.js';

/** The longest wait between two tries to reach a Redis that went away (a try to a dead loopback port costs little). */
const REDIS_RETRY_MAX_MS = 250;

/**
 * A connection to Redis that stays connected until it is closed from here (disconnect() or quit()).
 *
 * ioredis (5.11 and 6.1 alike) otherwise ends a Sentinel connection for good in a failover: its failover detector
 * hears the Sentinels announce the new primary (+switch-master) while the connection, cut off with the old primary, is
 * asking a Sentinel where the primary is; the connector then fails that try with "Connection is closed.", and
 * Redis#connect takes a failed try for the end (status end). Every command on it fails at once from then on, and a
 * subscriber hears nothing more: test/redis-connections.test.ts recreates the race. A connection that ends without
 * being closed is connected again (subscriptions and all, as after any reconnection).
 */
export class LastingRedis extends Redis {
  /** Set by disconnect() or quit(): the end that follows is wanted. */
  private closing?: true;

  /** A redis:// URL (host, port, password, db) and options over it, or options alone. */
  constructor(url: string | undefined, options: RedisOptions) {
    if (url) super(url, options);
    else super(options);
    this.on('end', () => {
      if (this.closing) return;
      const ended = new Error('the connection ended by itself (ioredis); connecting again');
      if (this.listenerCount('error') > 0) this.emit('error', ended);
      setTimeout(() => {
        if (!this.closing && this.status === 'end') this.connect().catch(() => undefined); // errors come as events
      }, REDIS_RETRY_MAX_MS);
    });
  }

  override disconnect(reconnect = false): void {
    if (!reconnect) this.closing = true;
    super.disconnect(reconnect);
  }

  override quit(...args: Parameters<Redis['quit']>): ReturnType<Redis['quit']> {
    this.closing = true;
    return super.quit(...args);
  }
}

/**
 * Where Redis is: the URL alone, or the Sentinels that name the current primary (then the URL, if any, gives the
 * password and db). Either way a connection that finds itself on a replica (READONLY: a failover demoted its server)
 * reconnects and sends the command again to whichever server is primary now.
 */
function redisLocation(config: ChorusConfig): RedisOptions {
  const reconnectOnError = (err: Error) => (err.message.startsWith('READONLY') ? 2 : false);
  if (!config.redisSentinels) return { reconnectOnError };
  return {
    sentinels: config.redisSentinels.split(',').map((hostPort) => {
      const [host, port] = hostPort.split(':');
      return { host: host!, port: Number(port) };
    }),
    name: config.redisSentinelName,
    // Sentinels announce a failover (+switch-master): connections move at once instead of at their next error.
    failoverDetector: true,
    reconnectOnError,
  };
}

/**
 * The factory of one node's Redis connections. Each reports its errors to `onError` and to the log (once per outage,
 * not per retry), and reconnects by itself for ever, resubscribing its channels: a Redis that goes away ends no node.
 * Commands issued in one tick leave in one write (auto-pipelining: a login or a fan-out issues several; ioredis keeps
 * their order, and leaves SUBSCRIBE and MULTI out of it). Tries to reconnect are at most REDIS_RETRY_MAX_MS apart
 * (ioredis backs off to 2 s): a node's clients are refused while its Redis is away, and each such wait after Redis
 * is back kept them out longer.
 */
export function redisConnections(
  config: ChorusConfig,
  logger: Logger,
  onError: () => void = () => {},
): (options?: RedisOptions) => LastingRedis {
  let redisDown = false;
  const where: RedisOptions = {
    ...redisLocation(config),
    enableAutoPipelining: true,
    retryStrategy: (attempt) => Math.min(attempt * 50, REDIS_RETRY_MAX_MS),
  };
  return (options = {}) => {
    const redis = new LastingRedis(config.redisUrl, { ...where, ...options });
    redis.on('error', (err: Error) => {
      onError();
      if (!redisDown) logger.error({ err: err.message }, 'Redis unreachable; retrying');
      redisDown = true;
    });
    redis.on('ready', () => {
      if (redisDown) logger.info('Redis reachable again');
      redisDown = false;
    });
    return redis;
  };
}
