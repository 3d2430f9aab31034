import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { type CostSample, fitCosts, type MeasuredCosts, sizeFleet } from '../bench/capacity-model.js';

const CAPACITY = new URL('../dist/bench/capacity.js', import.meta.url).pathname;

/** Cores a node with these costs would use: the model's own formula, for samples of a known truth. */
const truth = { idle: 0.01, active: 0.05, storeUs: 150, deliveryUs: 20 };
const sampleOf = (messagesPerSec: number, members: number, noise = 0): CostSample => ({
  messagesPerSec,
  deliveriesPerSec: messagesPerSec * members,
  cores:
    truth.idle +
    truth.active +
    (messagesPerSec * truth.storeUs + messagesPerSec * members * truth.deliveryUs) / 1e6 +
    noise,
});

const costs = (cluster: Partial<MeasuredCosts['cluster']> = {}): MeasuredCosts => ({
  measuredAt: '2026-12-05T00:00:00Z',
  machine: 'test',
  node: {
    idleCores: 0.01,
    activeCores: 0.05,
    storeUs: 150,
    deliveryUs: 20,
    bigGroupDeliveryUs: 40,
    connectUs: 400,
    connectionKb: 16,
    historyPageUs: 700,
  },
  cluster: {
    storeRatio: 1,
    historyPageUs: 1300,
    cassandraUsPerMessage: 20,
    cassandraWritesPerMessage: 0.05,
    cassandraReadsPerMessage: 0,
    cassandraReadsPerPage: 3,
    redisUsPerMessage: 1,
    redisCommandsPerMessage: 0.02,
    redisUsPerPresenceLookup: 3,
    redisUsPerPublish: 4,
    fanInUs: 5,
    ...cluster,
  },
});

const load = {
  users: 100_000,
  groups: 10_000,
  messagesPerSec: 5000,
  avgMembers: 20,
  bigGroup: 0,
  bigGroupMessagesPerSec: 0,
  onlineShare: 1,
  connectsPerSec: 0,
  historyPagesPerSec: 0,
  deliveredFlushMs: 1000,
  liveEventsMaxGroupMembers: 0, // no receipt events, but for the test of delivered marks
  headroom: 0.5,
  coresPerNode: 8,
};
/** Delivered-mark writes of `load`: 10,000 groups at 0.5 msg/s each, flushed every second. */
const markWrites = 10_000 * (1 - Math.exp(-0.5));

describe('capacity model', () => {
  it('recovers the costs that made the samples, from two group sizes at two rates', () => {
    const fit = fitCosts([sampleOf(300, 10), sampleOf(500, 10), sampleOf(300, 2), sampleOf(500, 2)], truth.idle);
    expect(fit.activeCores).toBeCloseTo(truth.active, 6);
    expect(fit.storeUs).toBeCloseTo(truth.storeUs, 3);
    expect(fit.deliveryUs).toBeCloseTo(truth.deliveryUs, 3);
  });

  it('never fits a cost below zero: noise that pushes one under is left to the other terms', () => {
    // The slow small-group samples make the per-message term negative in a plain least-squares fit.
    const samples = [sampleOf(300, 10), sampleOf(500, 10), sampleOf(300, 2, 0.04), sampleOf(500, 2, -0.02)];
    const fit = fitCosts(samples, truth.idle);
    expect(fit.storeUs).toBeGreaterThanOrEqual(0);
    expect(fit.deliveryUs).toBeGreaterThan(0);
  });

  it('sizes the nodes from the busy cores at the headroom asked, two nodes at least', () => {
    const fleet = sizeFleet(costs(), load);
    // 5,000 msg/s x 150 µs + 100,000 deliveries/s x 20 µs = 2.75 cores busy; 8 cores at 50% leave 4 minus each
    // node's idle, active and fan-in cost (0.01 + 0.05 + 5,000 x 5 µs = 0.085).
    expect(fleet.nodes).toBe(2);
    expect(fleet.nodeCores).toBeCloseTo(2.75 + 2 * 0.085, 6);
    expect(sizeFleet(costs(), { ...load, messagesPerSec: 20_000 }).nodes).toBe(3); // 11 cores busy
    expect(fleet.nodeMemoryGb).toBeCloseTo((100_000 * 16) / 1024 / 1024, 6);
    expect(fleet.cassandraWritesPerSec).toBeCloseTo(250 + markWrites, 6);
    // Each history page costs the reads the bench counted for one (3 here), beside the messages' own (none here).
    expect(sizeFleet(costs(), { ...load, historyPagesPerSec: 100 }).cassandraReadsPerSec).toBeCloseTo(300, 6);
  });

  it("counts the push passes' presence reads in Redis: members on other nodes, a pass per group at most per 100 ms", () => {
    // 10,000 groups at 5,000 msg/s: 0.05 messages per group and 100 ms, so a group has a pass in 1 - e^-0.05 of the
    // intervals (about one per message), over its 20 members, half of them on the other of the 2 nodes; in calls of
    // 500 members, and one call per interval on each node.
    const passes = 10_000 * 10 * (1 - Math.exp(-0.05));
    const fleet = sizeFleet(costs(), load);
    expect(passes).toBeGreaterThan(0.97 * 5000);
    expect(fleet.presenceLookupsPerSec).toBeCloseTo(passes * 20 * 0.5, 6);
    const relays = 2 * 1; // each of the 2 nodes relays its marks to the other once a second
    expect(fleet.redisOpsPerSec).toBeCloseTo(5000 * 0.02 + (passes * 10) / 500 + 2 * 10 + relays, 6);
    // Half of Redis left free; a relay costs a PUBLISH (4 µs).
    expect(fleet.redisCores).toBeCloseTo(((5000 * 1 + passes * 10 * 3 + relays * 4) / 1e6) * 2, 6);
    // 10 busy groups at the same rate: each has a pass every interval, 100 a second in all.
    expect(sizeFleet(costs(), { ...load, groups: 10 }).presenceLookupsPerSec).toBeCloseTo(100 * 20 * 0.5, 6);
  });

  it('counts delivered marks: per group and flush with deliveries one Cassandra write per 100 members and one event to each member, whatever the nodes', () => {
    const told = { ...load, liveEventsMaxGroupMembers: 1000 };
    const fleet = sizeFleet(costs(), told);
    // 0.5 msg/s per group: a flush of a second has news in 1 - e^-0.5 of them (39%), about 3,935 groups a second.
    expect(fleet.markWritesPerSec).toBeCloseTo(markWrites, 6);
    expect(fleet.markEventDeliveriesPerSec).toBeCloseTo(markWrites * 20, 6);
    // Each event to a member costs a delivery (20 µs): 78,694 of them a second, 1.57 cores more than without.
    expect(fleet.nodeCores).toBeCloseTo(sizeFleet(costs(), load).nodeCores + (markWrites * 20 * 20) / 1e6, 6);
    // A write of marks costs Cassandra what one of messages did: 20 µs per message over 0.05 writes per message.
    expect(fleet.cassandraCores).toBeCloseTo(((5000 * 20 + markWrites * 400) / 1e6) * 2, 6);
    // Twice as many nodes (a smaller node each) write and tell no more marks.
    const smaller = sizeFleet(costs(), { ...told, coresPerNode: 4 });
    expect(smaller.nodes).toBeGreaterThan(fleet.nodes);
    expect(smaller.markWritesPerSec).toBeCloseTo(fleet.markWritesPerSec, 6);
    expect(smaller.markEventDeliveriesPerSec).toBeCloseTo(fleet.markEventDeliveriesPerSec, 6);
    // Busier groups: one flush a second each at most. The big group's 100,000 members: 1,000 writes of 100, no events.
    expect(sizeFleet(costs(), { ...told, groups: 10, messagesPerSec: 1000 }).markWritesPerSec).toBeCloseTo(10, 1);
    const big = sizeFleet(costs(), {
      ...told,
      groups: 10,
      messagesPerSec: 0,
      bigGroup: 100_000,
      bigGroupMessagesPerSec: 1000,
    });
    expect(big.markWritesPerSec).toBeCloseTo(1000, 0);
    expect(big.markEventDeliveriesPerSec).toBe(0);
    // Flushed every 5 s instead: a fifth of the busy groups' writes.
    expect(
      sizeFleet(costs(), { ...told, groups: 10, messagesPerSec: 1000, deliveredFlushMs: 5000 }).markWritesPerSec,
    ).toBeCloseTo(2, 1);
  });

  it('says so when the fan-out alone fills a node: every node reads every message', () => {
    expect(() => sizeFleet(costs({ fanInUs: 1000 }), load)).toThrow(/fan-out alone/);
  });

  it('npm run capacity reads the costs file the repository ships, and says when Redis needs more than one thread', () => {
    const capacity = (msgsPerSec: number) =>
      spawnSync(process.execPath, [CAPACITY, '--msgs-per-s', String(msgsPerSec)], { encoding: 'utf8' });
    const quiet = capacity(1000);
    expect(quiet.stderr).toBe('');
    expect(quiet.status).toBe(0);
    expect(quiet.stdout).toMatch(/\| Redis \| [\d,]+ commands\/s \([\d,]+ members' presence read by push passes\)/);
    expect(quiet.stdout).not.toMatch(/one thread/);
    expect(capacity(30_000).stdout).toMatch(/Redis runs its commands on one thread/);
    const tooMuch = capacity(1_000_000);
    expect(tooMuch.status).toBe(1);
    expect(tooMuch.stderr).toMatch(/^a node of 8 cores is filled by its share of the cluster's fan-out alone/);
  });
});
