import cassandra from 'cassandra-driver';
import { cassandraContactPoint } from './services.js';

/**
 * After the whole run: drops the keyspaces the test files made (testKeyspace), so that a developer's local Cassandra
 * does not gather one set of tables per file per run, each of which it opens at every start. It judges no test: they
 * have all passed or failed by then.
 */
export async function teardown(): Promise<void> {
  const db = new cassandra.Client({ contactPoints: [cassandraContactPoint], localDataCenter: 'datacenter1' });
  try {
    const { rows } = await db.execute('SELECT keyspace_name FROM system_schema.keyspaces');
    for (const row of rows) {
      const name = row.get('keyspace_name') as string;
      if (name.startsWith('chorus_test_')) await db.execute(`DROP KEYSPACE IF EXISTS ${name}`, [], { readTimeout: 60_000 });
    }
  } catch {
    // Best effort: a Cassandra that is down, or a drop that timed out, leaves tables to the next run's tidying.
  } finally {
    await db.shutdown();
  }
}
