/**
 * The capacity model: what a load costs, from what each operation cost when `npm run bench` measured it
 * (bench/costs.json). A Chorus node's CPU is taken to be linear in its operations:
 *
 *   cores = idle + active + messages/s x store + deliveries/s x delivery + big-group deliveries/s x big delivery
 *           + connects/s x connect + history pages/s x page
 *
 * and in a cluster every node also pays, per message any other node stored, what reading it from the fan-out costs
 * (and Redis pays, per member on another node, each push pass's presence read); each cost in CPU seconds of every
 * thread of the process. `fitCosts` finds active, store and delivery from loads of different shapes and rates, since
 * every message is stored once and delivered to each member.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { PRESENCE_USERS_PER_CALL } from '../broker/presence-redis.js';
import { MARKS_PER_BATCH } from '../groups/group-store-cassandra.js';
import { PASS_INTERVAL_MS } from '../push/notifier.js';

const Micros = Type.Number({ minimum: 0, description: 'CPU microseconds, every thread of the process' });

export const MeasuredCosts = Type.Object({
  measuredAt: Type.String(),
  machine: Type.String(),
  node: Type.Object({
    /** Cores a node uses with its connections idle. */
    idleCores: Type.Number({ minimum: 0 }),
    /** Cores a node uses more once messages flow, whatever their rate (fitted; may be below 0). */
    activeCores: Type.Number(),
    /** Per message stored and acknowledged, on the SQLite log (fitted). */
    storeUs: Micros,
    /** Per delivery to one online member of a group (fitted). */
    deliveryUs: Micros,
    /** Per delivery of one message to every member of one big group. */
    bigGroupDeliveryUs: Micros,
    /** Per connect + subscribe (JWT check and group lookup included). */
    connectUs: Micros,
    /** Resident memory per idle connection, KB. */
    connectionKb: Type.Number({ minimum: 0 }),
    /** Per page of 100 messages from the history API, on SQLite. */
    historyPageUs: Micros,
  }),
  /** The Cassandra + Redis tier, measured side by side with the SQLite one in one run. */
  cluster: Type.Object({
    /** Node CPU per stored message on Cassandra + Redis over that on SQLite. */
    storeRatio: Type.Number({ minimum: 0 }),
    historyPageUs: Micros,
    cassandraUsPerMessage: Micros,
    cassandraWritesPerMessage: Type.Number({ minimum: 0 }),
    cassandraReadsPerMessage: Type.Number({ minimum: 0 }),
    /** Cassandra reads (coordinator requests) per history page of 100 after a seq, on the group's writing node. */
    cassandraReadsPerPage: Type.Number({ minimum: 0 }),
    redisUsPerMessage: Micros,
    redisCommandsPerMessage: Type.Number({ minimum: 0 }),
    /**
     * Redis's CPU per member whose presence the push notifier reads (bench:scale's horizontal phase): each pass over a
     * group with news reads its members with no client on the group's writing node.
     */
    redisUsPerPresenceLookup: Micros,
    /**
     * Redis's CPU per PUBLISH in a cluster (bench:scale's horizontal phase: fan-out commits, forwarded sends, live
     * events), the price of a receipt event and of a relay of marks.
     */
    redisUsPerPublish: Micros,
    /**
     * What a node pays for each message another node stored: every node reads every commit from the Redis fan-out
     * (bench:scale's horizontal phase).
     */
    fanInUs: Micros,
  }),
});
export type MeasuredCosts = Static<typeof MeasuredCosts>;

/** One measured window: operation rates and the cores the node used meanwhile. */
export interface CostSample {
  messagesPerSec: number;
  deliveriesPerSec: number;
  cores: number;
}

/**
 * The costs that best explain the samples (least squares), given the idle cores:
 * - `activeCores`: a node with traffic pays it whatever the rate (its commit loop and timers), so a message's share of
 *   it falls as the rate grows;
 * - `storeUs` per message (sequenced, committed, acknowledged);
 * - `deliveryUs` per delivery.
 * Needs three samples or more, of at least two group sizes and two rates. test/capacity.test.ts checks the fit
 * against a shape it was not fitted on. Below the fitted rates it underestimates a little: a message arriving alone
 * pays for a commit of its own, which the sequencer otherwise shares between the messages of one batch.
 */
export function fitCosts(samples: CostSample[], idleCores: number): FittedCosts {
  const terms: ((s: CostSample) => number)[] = [() => 1, (s) => s.messagesPerSec, (s) => s.deliveriesPerSec];
  let [active = 0, store = 0, delivery = 0] = leastSquares(samples, idleCores, terms);
  // A cost below zero is noise that the other terms took up: that term is left out and the rest fitted again.
  if (store < 0) {
    store = 0;
    [active = 0, delivery = 0] = leastSquares(samples, idleCores, [terms[0]!, terms[2]!]);
  } else if (delivery < 0) {
    delivery = 0;
    [active = 0, store = 0] = leastSquares(samples, idleCores, [terms[0]!, terms[1]!]);
  }
  return { activeCores: active, storeUs: Math.max(0, store) * 1e6, deliveryUs: Math.max(0, delivery) * 1e6 };
}

/** The coefficients of `terms` that best explain the samples' cores above idle. */
function leastSquares(samples: CostSample[], idleCores: number, terms: ((s: CostSample) => number)[]): number[] {
  const rows = samples.map((s) => terms.map((term) => term(s)));
  const n = terms.length;
  const a = Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => rows.reduce((sum, r) => sum + r[i]! * r[j]!, 0)),
  );
  const b = Array.from({ length: n }, (_, i) =>
    rows.reduce((sum, r, k) => sum + r[i]! * (samples[k]!.cores - idleCores), 0),
  );
  return solve(a, b);
}

export interface FittedCosts {
  activeCores: number;
  storeUs: number;
  deliveryUs: number;
}

/** Solves a square linear system by Gaussian elimination with partial pivoting. */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]!]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(m[r]![col]!) > Math.abs(m[pivot]![col]!)) pivot = r;
    [m[col], m[pivot]] = [m[pivot]!, m[col]!];
    if (Math.abs(m[col]![col]!) < 1e-12) throw new Error('the samples need two group sizes and two rates at least');
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = m[r]![col]! / m[col]![col]!;
      for (let c = col; c <= n; c++) m[r]![c]! -= f * m[col]![c]!;
    }
  }
  return m.map((row, i) => row[n]! / row[i]!);
}

/** The operations per second of a load on one tier of nodes. */
export interface OperationRates {
  messagesPerSec: number;
  deliveriesPerSec: number;
  bigGroupDeliveriesPerSec?: number;
  connectsPerSec?: number;
  historyPagesPerSec?: number;
}

/** Cores the Chorus nodes need for these rates, spread over `nodes` nodes (each pays its idle cost). */
export function nodeCores(
  costs: MeasuredCosts,
  rates: OperationRates,
  tier: 'sqlite' | 'cluster' = 'sqlite',
  nodes = 1,
): number {
  const { node, cluster } = costs;
  const store = tier === 'cluster' ? node.storeUs * cluster.storeRatio : node.storeUs;
  const page = tier === 'cluster' ? cluster.historyPageUs : node.historyPageUs;
  const us =
    rates.messagesPerSec * store +
    rates.deliveriesPerSec * node.deliveryUs +
    (rates.bigGroupDeliveriesPerSec ?? 0) * node.bigGroupDeliveryUs +
    (rates.connectsPerSec ?? 0) * node.connectUs +
    (rates.historyPagesPerSec ?? 0) * page;
  const active = rates.messagesPerSec > 0 ? node.activeCores : 0;
  return nodes * (node.idleCores + active) + us / 1e6;
}

/** A fleet's load, in the words of the seeds. */
export interface FleetLoad {
  /** Concurrent connected users (one connection each). */
  users: number;
  /** Groups with traffic. */
  groups: number;
  /** Messages per second over all ordinary groups. */
  messagesPerSec: number;
  /** Members per ordinary group. */
  avgMembers: number;
  /** Members of the one big group (0: none). */
  bigGroup: number;
  /** Messages per second to the big group. */
  bigGroupMessagesPerSec: number;
  /** Share of a group's members online when a message arrives. */
  onlineShare: number;
  /** Connects per second (reconnects of mobile clients). */
  connectsPerSec: number;
  /** History pages per second (a catch-up after each reconnect, and scrolling). */
  historyPagesPerSec: number;
  /** How often delivered marks are written and told (the deliveredFlushMs setting). */
  deliveredFlushMs: number;
  /** Groups larger than this are told no live events (the liveEventsMaxGroupMembers setting). */
  liveEventsMaxGroupMembers: number;
  /** CPU share of each node left free: p99 stays low only below saturation. */
  headroom: number;
  coresPerNode: number;
}

export interface FleetSize {
  nodeCores: number;
  nodes: number;
  nodeMemoryGb: number;
  redisOpsPerSec: number;
  /** Members whose presence the push notifiers read from Redis, per second. */
  presenceLookupsPerSec: number;
  redisCores: number;
  cassandraWritesPerSec: number;
  cassandraReadsPerSec: number;
  cassandraCores: number;
  /** Delivered marks: Cassandra writes (one-partition batches) and events told to groups, per second. */
  markWritesPerSec: number;
  /** Delivered-mark events handed to online members, per second. */
  markEventDeliveriesPerSec: number;
}

/**
 * Delivered marks (delivery/delivered-marks.ts): a group's marks are written and told by its writer once per flush
 * in which the group had deliveries, with messages arriving at random 1 - e^-(its messages per flush) of the flushes,
 * whatever the number of nodes its members are on (the others relay theirs to the writer). Each is one write per
 * MARKS_PER_BATCH members (groups/group-store-cassandra.ts) and, in a group of at most liveEventsMaxGroupMembers, one
 * event on the bus that every node hands to its own online members of the group.
 */
function markRates(load: FleetLoad): { writesPerSec: number; eventsPerSec: number; eventDeliveriesPerSec: number } {
  const flushesPerSec = 1000 / load.deliveredFlushMs;
  const flushesWithNews = (groups: number, messagesPerSec: number) =>
    groups * flushesPerSec * (1 - Math.exp(-messagesPerSec / groups / flushesPerSec));
  const ordinary = load.groups > 0 ? flushesWithNews(load.groups, load.messagesPerSec) : 0;
  const big = load.bigGroup > 0 ? flushesWithNews(1, load.bigGroupMessagesPerSec) : 0;
  const batches = (members: number) => Math.max(1, Math.ceil((members * load.onlineShare) / MARKS_PER_BATCH));
  // The flushes whose marks are also told, per group size.
  const toldOrdinary = load.avgMembers <= load.liveEventsMaxGroupMembers ? ordinary : 0;
  const toldBig = load.bigGroup <= load.liveEventsMaxGroupMembers ? big : 0;
  return {
    writesPerSec: ordinary * batches(load.avgMembers) + big * batches(load.bigGroup),
    eventsPerSec: toldOrdinary + toldBig,
    eventDeliveriesPerSec: (toldOrdinary * load.avgMembers + toldBig * load.bigGroup) * load.onlineShare,
  };
}

/** What a load needs on the Cassandra + Redis tier, from the measured costs. */
export function sizeFleet(costs: MeasuredCosts, load: FleetLoad): FleetSize {
  const messages = load.messagesPerSec + load.bigGroupMessagesPerSec;
  const rates: OperationRates = {
    messagesPerSec: messages,
    deliveriesPerSec: load.messagesPerSec * load.avgMembers * load.onlineShare,
    bigGroupDeliveriesPerSec: load.bigGroupMessagesPerSec * load.bigGroup * load.onlineShare,
    connectsPerSec: load.connectsPerSec,
    historyPagesPerSec: load.historyPagesPerSec,
  };
  const marks = markRates(load);
  // An event handed to a member is counted at a delivery's cost: an upper estimate (a QoS 0 event has no PUBACK).
  const busy = nodeCores(costs, rates, 'cluster', 0) + (marks.eventDeliveriesPerSec * costs.node.deliveryUs) / 1e6;
  // Every node pays its idle and active cost and reads every message the others stored from the fan-out.
  const perNode = costs.node.idleCores + costs.node.activeCores + (messages * costs.cluster.fanInUs) / 1e6;
  const usable = load.coresPerNode * (1 - load.headroom) - perNode;
  if (usable <= 0)
    throw new Error(
      `a node of ${load.coresPerNode} cores is filled by its share of the cluster's fan-out alone at ${messages} msg/s: use bigger nodes`,
    );
  const nodes = Math.max(2, Math.ceil(busy / usable)); // two at least: one node is a single point of failure
  const { cluster } = costs;
  const spare = 1 / (1 - load.headroom);
  // The push notifier on a group's writer reads the presence of the group's members in one pass per PASS_INTERVAL_MS
  // at most, over whatever arrived meanwhile: with messages arriving at random, a group has a pass in an interval when
  // one came (1 - e^-(its messages per interval)), so a quiet group is read about once per message and a busy one once
  // per interval. A node answers for its own clients; members on the other nodes (all but 1/nodes of them, as a load
  // balancer spreads them) are read from Redis, in one script call per PRESENCE_USERS_PER_CALL members and pass (and
  // one call per pass and node at least). The big group pushes mentions only (pushEveryMessageMaxGroupMembers), so it
  // reads almost none. An upper estimate: a pass starts only once the one before it ended.
  const passesPerSec = 1000 / PASS_INTERVAL_MS;
  const groupPasses = load.groups * passesPerSec * (1 - Math.exp(-load.messagesPerSec / load.groups / passesPerSec));
  const presenceLookupsPerSec = groupPasses * load.avgMembers * (1 - 1 / nodes);
  const presenceCalls =
    presenceLookupsPerSec > 0 ? presenceLookupsPerSec / PRESENCE_USERS_PER_CALL + nodes * passesPerSec : 0;
  // A Cassandra write of marks costs what one of messages did on average.
  const cassandraUsPerWrite =
    cluster.cassandraWritesPerMessage > 0 ? cluster.cassandraUsPerMessage / cluster.cassandraWritesPerMessage : 0;
  // Marks relayed to their groups' writers: one message per node and other node per flush.
  const relaysPerSec = nodes * (nodes - 1) * (1000 / load.deliveredFlushMs);
  const markCommandsPerSec = marks.eventsPerSec + relaysPerSec;
  return {
    nodeCores: busy + nodes * perNode,
    nodes,
    nodeMemoryGb: (load.users * costs.node.connectionKb) / 1024 / 1024,
    redisOpsPerSec: messages * cluster.redisCommandsPerMessage + presenceCalls + markCommandsPerSec,
    presenceLookupsPerSec,
    redisCores:
      ((messages * cluster.redisUsPerMessage +
        presenceLookupsPerSec * cluster.redisUsPerPresenceLookup +
        markCommandsPerSec * cluster.redisUsPerPublish) /
        1e6) *
      spare,
    cassandraWritesPerSec: messages * cluster.cassandraWritesPerMessage + marks.writesPerSec,
    cassandraReadsPerSec:
      messages * cluster.cassandraReadsPerMessage + load.historyPagesPerSec * cluster.cassandraReadsPerPage,
    cassandraCores:
      ((messages * cluster.cassandraUsPerMessage + marks.writesPerSec * cassandraUsPerWrite) / 1e6) * spare,
    markWritesPerSec: marks.writesPerSec,
    markEventDeliveriesPerSec: marks.eventDeliveriesPerSec,
  };
}

/** This machine's processor and core count, recorded beside its costs. */
export const machineName = () => `${cpus()[0]?.model.trim() ?? 'unknown CPU'} x ${cpus().length}`;

/** The costs file `npm run bench` writes and `npm run capacity` reads. */
export const COSTS_FILE = new URL('../../bench/costs.json', import.meta.url).pathname;

export function readCosts(file = COSTS_FILE): MeasuredCosts {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!Value.Check(MeasuredCosts, parsed)) {
    const first = [...Value.Errors(MeasuredCosts, parsed)][0];
    throw new Error(`${file}: ${first?.path ?? ''} ${first?.message ?? 'is not a costs file'}`);
  }
  return parsed;
}

/** Merges what one bench measured into the costs file (each bench measures a part). */
export function recordCosts(
  part: { node?: Partial<MeasuredCosts['node']>; cluster?: Partial<MeasuredCosts['cluster']> },
  machine: string,
): void {
  let current: Partial<MeasuredCosts> = {};
  try {
    current = JSON.parse(readFileSync(COSTS_FILE, 'utf8')) as Partial<MeasuredCosts>;
  } catch {
    // first run on this checkout
  }
  const merged = {
    ...current,
    measuredAt: new Date().toISOString(),
    machine,
    node: { ...current.node, ...part.node },
    cluster: { ...current.cluster, ...part.cluster },
  };
  writeFileSync(COSTS_FILE, `${JSON.stringify(merged, null, 2)}\n`);
}
