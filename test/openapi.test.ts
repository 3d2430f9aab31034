import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes } from '../protocol/index.js';
import { TestChorus } from './harness.js';

const CONFIG = new URL('./schemathesis.toml', import.meta.url).pathname;

/** Runs schemathesis (PyPI; scripts/install.sh installs it) against the live OpenAPI document as one user. */
function schemathesis(t: TestChorus, token: string, seed: string): Promise<{ code: number; output: string }> {
  const args = [
    '--config-file',
    CONFIG,
    'run',
    `${t.chorus.urls.http}/docs/json`,
    '--url',
    t.chorus.urls.http,
    '-H',
    `Authorization: Bearer ${token}`,
  ];
  args.push('--checks', 'all', '--max-examples', '20', '--seed', seed, '--no-color');
  return new Promise((resolve) => {
    execFile('st', args, { timeout: 150_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number | string }).code ?? 1) : 0;
      resolve({ code: typeof code === 'number' ? code : -1, output: `${stdout}${stderr}` });
    });
  });
}

describe('the OpenAPI document is the truth (schemathesis, every check and phase, stateful included)', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({
      rateLimitPerMinute: 10_000_000,
      authFailuresPerMinute: 1_000_000,
      sqliteSynchronous: 'normal',
    });
    // Two users with groups of their own and a shared one, so that the run reaches past 404s.
    const shared = await t.group('alice', ['bob']);
    await t.group('bob', ['carol']);
    await t.api('alice', 'POST', `/v1/groups/${shared}/messages`, { clientMsgId: 'seed-1', body: 'hello' });
  });
  afterAll(() => t.close());

  it("documents the router's 414 (a path parameter too long) on every route with a path parameter, and only there", async () => {
    const doc = (await (await fetch(`${t.chorus.urls.http}/docs/json`)).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.values(methods).map((operation) => ({ path, codes: Object.keys(operation.responses) })),
    );
    expect(operations.filter(({ path }) => path.includes('{')).length).toBeGreaterThan(10);
    for (const { path, codes } of operations) expect(codes.includes('414'), path).toBe(path.includes('{'));
    const tooLong = await t.api('alice', 'GET', `/v1/groups/g_${'x'.repeat(200)}`);
    expect([tooLong.status, tooLong.body.code]).toEqual([414, 'URI_TOO_LONG']);
  });

  it("gives the error body's code as one string enum of every code in the catalogue", async () => {
    // Not a union of literals: the response serializer checks a union's branches at run time with an Ajv instance of
    // its own, one for each route and status that can answer an error (267 of them, 6 MB of the heap).
    const doc = (await (await fetch(`${t.chorus.urls.http}/docs/json`)).json()) as {
      components: { schemas: Record<string, { description?: string; properties?: Record<string, unknown> }> };
    };
    const errorBody = Object.values(doc.components.schemas).find((schema) =>
      schema.description?.startsWith('every 4xx'),
    );
    expect(errorBody?.properties?.code).toEqual({ type: 'string', enum: errorCodes });
  });

  for (const user of ['alice', 'bob']) {
    it(`finds nothing as ${user}`, async () => {
      const seed = process.env.SCHEMATHESIS_SEED ?? String(Date.now());
      const { code, output } = await schemathesis(t, await t.token(user), seed);
      expect(output, 'schemathesis must be installed (scripts/install.sh)').toMatch(/Schemathesis v/);
      expect(code, `${output.split('\n').slice(-60).join('\n')}\n(seed ${seed})`).toBe(0);
    }, 180_000);
  }
});
