import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/** The CommonJS packages only a cluster uses: an embedded node should never load them. */
const CLUSTER_PACKAGES = ['cassandra-driver', 'ioredis', 'mqemitter-redis', 'aedes-persistence-redis'];

/** Imports a module in a fresh Node process and returns the CommonJS packages that import loaded. */
function packagesLoadedBy(moduleUrl: string): Promise<string[]> {
  const script = `
    import { createRequire } from 'node:module';
    await import(${JSON.stringify(moduleUrl)});
    const loaded = Object.keys(createRequire(import.meta.url).cache);
    console.log(JSON.stringify(${JSON.stringify(CLUSTER_PACKAGES)}.filter((p) => loaded.some((f) => f.includes('/node_modules/' + p + '/')))));
  `;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!)),
    );
  });
}

describe('an embedded node', () => {
  it("loads neither the Cassandra driver nor Redis's clients (5-6 MB of heap it would never use)", async () => {
    expect(await packagesLoadedBy(new URL('../server/start.ts', import.meta.url).href)).toEqual([]);
    // The check itself sees them when they are loaded: the cluster's backends load all four.
    expect(await packagesLoadedBy(new URL('../server/backends-cluster.ts', import.meta.url).href)).toEqual(
      CLUSTER_PACKAGES,
    );
  });
});
