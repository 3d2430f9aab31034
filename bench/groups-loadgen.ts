/**
 * The load generator for the scale workloads: its own process, raw MQTT 3.1.1 over TCP with mqtt-packet. Every member
 * is one connection subscribed (QoS 1) to its group's topic; members publish to their own group.
 *
 * It runs the steps of its spec one after another and prints one JSON line after each (`{"step": ..., ...}`), then
 * waits for a line on stdin before the next one, so that the parent can read the server's CPU time and memory between
 * steps. Payloads carry their send time (epoch milliseconds, sub-millisecond resolution), so latencies are end to end:
 * publisher -> broker (-> log) -> subscriber, and comparable between generator processes on one machine (bench/scale.ts
 * runs several).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import mqttPacket from 'mqtt-packet';
import { cpuMeter, mainThreadCpuSeconds } from './process-usage.js';

export interface Member {
  username: string;
  password: string;
  clientId: string;
  /** The topics of the member's groups, subscribed on connect; the first is the one it publishes to. */
  topics: string[];
}

export type Step =
  /** Connects every member (connect + subscribe), `concurrency` at a time: how fast, and how many failed. */
  | { kind: 'connect'; concurrency: number }
  /**
   * Open loop: `rate` publishes per second in all, each group's members taking turns, groups (by first topic) round
   * robin. `latencies` adds every measured latency to the report (for a parent that merges several generators).
   */
  | { kind: 'rate'; rate: number; warmupMs: number; measureMs: number; latencies?: boolean }
  /**
   * One publish by member `from` (when this generator has it) to its topic number `topicIndex`, `delayMs` after the
   * step starts: the time until every other member subscribed to that topic here has it. Without `from`, the generator
   * only listens (another one publishes).
   */
  | { kind: 'fanout'; from?: number; topicIndex: number; delayMs: number; timeoutMs: number }
  /**
   * Reconnect storm (persistent sessions): every member but the publishers disconnects, `perGroup` messages are
   * published to each group meanwhile, then all reconnect at once: failed connects, and the time until every one has
   * every message published while away.
   */
  | { kind: 'storm'; perGroup: number; timeoutMs: number }
  /** Closes every connection. */
  | { kind: 'close' };

export interface GroupsLoadSpec {
  port: number;
  members: Member[];
  /** Clean sessions (true) or persistent ones (CleanSession 0, for storms). */
  clean: boolean;
  bodyBytes: number;
  steps: Step[];
  /** Processes whose CPU time a rate step reports over its measured window (the server, say), by name. */
  watch?: Record<string, number>;
}

interface Conn {
  member: Member;
  socket: Socket | undefined;
  nextMessageId: number;
  inFlight: number;
  /** Called for every publish this connection receives (after its PUBACK is sent). */
  onDelivery: (topic: string, payload: Buffer) => void;
}

/** Epoch milliseconds with sub-millisecond resolution: comparable across processes on one machine. */
const now = () => performance.timeOrigin + performance.now();

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function send(socket: Socket, packet: mqttPacket.Packet): void {
  // As MQTT.js writes: the packets of one tick leave in one syscall (the generator shares the box with the server).
  if (!socket.writableCorked) {
    socket.cork();
    process.nextTick(() => socket.uncork());
  }
  socket.write(mqttPacket.generate(packet));
}

/** Connects and subscribes one member; resolves when its SUBACK arrived, rejects on a refusal, reset or timeout (the
 * error's message says which: `CONNACK n`, `timeout`, `closed`, or the socket error's code such as EMFILE). */
function open(port: number, conn: Conn, clean: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    conn.socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const timer = setTimeout(() => fail(new Error('timeout')), 30_000);
    const fail = (err: Error & { code?: string }) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(err.code ?? err.message));
    };
    socket.on('data', (chunk) => parser.parse(chunk));
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('closed')));
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') {
        if (p.returnCode !== 0) return fail(new Error(`CONNACK ${p.returnCode}`));
        send(socket, {
          cmd: 'subscribe',
          messageId: 1,
          subscriptions: conn.member.topics.map((topic) => ({ topic, qos: 1 as const })),
        });
      } else if (p.cmd === 'suback') {
        clearTimeout(timer);
        resolve();
      } else if (p.cmd === 'puback') {
        conn.inFlight -= 1;
      } else if (p.cmd === 'publish') {
        if (p.qos === 1) send(socket, { cmd: 'puback', messageId: p.messageId! });
        conn.onDelivery(p.topic, p.payload as Buffer);
      }
    });
    const { username, password, clientId } = conn.member;
    send(socket, {
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean,
      clientId,
      keepalive: 300,
      username,
      password: Buffer.from(password),
    });
  });
}

/** Opens every connection, at most `concurrency` at a time; returns how many failed, and why (reason -> count). */
async function openAll(
  port: number,
  conns: Conn[],
  clean: boolean,
  concurrency: number,
): Promise<{ failed: number; failures: Record<string, number> }> {
  let next = 0;
  let failed = 0;
  const failures: Record<string, number> = {};
  const lane = async () => {
    while (next < conns.length) {
      const conn = conns[next++]!;
      await open(port, conn, clean).catch((err: Error) => {
        failed += 1;
        failures[err.message] = (failures[err.message] ?? 0) + 1;
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, conns.length) }, lane));
  return { failed, failures };
}

/** Publishes one message (QoS 1) from `conn`; returns its send time, or undefined when the connection is gone. */
function publish(conn: Conn, filler: string, topicIndex = 0): number | undefined {
  if (!conn.socket || conn.socket.destroyed) return undefined;
  conn.nextMessageId = (conn.nextMessageId % 65535) + 1;
  conn.inFlight += 1;
  const sentAt = now();
  const clientMsgId = `${conn.member.clientId}-${conn.nextMessageId}-${sentAt}`;
  const payload = `{"clientMsgId":"${clientMsgId}","body":"~T${sentAt}|${filler}"}`;
  send(conn.socket, {
    cmd: 'publish',
    topic: conn.member.topics[topicIndex]!,
    qos: 1,
    messageId: conn.nextMessageId,
    retain: false,
    dup: false,
    payload,
  });
  return sentAt;
}

const sentAtOf = (payload: Buffer): number => {
  const text = payload.toString();
  const at = text.indexOf('~T');
  return Number(text.slice(at + 2, text.indexOf('|', at)));
};

async function run(spec: GroupsLoadSpec): Promise<void> {
  const filler = 'x'.repeat(spec.bodyBytes);
  const conns: Conn[] = spec.members.map((member) => ({
    member,
    socket: undefined,
    nextMessageId: 0,
    inFlight: 0,
    onDelivery: () => undefined,
  }));
  const byTopic = new Map<string, Conn[]>();
  for (const conn of conns) {
    const group = byTopic.get(conn.member.topics[0]!);
    if (group) group.push(conn);
    else byTopic.set(conn.member.topics[0]!, [conn]);
  }
  const groups = [...byTopic.values()];
  const report = async (result: object) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    await stdinLines.next(); // the parent has read the server's counters
  };

  for (const step of spec.steps) {
    switch (step.kind) {
      case 'connect': {
        const started = now();
        const { failed, failures } = await openAll(spec.port, conns, spec.clean, step.concurrency);
        const ended = now();
        await report({
          step: 'connect',
          connections: conns.length,
          failed,
          failures,
          perSec: (conns.length - failed) / ((ended - started) / 1000),
          startedAt: started,
          endedAt: ended,
        });
        break;
      }
      case 'rate': {
        let measuring = false;
        const latencies: number[] = [];
        let offered = 0;
        let skipped = 0;
        for (const conn of conns) {
          conn.onDelivery = (topic, payload) => {
            if (measuring && topic === conn.member.topics[0]) latencies.push(now() - sentAtOf(payload));
          };
        }
        const turn = groups.map(() => 0);
        let groupTurn = 0;
        const tickMs = 10;
        let owed = 0;
        const timer = setInterval(() => {
          owed += (step.rate * tickMs) / 1000;
          for (; owed >= 1; owed -= 1) {
            const g = groupTurn++ % groups.length;
            const members = groups[g]!;
            const conn = members[turn[g]!++ % members.length]!;
            if (conn.inFlight >= 100) {
              skipped += 1; // the server is not keeping up: not offered again
              continue;
            }
            publish(conn, filler);
            if (measuring) offered += 1;
          }
        }, tickMs);
        await sleep(step.warmupMs);
        measuring = true;
        const started = performance.now();
        const measureFrom = now();
        const watched = cpuMeter(spec.watch ?? {});
        const watchedMainThreads = cpuMeter(spec.watch ?? {}, mainThreadCpuSeconds);
        const generatorBefore = process.cpuUsage();
        await sleep(step.measureMs);
        measuring = false;
        const measureTo = now();
        const generator = process.cpuUsage(generatorBefore);
        const cpuSeconds = { ...watched(), generator: (generator.user + generator.system) / 1e6 };
        const mainThreadSeconds = watchedMainThreads();
        clearInterval(timer);
        const seconds = (performance.now() - started) / 1000;
        const expected = offered * (conns.length / groups.length);
        latencies.sort((a, b) => a - b);
        await sleep(1000); // what is still in flight lands before the next step
        await report({
          step: 'rate',
          rate: step.rate,
          measureFrom,
          measureTo,
          seconds,
          // CPU seconds of each watched process and of this generator over the measured window
          windowCpuSeconds: cpuSeconds,
          // the same for each watched process's main thread alone
          windowMainThreadCpuSeconds: mainThreadSeconds,
          offered,
          delivered: latencies.length,
          offeredPerSec: offered / seconds,
          deliveredPerSec: latencies.length / seconds,
          deliveredShare: expected === 0 ? 0 : latencies.length / expected,
          skipped,
          p50Ms: percentile(latencies, 50),
          p99Ms: percentile(latencies, 99),
          ...(step.latencies ? { latencies: latencies.map((ms) => Math.round(ms * 10) / 10) } : {}),
        });
        break;
      }
      case 'fanout': {
        const from = step.from === undefined ? undefined : conns[step.from];
        const topic = (from ?? conns[0]!).member.topics[step.topicIndex]!;
        // Members whose connection failed or was closed are not waited for (the connect step counted them).
        const receivers = conns.filter(
          (c) => c !== from && c.member.topics[step.topicIndex] === topic && c.socket && !c.socket.destroyed,
        );
        let waiting = receivers.length;
        let lastAt = 0;
        const done = new Promise<void>((resolve) => {
          if (waiting === 0) resolve();
          for (const conn of receivers) {
            conn.onDelivery = (deliveredOn) => {
              if (deliveredOn !== topic) return;
              conn.onDelivery = () => undefined;
              lastAt = now();
              if (--waiting === 0) resolve();
            };
          }
        });
        await sleep(step.delayMs);
        const sentAt = from && publish(from, filler, step.topicIndex);
        await Promise.race([done, sleep(step.timeoutMs)]);
        await report({
          step: 'fanout',
          receivers: receivers.length,
          missing: waiting,
          ...(sentAt ? { sentAt, lastDeliveryMs: lastAt - sentAt } : {}),
          lastDeliveryAt: lastAt,
        });
        break;
      }
      case 'storm': {
        // One publisher per group stays connected; everyone else goes away and comes back at once.
        const publishers = new Set(groups.map((members) => members[0]!));
        const away = conns.filter((c) => !publishers.has(c));
        for (const conn of away) {
          conn.onDelivery = () => undefined;
          conn.socket?.destroy();
        }
        await sleep(500);
        for (const members of groups) for (let i = 0; i < step.perGroup; i++) publish(members[0]!, filler);
        while ([...publishers].some((c) => c.inFlight > 0)) await sleep(20);
        let behind = away.length;
        let caughtUp!: () => void;
        const allCaughtUp = new Promise<void>((resolve) => (caughtUp = resolve));
        for (const conn of away) {
          let got = 0;
          conn.onDelivery = () => {
            if (++got === step.perGroup && --behind === 0) caughtUp();
          };
        }
        const started = performance.now();
        const { failed, failures } = await openAll(spec.port, away, spec.clean, away.length);
        const connectedMs = performance.now() - started;
        await Promise.race([allCaughtUp, sleep(step.timeoutMs)]);
        await report({
          step: 'storm',
          reconnecting: away.length,
          failed,
          failures,
          connectedMs,
          behind,
          caughtUpMs: behind === 0 ? performance.now() - started : null,
        });
        break;
      }
      case 'close':
        for (const conn of conns) conn.socket?.destroy();
        await report({ step: 'close' });
        break;
    }
  }
}

// A file, not an argument: ten thousand members' tokens are more than one argument may hold.
const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as GroupsLoadSpec;
run(spec).then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`groups-loadgen: ${err.message}\n`);
    process.exit(1);
  },
);
