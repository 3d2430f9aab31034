import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import type { Cluster, ClusterNode } from './cluster-harness.js';
import { CASSANDRA_PID_FILE, namedPrimary, ringPidFile, SENTINEL_PORTS } from './services.js';

const execFileAsync = promisify(execFile);
const SERVICES = new URL('../scripts/services.sh', import.meta.url).pathname;
const STATE = new URL('../.services/', import.meta.url).pathname;

/** One fault: what it does, for how long, and what undoes it. */
export type Fault =
  | { kind: 'kill-node'; node: number; downMs: number }
  /** Every Chorus node in turn: SIGTERM, down for downMs, started again (an upgrade). */
  | { kind: 'rolling-restart'; downMs: number }
  | { kind: 'stop-redis'; downMs: number }
  /** With Redis under Sentinel: its current primary SIGKILLed, and started again (as a replica) after downMs. */
  | { kind: 'kill-redis-primary'; downMs: number }
  | { kind: 'stop-cassandra'; downMs: number }
  | { kind: 'pause-cassandra'; downMs: number }
  /** Nodes (0, 1, 2) of the Cassandra ring stopped together; one paused (SIGSTOP). */
  | { kind: 'stop-cassandra-nodes'; nodes: number[]; downMs: number }
  | { kind: 'pause-cassandra-node'; node: number; downMs: number };

export interface ChaosPlan {
  senders: number;
  subscribers: number;
  /** Publishes per second per sender (each waits for its PUBACK before the next). */
  rate: number;
  /** Load after each fault once a send was acknowledged again. */
  quietMs: number;
  /**
   * Load before the first fault (quietMs when not given). A Cassandra ring that has just created the run's keyspace
   * answers slowly for its first seconds under load on a small machine: a fault then measures that, not itself.
   */
  warmUpMs?: number;
  /** The node (index) that sends the group's first message before the load, and so becomes its writer. */
  writerNode: number;
  /** The longest wait for the first acknowledgement after a fault ended: past it the fault never recovered. */
  recoveryLimitMs: number;
  faults: Fault[];
}

/** What the run saw of each fault: how long after it ended the first send was acknowledged again. */
export interface FaultReport {
  fault: string;
  downMs: number;
  /**
   * From the fault's start until what it took away served again: a node or server started again, a paused one let go
   * on, or, for a killed Redis primary, the Sentinels naming the replica they promoted.
   */
  backMs: number;
  /** From the fault's end to the next PUBACK anywhere. */
  recoveryMs: number;
  /** The longest time without any PUBACK from the fault's start until the load after it ended. */
  stallMs: number;
  /** The same for each sender alone, the longest: how long the worst-placed client could not send. */
  senderStallMs: number;
  /**
   * The longest any sender waited for its first PUBACK once what the fault took away served again: Chorus's own part
   * of the wait (a sender that was never held up has its next one within 1/rate).
   */
  senderWaitAfterBackMs: number;
  /** For a slow Redis failover, what the Sentinels logged meanwhile: their elections, in their words. */
  sentinelLog?: string[];
  /**
   * When a sender waited more than SLOW_SENDER_MS once the fault was over: what that sender's connection did from the
   * fault's start to its first PUBACK after (connects, closes, refused logins, publishes), in ms from the start.
   */
  slowestSenderLog?: string[];
  /** Nodes that exited without being killed by the plan. */
  crashed: string[];
}

export interface ChaosReport {
  faults: FaultReport[];
  sent: number;
  acked: number;
  stored: number;
  /** Acknowledged messages not in history: must be 0. */
  ackedMissing: number;
  /** clientMsgIds stored more than once: must be 0. */
  storedTwice: number;
  /** Seqs 1..stored with nothing missing or repeated. */
  seqsContiguous: boolean;
  /** Subscriber connections, and those whose live stream skipped a seq or went back below what it had. */
  streams: number;
  streamsOutOfOrder: number;
  /** Messages a connection received again (same seq): allowed after a writer change. */
  duplicates: number;
  /** Where a stream broke: the seq it expected, the one it got, and the fault last begun before (or 'none'). */
  breaks: { expected: number; got: number; during: string }[];
  /** The longest time without any PUBACK. */
  longestAckStallMs: number;
  deliveries: number;
}

function describeFault(f: Fault): string {
  switch (f.kind) {
    case 'kill-node':
      return `SIGKILL node ${f.node + 1}, restart`;
    case 'rolling-restart':
      return 'rolling restart (SIGTERM each node, start it again)';
    case 'stop-cassandra-nodes':
      return `stop Cassandra node${f.nodes.length > 1 ? 's' : ''} ${f.nodes.map((n) => n + 1).join(' and ')} of 3`;
    case 'pause-cassandra-node':
      return `pause Cassandra node ${f.node + 1} of 3`;
    default:
      return f.kind;
  }
}

/** A subscriber connection's stream: the seqs in arrival order, and when each arrived. */
class Stream {
  readonly seqs: number[] = [];
  readonly times: number[] = [];
}

/**
 * Runs load against a cluster (every node role all) while the plan's faults happen one after another, then checks
 * the invariants: every acknowledged message in history once, seqs 1..N without holes, and every subscriber
 * connection's live stream in seq order without holes (duplicates counted). Raw MQTT.js clients only: no SDK repairs.
 */
export async function runChaos(cluster: Cluster, groupAdmin: string, plan: ChaosPlan): Promise<ChaosReport> {
  const nodes = cluster.nodes;
  const servers = nodes.map((n) => ({ host: '127.0.0.1', port: n.mqttPort }));
  const senderIds = Array.from({ length: plan.senders }, (_, i) => `sender${i}`);
  const subscriberIds = Array.from({ length: plan.subscribers }, (_, i) => `reader${i}`);
  const created = await cluster.api(nodes[0]!, groupAdmin, 'POST', '/v1/groups', {
    name: 'chaos',
    members: [...senderIds, ...subscriberIds],
  });
  if (created.status !== 201) throw new Error(`create group: ${created.status} ${JSON.stringify(created.body)}`);
  const groupId = created.body.id as string;
  const topic = `groups/${groupId}/messages`;
  const first = await cluster.api(nodes[plan.writerNode]!, groupAdmin, 'POST', `/v1/groups/${groupId}/messages`, {
    clientMsgId: 'first',
    body: 'first',
  });
  if (first.status !== 201) throw new Error(`first send: ${first.status} ${JSON.stringify(first.body)}`);

  const connect = async (userId: string, i: number): Promise<MqttClient> =>
    mqtt.connect({
      // Each client starts on its own node and moves to the next one when a node goes away.
      servers: [...servers.slice(i % servers.length), ...servers.slice(0, i % servers.length)],
      username: userId,
      password: await cluster.token(userId),
      clientId: `${userId}-chaos`,
      protocolVersion: 4,
      reconnectPeriod: 300,
      // A node whose store is away refuses logins for a while ("server unavailable"): try again, as after a close.
      reconnectOnConnackError: true,
      connectTimeout: 5000,
    });

  const streams: Stream[] = [];
  const subscribers = await Promise.all(
    subscriberIds.map(async (userId, i) => {
      const client = await connect(userId, i);
      let stream = new Stream();
      client.on('connect', () => {
        stream = new Stream();
        streams.push(stream);
        client.subscribe(topic, { qos: 1 });
      });
      client.on('message', (_topic, payload) => {
        stream.seqs.push(JSON.parse(payload.toString()).seq as number);
        stream.times.push(Date.now());
      });
      client.on('error', () => undefined);
      return client;
    }),
  );

  const acked = new Set<string>();
  let sent = 0;
  let lastAck = Date.now();
  let longestAckStall = 0;
  const ackTimes: number[] = [];
  /** Each sender's own PUBACK times: a fault may stop some senders while others go on. */
  const laneAckTimes: number[][] = senderIds.map(() => []);
  let sending = true;
  const senders = await Promise.all(senderIds.map((userId, i) => connect(userId, i + 1)));
  /** What each sender's connection did, for the report of a sender that waited long after a fault. */
  const laneEvents: { at: number; what: string }[][] = senders.map((client) => {
    const events: { at: number; what: string }[] = [];
    const note = (what: string) => events.push({ at: Date.now(), what });
    client.on('connect', () => note(`connected to port ${(client.options as { port?: number }).port}`));
    client.on('close', () => note('connection closed'));
    client.on('error', (err) => note(`error: ${err.message}`));
    client.on('packetsend', (packet) => {
      if (packet.cmd === 'publish') note('PUBLISH');
      if (packet.cmd === 'connect') note('CONNECT');
    });
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'puback') note('PUBACK');
      if (packet.cmd === 'connack') note(`CONNACK ${packet.returnCode ?? packet.reasonCode}`);
      if (packet.cmd === 'disconnect') note(`DISCONNECT ${packet.reasonCode ?? ''}`);
    });
    return events;
  });
  const lanes = senders.map(async (client, s) => {
    for (let i = 0; sending; i++) {
      const clientMsgId = `${s}-${i}`;
      sent += 1;
      const started = Date.now();
      // MQTT.js keeps the publish until its PUBACK, across reconnects: it is sent again on the next connection (without
      // the DUP flag [MQTT-3.3.1-1] asks for: the clientMsgId, not DUP, makes the retry safe).
      await client.publishAsync(topic, JSON.stringify({ clientMsgId, body: `chaos ${clientMsgId}` }), { qos: 1 }).then(
        () => {
          acked.add(clientMsgId);
          const now = Date.now();
          longestAckStall = Math.max(longestAckStall, now - lastAck);
          lastAck = now;
          ackTimes.push(now);
          laneAckTimes[s]!.push(now);
        },
        () => undefined,
      );
      await sleep(Math.max(0, 1000 / plan.rate - (Date.now() - started)));
    }
  });

  const faults: FaultReport[] = [];
  const begun: { at: number; fault: string }[] = [];
  await sleep(plan.warmUpMs ?? plan.quietMs);
  for (const fault of plan.faults) {
    const killed = fault.kind === 'kill-node' ? nodes[fault.node]! : undefined;
    const others = nodes.filter((n) => n !== killed);
    const started = Date.now();
    begun.push({ at: started, fault: describeFault(fault) });
    const backAt = await injectFault(fault, nodes, killed);
    const ended = Date.now();
    // Recovery is waited for (a killed writer's groups are taken over only after its lease, longer than quietMs), up
    // to recoveryLimitMs, so that the load after the fault is always a full quietMs of a working cluster.
    const recoveredBy = Date.now() + plan.recoveryLimitMs;
    while ((ackTimes.at(-1) ?? 0) < ended && Date.now() < recoveredBy) await sleep(100);
    await sleep(plan.quietMs);
    const recovered = ackTimes.find((t) => t >= ended);
    const longestGap = (times: number[]) => {
      const window = [started, ...times.filter((t) => t > started), Date.now()];
      return Math.max(...window.slice(1).map((t, i) => t - window[i]!));
    };
    const backMs = backAt - started;
    const waits = laneAckTimes.map((times) => (times.find((t) => t >= backAt) ?? Date.now()) - backAt);
    const slowest = waits.indexOf(Math.max(...waits));
    faults.push({
      fault: describeFault(fault),
      downMs: fault.downMs,
      backMs,
      recoveryMs: recovered === undefined ? Number.POSITIVE_INFINITY : recovered - ended,
      stallMs: longestGap(ackTimes),
      senderStallMs: Math.max(...laneAckTimes.map(longestGap)),
      senderWaitAfterBackMs: waits[slowest]!,
      slowestSenderLog:
        waits[slowest]! > SLOW_SENDER_MS
          ? laneEvents[slowest]!.filter((e) => e.at >= started && e.at <= backAt + waits[slowest]!).map(
              (e) => `${e.at - started} ms: ${e.what}`,
            )
          : undefined,
      sentinelLog: fault.kind === 'kill-redis-primary' && backMs > SLOW_FAILOVER_MS ? sentinelLog(started) : undefined,
      crashed: others.filter((n) => !n.child || n.child.exitCode !== null).map((n) => n.name),
    });
  }

  sending = false;
  await Promise.race([Promise.all(lanes), sleep(30_000)]);
  await sleep(2000); // the last deliveries
  await Promise.all([...senders, ...subscribers].map((client) => client.endAsync(true)));
  longestAckStall = Math.max(longestAckStall, Date.now() - lastAck - 2000);

  const stored: { seq: number; clientMsgId: string }[] = [];
  for (let after = 0; ; ) {
    const page = await cluster.api(
      nodes[0]!,
      groupAdmin,
      'GET',
      `/v1/groups/${groupId}/messages?afterSeq=${after}&limit=1000`,
    );
    if (page.status !== 200) throw new Error(`history: ${page.status} ${JSON.stringify(page.body)}`);
    stored.push(...page.body.messages);
    if (page.body.messages.length < 1000) break;
    after = stored.at(-1)!.seq;
  }
  const storedIds = stored.map((m) => m.clientMsgId);
  const storedSet = new Set(storedIds);
  let duplicates = 0;
  let outOfOrder = 0;
  const breaks: ChaosReport['breaks'] = [];
  for (const stream of streams) {
    let last: number | undefined;
    let broken = false;
    stream.seqs.forEach((seq, i) => {
      if (last !== undefined && seq <= last) duplicates += 1;
      else if (last !== undefined && seq !== last + 1) {
        broken = true;
        const during = begun.filter((b) => b.at <= stream.times[i]!).at(-1)?.fault ?? 'none';
        breaks.push({ expected: last + 1, got: seq, during });
      }
      if (last === undefined || seq > last) last = seq;
    });
    if (broken) outOfOrder += 1;
  }
  return {
    faults,
    sent,
    acked: acked.size,
    stored: stored.length,
    ackedMissing: [...acked].filter((id) => !storedSet.has(id)).length,
    storedTwice: storedIds.length - storedSet.size,
    seqsContiguous: stored.every((m, i) => m.seq === i + 1),
    streams: streams.length,
    streamsOutOfOrder: outOfOrder,
    duplicates,
    breaks,
    longestAckStallMs: longestAckStall,
    deliveries: streams.reduce((n, s) => n + s.seqs.length, 0),
  };
}

/** Stops a process by its pid file (SIGTERM, then SIGKILL after 30 s), and waits until it is gone. */
async function stopByPidFile(path: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const pid = Number(readFileSync(path, 'utf8'));
  process.kill(pid, signal);
  for (let waited = 0; ; waited += 100) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (waited >= 30_000) process.kill(pid, 'SIGKILL');
    await sleep(100);
  }
}

/** Pauses a process (SIGSTOP) for `ms`, then lets it go on. */
async function pause(pidFile: string, ms: number): Promise<void> {
  const pid = Number(readFileSync(pidFile, 'utf8'));
  process.kill(pid, 'SIGSTOP');
  try {
    await sleep(ms);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/** When the Sentinels name a primary other than `killed`: their failover is over (polled every 50 ms, up to 60 s). */
async function failoverFrom(killed: string): Promise<number> {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(50)) {
    if ((await namedPrimary().catch(() => killed)) !== killed) return Date.now();
  }
  throw new Error(`the Sentinels still name ${killed}, killed 60 s ago, as primary`);
}

/**
 * A Redis failover is slow past this. Sentinel's own part is 1 s without answers (down-after-milliseconds), an
 * election and a promotion: about 2.3 s on this machine. A split vote costs twice failover-timeout more.
 */
const SLOW_FAILOVER_MS = 4000;
/** A sender waiting longer than this once a fault is over gets its connection's story in the report. */
const SLOW_SENDER_MS = 1000;

/** The Sentinels' failover events logged since `since`, for a report to show why a failover was slow. */
function sentinelLog(since: number): string[] {
  const events =
    /[+-](sdown master|odown|try-failover|elected-leader|failover-|promoted|switch-master)|failover delay|vote/;
  // "4088:X 05 Dec 2026 22:31:20.599 # +odown ...": the time is the 24 characters after the first space.
  const loggedAt = (line: string) => Date.parse(line.slice(line.indexOf(' ') + 1, line.indexOf(' ') + 25));
  return SENTINEL_PORTS.flatMap((port) =>
    readFileSync(`${STATE}sentinel/sentinel-${port}.log`, 'utf8')
      .split('\n')
      .filter((line) => events.test(line) && loggedAt(line) >= since - 1000)
      .map((line) => `${port}: ${line}`),
  );
}

/**
 * Brings about one fault and undoes it (`killed`: the node a kill-node fault kills). Resolves with the time what it
 * took away served again.
 */
export async function injectFault(fault: Fault, nodes: ClusterNode[], killed?: ClusterNode): Promise<number> {
  // Asynchronous: the clients live in this process, and a blocked event loop would stall them, not the cluster.
  const services = (...args: string[]) => execFileAsync('bash', [SERVICES, ...args]);
  switch (fault.kind) {
    case 'kill-node':
      await killed!.stop('SIGKILL');
      await sleep(fault.downMs);
      await killed!.start();
      return Date.now();
    case 'rolling-restart':
      for (const node of nodes) {
        await node.stop('SIGTERM');
        await sleep(fault.downMs);
        await node.start();
      }
      return Date.now();
    case 'stop-redis':
      await services('stop', 'redis');
      await sleep(fault.downMs);
      await services('start', 'redis'); // empty: it keeps nothing on disk
      return Date.now();
    case 'kill-redis-primary': {
      const primary = await namedPrimary();
      await stopByPidFile(`${STATE}sentinel/redis-${primary}.pid`, 'SIGKILL');
      const failedOver = failoverFrom(primary);
      failedOver.catch(() => undefined); // awaited below; a failed restart must not leave its rejection unhandled
      await sleep(fault.downMs);
      await services('start', 'sentinel'); // empty, a replica of the primary the Sentinels name now
      return failedOver;
    }
    case 'stop-cassandra':
      await services('stop', 'cassandra');
      await sleep(fault.downMs);
      await services('start', 'cassandra');
      return Date.now();
    case 'pause-cassandra':
      await pause(CASSANDRA_PID_FILE, fault.downMs);
      return Date.now();
    case 'stop-cassandra-nodes':
      await Promise.all(fault.nodes.map((n) => stopByPidFile(ringPidFile(n))));
      await sleep(fault.downMs);
      await services('start', 'ring'); // starts the nodes that are missing
      return Date.now();
    case 'pause-cassandra-node':
      await pause(ringPidFile(fault.node), fault.downMs);
      return Date.now();
  }
}

/** The invariants a run broke, in words (none: every one held). */
export function brokenInvariants(report: ChaosReport): string[] {
  const broken: string[] = [];
  if (report.ackedMissing > 0) broken.push(`${report.ackedMissing} acknowledged messages not in history`);
  if (report.storedTwice > 0) broken.push(`${report.storedTwice} clientMsgIds stored twice`);
  if (!report.seqsContiguous) broken.push('seqs not 1..N');
  if (report.streamsOutOfOrder > 0) broken.push(`${report.streamsOutOfOrder} live streams out of order or with a hole`);
  for (const f of report.faults) {
    if (f.crashed.length > 0) broken.push(`${f.crashed.join(', ')} exited during ${f.fault}`);
    if (!Number.isFinite(f.recoveryMs)) broken.push(`no PUBACK after ${f.fault}`);
  }
  return broken;
}

/** The report as a table, for people. */
export function formatReport(report: ChaosReport): string {
  const seconds = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'never');
  const rows = report.faults.map(
    (f) =>
      `| ${f.fault} | ${seconds(f.downMs)} | ${seconds(f.backMs)} | ${seconds(f.stallMs)} | ${seconds(f.senderStallMs)} | ${seconds(f.senderWaitAfterBackMs)} | ${seconds(f.recoveryMs)} | ${f.crashed.join(', ') || 'none'} |`,
  );
  return [
    '| fault | down | back after | longest time without any PUBACK | longest one sender waited | of which after it was back | first PUBACK after it ended | other nodes that exited |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    ...report.faults.flatMap((f) => (f.sentinelLog ? ['', `Sentinels during ${f.fault}:`, ...f.sentinelLog] : [])),
    ...report.faults.flatMap((f) =>
      f.slowestSenderLog ? ['', `The slowest sender during ${f.fault}:`, ...f.slowestSenderLog] : [],
    ),
    '',
    `sent ${report.sent}, acknowledged ${report.acked}, stored ${report.stored}; acknowledged but missing ${report.ackedMissing}; stored twice ${report.storedTwice}; seqs 1..${report.stored} contiguous: ${report.seqsContiguous}`,
    `subscriber connections ${report.streams}, out of order or with a hole ${report.streamsOutOfOrder}; deliveries ${report.deliveries}, duplicates ${report.duplicates}`,
    ...report.breaks
      .slice(0, 10)
      .map((b) => `  a stream expected seq ${b.expected} and got ${b.got} (after: ${b.during})`),
    `longest time without a PUBACK ${(report.longestAckStallMs / 1000).toFixed(1)} s`,
  ].join('\n');
}
