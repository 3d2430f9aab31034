import { readFileSync } from 'node:fs';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

const port = (fallback: number) => Type.Integer({ minimum: 0, maximum: 65535, default: fallback });

/**
 * The one configuration of a Chorus process. Every key can be set in a JSON config file (CHORUS_CONFIG=path) or by an
 * environment variable named CHORUS_ + the key in upper snake case (mqttPort -> CHORUS_MQTT_PORT); the environment wins.
 */
export const ConfigSchema = Type.Object(
  {
    env: Type.Union([Type.Literal('development'), Type.Literal('production')], { default: 'development' }),
    role: Type.Union([Type.Literal('all'), Type.Literal('broker'), Type.Literal('api')], {
      default: 'all',
      description: 'all: broker + sequencer + HTTP API; broker: MQTT only; api: HTTP API only',
    }),
    host: Type.String({ default: '127.0.0.1', description: 'address every listener binds to' }),
    mqttPort: port(1883),
    httpPort: port(8080),
    wsPath: Type.String({ default: '/mqtt', pattern: '^/' }),
    dataDir: Type.String({ default: './data', minLength: 1 }),
    corsOrigins: Type.String({
      default: '',
      pattern: '^(|\\*|https?://[^,\\s]+(,https?://[^,\\s]+)*)$',
      description:
        'browser origins allowed to call the REST API, comma-separated (e.g. https://app.example.com); empty: none',
    }),
    logLevel: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
      { default: 'info' },
    ),

    store: Type.Union([Type.Literal('sqlite'), Type.Literal('cassandra')], {
      default: 'sqlite',
      description: 'sqlite: one process, embedded; cassandra: many processes sharing Redis and Cassandra',
    }),
    nodeId: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'defaults to hostname-pid' })),
    redisUrl: Type.Optional(
      Type.String({
        pattern: '^rediss?://',
        description: 'store cassandra: the Redis to share (or redisSentinels); with Sentinels, its password and db',
      }),
    ),
    redisSentinels: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_.-]+:[0-9]{1,5}(,[A-Za-z0-9_.-]+:[0-9]{1,5})*$',
        description:
          'store cassandra: comma-separated host:port of Redis Sentinels, asked for the primary of redisSentinelName (then redisUrl is optional)',
      }),
    ),
    redisSentinelName: Type.String({
      default: 'chorus',
      pattern: '^[A-Za-z0-9_.-]{1,64}$',
      description: 'the master name the Sentinels monitor',
    }),
    cassandraContactPoints: Type.String({
      default: '127.0.0.1:9042',
      minLength: 1,
      description: 'comma-separated host:port',
    }),
    cassandraLocalDataCenter: Type.String({ default: 'datacenter1', minLength: 1 }),
    cassandraKeyspace: Type.String({ default: 'chorus', pattern: '^[a-z][a-z0-9_]{0,47}$' }),
    cassandraReplication: Type.String({
      default: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
      pattern: "^\\{[A-Za-z0-9_:',. ]+\\}$",
      description: "CQL replication map for the keyspace, e.g. {'class': 'NetworkTopologyStrategy', 'dc1': 3}",
    }),
    retentionDays: Type.Integer({
      minimum: 0,
      maximum: 3650,
      default: 30,
      description:
        'days messages are kept, on both tiers (0: for good), and the most a group may choose; older ones cannot be edited or deleted',
    }),

    jwtSecret: Type.Optional(Type.String({ minLength: 32, description: 'HS256 secret (at least 32 characters)' })),
    jwtPublicKey: Type.Optional(Type.String({ minLength: 1, description: 'PEM public key (RS256 or ES256)' })),
    jwtIssuer: Type.Optional(Type.String({ minLength: 1 })),
    jwtAudience: Type.Optional(Type.String({ minLength: 1 })),
    jwtRequireExp: Type.Boolean({ default: true, description: 'refuse tokens without an expiry (exp)' }),
    jwtMaxLifetimeSeconds: Type.Integer({
      minimum: 60,
      maximum: 31_536_000,
      default: 604_800,
      description: 'refuse tokens that live longer than this (exp minus iat, or minus now without iat)',
    }),

    vapidPublicKey: Type.Optional(
      Type.String({ pattern: '^[A-Za-z0-9_-]{80,100}$', description: 'VAPID public key (base64url)' }),
    ),
    vapidPrivateKey: Type.Optional(
      Type.String({ pattern: '^[A-Za-z0-9_-]{40,50}$', description: 'VAPID private key (base64url)' }),
    ),
    vapidSubject: Type.String({
      default: 'mailto:admin@chorus.invalid',
      pattern: '^(mailto:|https://)',
      description: 'contact for push services',
    }),
    pushWindowSeconds: Type.Integer({
      minimum: 1,
      maximum: 86_400,
      default: 60,
      description: 'at most one push per user per group per window',
    }),
    pushTtlSeconds: Type.Integer({
      minimum: 0,
      maximum: 2_419_200,
      default: 86_400,
      description: 'how long a push service keeps an undelivered push',
    }),
    maxPushSubscriptionsPerUser: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    pushEveryMessageMaxGroupMembers: Type.Integer({
      minimum: 0,
      maximum: 1_000_000,
      default: 1000,
      description:
        'groups up to this size push every message to offline members; larger ones push only mentions by name',
    }),
    pushAllowLoopback: Type.Boolean({
      default: false,
      description: 'accept https://127.0.0.1 push endpoints (tests only)',
    }),
    pushCaFile: Type.Optional(
      Type.String({ minLength: 1, description: 'PEM file of extra CAs trusted for push endpoints' }),
    ),

    sqliteSynchronous: Type.Union([Type.Literal('full'), Type.Literal('normal')], {
      default: 'full',
      description: 'full: fsync on every group commit (survives power loss); normal: survives process crashes only',
    }),

    maxBodyBytes: Type.Integer({ minimum: 1, maximum: 1_048_576, default: 16_384 }),
    maxPacketBytes: Type.Integer({ minimum: 1024, maximum: 16_777_216, default: 262_144 }),
    maxGroupMembers: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 100_000 }),
    maxPendingSends: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 50_000 }),
    maxOfflineQueue: Type.Integer({
      minimum: 0,
      maximum: 100_000,
      default: 1000,
      description: 'QoS 1 messages kept per offline persistent session; older ones are in the history API',
    }),
    drainMs: Type.Integer({
      minimum: 0,
      maximum: 8000,
      default: 2000,
      description:
        'on SIGTERM, how long /readyz answers 503 (load balancers stop sending new clients) before connections close',
    }),
    maxSessionExpirySeconds: Type.Integer({
      minimum: 0,
      maximum: 31_536_000,
      default: 86_400,
      description: 'the most an MQTT 5 Session Expiry Interval is granted (longer ones are cut to it)',
    }),
    sendTimeoutMs: Type.Integer({
      minimum: 100,
      maximum: 120_000,
      default: 10_000,
      description: 'how long a REST send waits for its commit before answering 503 (the send stays queued)',
    }),
    rateLimitPerMinute: Type.Integer({
      minimum: 1,
      maximum: 10_000_000,
      default: 6000,
      description: 'REST requests per user (or IP) per minute',
    }),
    maxConnections: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
    liveEventsMaxGroupMembers: Type.Integer({
      minimum: 0,
      maximum: 100_000,
      default: 1000,
      description:
        'groups up to this size get typing indicators, read and delivered receipts pushed to their members; larger ones do not',
    }),
    presenceBatchMs: Type.Integer({
      minimum: 0,
      maximum: 10_000,
      default: 250,
      description:
        'presence changes are told this long after they happen, all of a group together (one bus message per group)',
    }),
    deliveredFlushMs: Type.Integer({
      minimum: 50,
      maximum: 60_000,
      default: 1000,
      description: 'delivered watermarks are written (one batch) and told to small groups this often',
    }),
    mentionEveryone: Type.Union([Type.Literal('admins'), Type.Literal('members')], {
      default: 'admins',
      description: 'who may mention @everyone (it notifies every member not muted, with high urgency)',
    }),
    maxUnauthenticatedConnections: Type.Integer({
      minimum: 1,
      maximum: 1_000_000,
      default: 1000,
      description: 'MQTT connections accepted but not yet authenticated; beyond this new ones are closed at once',
    }),
    maxWaitingConnections: Type.Integer({
      minimum: 0,
      maximum: 1_000_000,
      default: 10_000,
      description:
        'MQTT connections beyond maxUnauthenticatedConnections that wait, unread, for a place (10 s at most); beyond this new ones are closed at once',
    }),
    maxUnauthenticatedPerAddress: Type.Integer({
      minimum: 1,
      maximum: 1_000_000,
      default: 100,
      description:
        'MQTT connections from one client address (an IPv6 /64) not yet authenticated; beyond this new ones from it are closed at once',
    }),
    maxConnectionsPerAddress: Type.Integer({
      minimum: 0,
      maximum: 1_000_000,
      default: 0,
      description: 'MQTT connections from one client address (an IPv6 /64) in all; 0: no limit',
    }),
    trustedProxies: Type.String({
      default: '',
      pattern: '^[0-9A-Fa-f.:/,]*$',
      description:
        'comma-separated addresses or CIDRs of load balancers that pass the client address (PROXY protocol v1/v2 on the MQTT port, X-Forwarded-For on HTTP and WebSocket); connections count under that address',
    }),
    searchScanMessages: Type.Integer({
      minimum: 100,
      maximum: 1_000_000,
      default: 10_000,
      description:
        "cluster tier: a group's search reads at most this many of its newest messages below the page's start (SQLite searches its index)",
    }),
    maxClientBufferBytes: Type.Integer({
      minimum: 16_384,
      maximum: 268_435_456,
      default: 1_048_576,
      description:
        'bytes waiting to be sent to one MQTT connection; a client that falls this far behind is disconnected',
    }),
    mqttPublishRate: Type.Integer({
      minimum: 1,
      maximum: 1_000_000,
      default: 200,
      description:
        'publishes per second per MQTT connection (bursts of as many); over it the broker stops reading that connection',
    }),
    authFailuresPerMinute: Type.Integer({
      minimum: 1,
      maximum: 1_000_000,
      default: 30,
      description: 'failed MQTT logins and unauthenticated REST requests per client IP per minute (bursts of as many)',
    }),
  },
  { additionalProperties: false },
);

export type ChorusConfig = Static<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export const envName = (key: string): string => `CHORUS_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

const keys = Object.keys(ConfigSchema.properties) as (keyof ChorusConfig)[];

function fromEnv(env: NodeJS.ProcessEnv, problems: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const raw = env[envName(key)];
    if (raw !== undefined && raw !== '') out[key] = raw;
  }
  for (const name of Object.keys(env)) {
    if (!name.startsWith('CHORUS_') || name === 'CHORUS_CONFIG') continue;
    if (!keys.some((key) => envName(key) === name)) problems.push(`${name}: unknown setting`);
  }
  return out;
}

function fromFile(path: string | undefined, problems: string[]): Record<string, unknown> {
  if (!path) return {};
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      problems.push(`${path}: must hold a JSON object`);
      return {};
    }
    return parsed as Record<string, unknown>;
  } catch (err) {
    problems.push(`${path}: ${(err as Error).message}`);
    return {};
  }
}

/**
 * Builds and validates the configuration once, at start. Every problem is collected and reported together in one
 * ConfigError, so an operator fixes them in one round.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<ChorusConfig> = {}): ChorusConfig {
  const problems: string[] = [];
  const merged = { ...fromFile(env.CHORUS_CONFIG, problems), ...fromEnv(env, problems), ...overrides };
  const candidate = Value.Default(ConfigSchema, Value.Convert(ConfigSchema as TSchema, merged));
  for (const error of Value.Errors(ConfigSchema, candidate)) {
    const key = error.path.replace(/^\//, '').split('/')[0] ?? '';
    const label = key ? `${key} (${envName(key)})` : 'config';
    problems.push(`${label}: ${error.message}${error.path && key ? `, got ${JSON.stringify(error.value)}` : ''}`);
  }
  const config = candidate as ChorusConfig;
  if (config.store === 'cassandra' && !config.redisUrl && !config.redisSentinels)
    problems.push(
      'redisUrl (CHORUS_REDIS_URL) or redisSentinels (CHORUS_REDIS_SENTINELS): required with store cassandra',
    );
  if (config.role !== 'all' && config.store !== 'cassandra') {
    problems.push(
      `role ${config.role}: needs store cassandra (nodes share Redis and Cassandra); the embedded store serves role all only`,
    );
  }
  if (Boolean(config.vapidPublicKey) !== Boolean(config.vapidPrivateKey))
    problems.push('vapidPublicKey and vapidPrivateKey: set both or neither');
  if (config.env === 'production' && !config.vapidPublicKey) {
    problems.push(
      'vapidPublicKey and vapidPrivateKey: required when env is production (`npx web-push generate-vapid-keys`)',
    );
  }
  if (config.jwtSecret && config.jwtPublicKey) problems.push('jwtSecret and jwtPublicKey: set one, not both');
  if (config.env === 'production' && !config.jwtSecret && !config.jwtPublicKey) {
    problems.push('jwtSecret or jwtPublicKey: required when env is production (no generated development secret)');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
