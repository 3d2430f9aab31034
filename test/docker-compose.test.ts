import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigSchema, envName, loadConfig } from '../config/config.js';

const root = new URL('..', import.meta.url).pathname;
const compose = parse(readFileSync(`${root}docker-compose.yml`, 'utf8'), { merge: true }) as {
  services: Record<
    string,
    {
      image?: string;
      build?: string;
      environment?: Record<string, string>;
      healthcheck?: { test: string[] };
      command?: string[];
      entrypoint?: string[];
      depends_on?: Record<string, unknown>;
      ports?: string[];
      volumes?: string[];
      networks?: Record<string, { ipv4_address?: string }>;
    }
  >;
};
const chorusServices = Object.entries(compose.services).filter(([, s]) => s.build === '.');
const named = (prefix: string) => Object.keys(compose.services).filter((name) => name.startsWith(prefix));
const sentinelConf = readFileSync(`${root}deploy/redis-sentinel.conf`, 'utf8');
/** Compose substitutes ${VAR:?...} from the caller's environment; give each a sample of the shape it must have. */
const samples: Record<string, string> = {
  CHORUS_VAPID_PUBLIC_KEY: 'B'.repeat(87),
  CHORUS_VAPID_PRIVATE_KEY: 'p'.repeat(43),
};
const substitute = (value: string) =>
  String(value).replace(/\$\{([A-Z_]+):\?[^}]*\}/g, (_, name: string) => samples[name] ?? 'x'.repeat(48));

/** The ${NAME} references in deploy/haproxy.cfg: HAProxy refuses to start without each. */
const haproxyVariables = [
  ...new Set(
    readFileSync(`${root}deploy/haproxy.cfg`, 'utf8')
      .match(/\$\{[A-Z0-9_]+\}/g)!
      .map((v) => v.slice(2, -1)),
  ),
];

describe('docker-compose.yml stays true to the code', () => {
  it('is a file docker-compose accepts', () => {
    // Debian's docker-compose checks the schema, the anchors and the substitutions without an engine.
    const env = { ...process.env, CHORUS_JWT_SECRET: 'x'.repeat(48), ...samples };
    expect(() =>
      execFileSync('docker-compose', ['-f', `${root}docker-compose.yml`, 'config', '-q'], { env, stdio: 'pipe' }),
    ).not.toThrow();
  });

  it('runs three Chorus nodes behind HAProxy, and every service has a health check', () => {
    expect(chorusServices.map(([, s]) => s.environment?.CHORUS_ROLE)).toEqual(['all', 'all', 'all']);
    for (const [, service] of Object.entries(compose.services))
      expect(service.healthcheck?.test.length).toBeGreaterThan(0);
    for (const [, service] of chorusServices) {
      expect(Object.keys(service.depends_on ?? {})).toEqual(expect.arrayContaining(['cassandra-3', 'redis-primary']));
      expect(service.ports, 'clients reach the nodes through HAProxy only').toBeUndefined();
    }
  });

  it('starts the first Chorus node alone, which creates the tables, and the others once it is healthy', () => {
    const [firstService, ...others] = chorusServices;
    const [first, firstNode] = firstService!;
    expect(Object.keys(firstNode.depends_on!).filter((name) => name.startsWith('chorus-'))).toEqual([]);
    expect(others).toHaveLength(2);
    for (const [, service] of others)
      expect(service.depends_on![first], 'its schema changes are done').toEqual({ condition: 'service_healthy' });
  });

  it('runs three Cassandra nodes, joining one at a time, that the nodes use at replication factor 3', () => {
    const nodes = named('cassandra-');
    expect(nodes).toEqual(['cassandra-1', 'cassandra-2', 'cassandra-3']);
    for (const [i, name] of nodes.entries()) {
      const node = compose.services[name]!;
      expect(node.image).toMatch(/^cassandra:5\.0/);
      for (const seed of node.environment!.CASSANDRA_SEEDS!.split(',')) expect(nodes).toContain(seed);
      // Replicas must drop a write Chorus no longer waits for (cassandra/session.ts, WRITE_LANDS_WITHIN_MS).
      expect(node.entrypoint!.join(' ')).toContain('write_request_timeout: 800ms');
      if (i > 0) expect(node.depends_on).toEqual({ [nodes[i - 1]!]: { condition: 'service_healthy' } });
    }
    expect(readFileSync(`${root}scripts/cassandra/cassandra.yaml.in`, 'utf8')).toContain(
      'write_request_timeout: 800ms',
    );
    for (const [, service] of chorusServices) {
      const config = loadConfig(
        Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, substitute(v)])),
      );
      expect(config.cassandraContactPoints.split(',').map((point) => point.split(':')[0])).toEqual(nodes);
      expect(config.cassandraReplication).toContain(`'${config.cassandraLocalDataCenter}': ${nodes.length}`);
    }
  });

  it('runs Redis as a primary and a replica under three Sentinels, which the nodes ask for the primary', () => {
    expect(compose.services['redis-primary']?.image).toMatch(/^redis:/);
    expect(compose.services['redis-replica']?.command).toEqual(
      expect.arrayContaining(['--replicaof', 'redis-primary', '6379']),
    );
    const sentinels = named('sentinel-');
    expect(sentinels).toHaveLength(3);
    for (const name of sentinels)
      expect(compose.services[name]!.volumes).toContain('./deploy/redis-sentinel.conf:/etc/chorus/sentinel.conf:ro');
    const port = /^port (\d+)$/m.exec(sentinelConf)![1];
    const [, masterName, host, , quorum] = /^sentinel monitor (\S+) (\S+) (\d+) (\d+)$/m.exec(sentinelConf)!;
    expect(host).toBe('redis-primary');
    expect(Number(quorum)).toBe(Math.floor(sentinels.length / 2) + 1);
    for (const [, service] of chorusServices) {
      const config = loadConfig(
        Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, substitute(v)])),
      );
      expect(config.redisUrl).toBeUndefined();
      expect(config.redisSentinels).toBe(sentinels.map((name) => `${name}:${port}`).join(','));
      expect(config.redisSentinelName).toBe(masterName);
    }
  });

  it('points HAProxy at every node, on the ports the nodes listen on, and the nodes trust its address', () => {
    const haproxy = compose.services.haproxy!;
    expect(haproxy.volumes).toContain('./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro');
    const env = haproxy.environment!;
    for (const name of haproxyVariables) expect(env[name], `HAProxy's ${name}`).toBeDefined();
    const address = haproxy.networks!.default!.ipv4_address;
    chorusServices.forEach(([name, service], i) => {
      const config = loadConfig(
        Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, substitute(v)])),
      );
      expect(env[`NODE${i + 1}_HOST`]).toBe(name);
      expect(env[`NODE${i + 1}_MQTT_PORT`]).toBe(String(config.mqttPort));
      expect(env[`NODE${i + 1}_HTTP_PORT`]).toBe(String(config.httpPort));
      expect(config.trustedProxies).toContain(address);
      expect(service.healthcheck!.test.join(' ')).toContain(`127.0.0.1:${config.httpPort}/healthz`);
    });
    expect(haproxy.ports).toEqual([
      `1883:${env.HAPROXY_MQTT_BIND!.split(':')[1]}`,
      `8080:${env.HAPROXY_HTTP_BIND!.split(':')[1]}`,
    ]);
  });

  it('uses only config keys the code reads, with values its config validation accepts', () => {
    const known = new Set(Object.keys(ConfigSchema.properties).map(envName));
    for (const [name, service] of chorusServices) {
      const env = Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, substitute(v)]));
      for (const key of Object.keys(env)) expect(known, `${name}: ${key}`).toContain(key);
      const config = loadConfig(env);
      expect(config.store).toBe('cassandra');
      expect(config.host).toBe('0.0.0.0');
      expect(config.drainMs).toBeGreaterThan(1000); // HAProxy's checks (every 0.5 s) see the 503 before the close
    }
  });

  it('builds the image that runs `chorus serve`', () => {
    const dockerfile = readFileSync(`${root}Dockerfile`, 'utf8');
    expect(dockerfile).toMatch(/CMD \["node", "dist\/server\/cli\.js", "serve"\]/);
    expect(dockerfile).toMatch(/ENV CHORUS_HOST=0\.0\.0\.0/);
  });
});
