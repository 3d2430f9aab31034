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
      depends_on?: Record<string, unknown>;
      ports?: string[];
      volumes?: string[];
      networks?: Record<string, { ipv4_address?: string }>;
    }
  >;
};
const chorusServices = Object.entries(compose.services).filter(([, s]) => s.build === '.');
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
  it('runs three Chorus nodes behind HAProxy, and every service has a health check', () => {
    expect(compose.services.redis?.image).toMatch(/^redis:/);
    expect(compose.services.cassandra?.image).toMatch(/^cassandra:5\.0/);
    expect(chorusServices.map(([, s]) => s.environment?.CHORUS_ROLE)).toEqual(['all', 'all', 'all']);
    for (const [, service] of Object.entries(compose.services))
      expect(service.healthcheck?.test.length).toBeGreaterThan(0);
    for (const [, service] of chorusServices) {
      expect(Object.keys(service.depends_on ?? {}).sort()).toEqual(['cassandra', 'redis']);
      expect(service.ports, 'clients reach the nodes through HAProxy only').toBeUndefined();
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
      expect(config.redisUrl).toBe('redis://redis:6379');
      expect(config.cassandraContactPoints).toBe('cassandra:9042');
      expect(config.drainMs).toBeGreaterThan(1000); // HAProxy's checks (every 0.5 s) see the 503 before the close
    }
  });

  it('builds the image that runs `chorus serve`', () => {
    const dockerfile = readFileSync(`${root}Dockerfile`, 'utf8');
    expect(dockerfile).toMatch(/CMD \["node", "dist\/server\/cli\.js", "serve"\]/);
    expect(dockerfile).toMatch(/ENV CHORUS_HOST=0\.0\.0\.0/);
  });
});
