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

describe('docker-compose.yml stays true to the code', () => {
  it('runs Redis, Cassandra, two broker nodes and one api node, each with a health check', () => {
    expect(compose.services.redis?.image).toMatch(/^redis:/);
    expect(compose.services.cassandra?.image).toMatch(/^cassandra:5\.0/);
    const roles = chorusServices.map(([, s]) => s.environment?.CHORUS_ROLE).sort();
    expect(roles).toEqual(['api', 'broker', 'broker']);
    for (const [, service] of Object.entries(compose.services))
      expect(service.healthcheck?.test.length).toBeGreaterThan(0);
    for (const [, service] of chorusServices)
      expect(Object.keys(service.depends_on ?? {}).sort()).toEqual(['cassandra', 'redis']);
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
      const [published] = (service.ports ?? []).filter((p) => p.endsWith(`:${config.httpPort}`));
      expect(published, `${name} publishes its HTTP port`).toBeDefined();
      expect(service.healthcheck!.test.join(' ')).toContain(`127.0.0.1:${config.httpPort}/healthz`);
    }
  });

  it('builds the image that runs `chorus serve`', () => {
    const dockerfile = readFileSync(`${root}Dockerfile`, 'utf8');
    expect(dockerfile).toMatch(/CMD \["node", "dist\/server\/cli\.js", "serve"\]/);
    expect(dockerfile).toMatch(/ENV CHORUS_HOST=0\.0\.0\.0/);
  });
});
