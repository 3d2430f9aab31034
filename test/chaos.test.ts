import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokenInvariants, formatReport, runChaos } from './chaos.js';
import { Cluster } from './cluster-harness.js';

/**
 * The short form of `npm run chaos`: three nodes on the real Redis and Cassandra, raw MQTT senders and subscribers,
 * while the node writing the group is SIGKILLed and restarted, Redis is stopped and started empty, and Cassandra is paused (SIGSTOP).
 */
describe('fault injection (short form)', () => {
  const cluster = new Cluster();
  beforeAll(async () => {
    await cluster.addAll(['chaos-1', 'chaos-2', 'chaos-3'], 'all');
  }, 120_000);
  afterAll(() => cluster.stop());

  it('loses no acknowledged message, reuses no seq, and keeps every live stream in order without holes', async () => {
    const report = await runChaos(cluster, 'chaos-admin', {
      senders: 4,
      subscribers: 4,
      rate: 10,
      quietMs: 5000,
      recoveryLimitMs: 30_000,
      writerNode: 1, // the node killed below: its groups must be taken over
      faults: [
        { kind: 'kill-node', node: 1, downMs: 1000 },
        { kind: 'stop-redis', downMs: 5000 },
        { kind: 'pause-cassandra', downMs: 5000 },
      ],
    });
    console.log(formatReport(report));
    expect(report.acked).toBeGreaterThan(100);
    expect(brokenInvariants(report)).toEqual([]);
  }, 180_000);
});
