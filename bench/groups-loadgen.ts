/**
 * The load generator for the scale workloads: its own process, raw MQTT 3.1.1 over TCP with mqtt-packet. Every member
 * is one connection subscribed (QoS 1) to its group's topic; members publish to their own group.
 *
 * It runs the steps of its spec one after another and prints one JSON line after each (`{"step": ..., ...}`), then
 * waits for a line on stdin before the next one, so that the parent can read the server's CPU time and memory between
 * steps. Payloads carry their send time, so latencies are end to end: publisher -> broker (-> log) -> subscriber.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import mqttPacket from 'mqtt-packet';

export interface Member {
  username: string;
  password: string;
  clientId: string;
  /** The group's topic: subscribed on connect, published to. */
  topic: string;
}

export type Step =
  /** Connects every member (connect + subscribe), `concurrency` at a time: how fast, and how many failed. */
  | { kind: 'connect'; concurrency: number }
  /** Open loop: `rate` publishes per second in all, each group's members taking turns, groups round robin. */
  | { kind: 'rate'; rate: number; warmupMs: number; measureMs: number }
  /** One publish by member `from`: the time until every other member of its topic has it. */
  | { kind: 'fanout'; from: number; timeoutMs: number }
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
}

interface Conn {
  member: Member;
  socket: Socket | undefined;
  nextMessageId: number;
  inFlight: number;
  /** Called for every publish this connection receives (after its PUBACK is sent). */
  onDelivery: (payload: Buffer) => void;
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function send(socket: Socket, packet: mqttPacket.Packet): void {
  // As MQTT.js writes: the packets of one tick leave in one syscall (the generator shares the box with the server).
  if (!socket.writableCorked) {
    socket.cork();
    process.nextTick(() => socket.uncork());
  }
  socket.write(mqttPacket.generate(packet));
}

/** Connects and subscribes one member; resolves when its SUBACK arrived, rejects on a refusal, reset or timeout. */
function open(port: number, conn: Conn, clean: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    conn.socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const timer = setTimeout(() => fail(new Error('timeout')), 30_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.on('data', (chunk) => parser.parse(chunk));
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('closed')));
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') {
        if (p.returnCode !== 0) return fail(new Error(`CONNACK ${p.returnCode}`));
        send(socket, { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: conn.member.topic, qos: 1 }] });
      } else if (p.cmd === 'suback') {
        clearTimeout(timer);
        resolve();
      } else if (p.cmd === 'puback') {
        conn.inFlight -= 1;
      } else if (p.cmd === 'publish') {
        if (p.qos === 1) send(socket, { cmd: 'puback', messageId: p.messageId! });
        conn.onDelivery(p.payload as Buffer);
      }
    });
    const { username, password, clientId } = conn.member;
    send(socket, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean, clientId, keepalive: 300, username, password: Buffer.from(password) });
  });
}

/** Opens every connection, at most `concurrency` at a time; returns how many failed. */
async function openAll(port: number, conns: Conn[], clean: boolean, concurrency: number): Promise<number> {
  let next = 0;
  let failed = 0;
  const lane = async () => {
    while (next < conns.length) {
      const conn = conns[next++]!;
      await open(port, conn, clean).catch(() => (failed += 1));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, conns.length) }, lane));
  return failed;
}

function publish(conn: Conn, filler: string): void {
  if (!conn.socket || conn.socket.destroyed) return;
  conn.nextMessageId = (conn.nextMessageId % 65535) + 1;
  conn.inFlight += 1;
  const clientMsgId = `${conn.member.clientId}-${conn.nextMessageId}-${performance.now()}`;
  const payload = `{"clientMsgId":"${clientMsgId}","body":"~T${performance.now()}|${filler}"}`;
  send(conn.socket, { cmd: 'publish', topic: conn.member.topic, qos: 1, messageId: conn.nextMessageId, retain: false, dup: false, payload });
}

const sentAt = (payload: Buffer): number => {
  const text = payload.toString();
  const at = text.indexOf('~T');
  return Number(text.slice(at + 2, text.indexOf('|', at)));
};

async function run(spec: GroupsLoadSpec): Promise<void> {
  const filler = 'x'.repeat(spec.bodyBytes);
  const conns: Conn[] = spec.members.map((member) => ({ member, socket: undefined, nextMessageId: 0, inFlight: 0, onDelivery: () => undefined }));
  const byTopic = new Map<string, Conn[]>();
  for (const conn of conns) {
    const group = byTopic.get(conn.member.topic);
    if (group) group.push(conn);
    else byTopic.set(conn.member.topic, [conn]);
  }
  const groups = [...byTopic.values()];
  const report = async (result: object) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    await stdinLines.next(); // the parent has read the server's counters
  };

  for (const step of spec.steps) {
    switch (step.kind) {
      case 'connect': {
        const started = performance.now();
        const failed = await openAll(spec.port, conns, spec.clean, step.concurrency);
        const seconds = (performance.now() - started) / 1000;
        await report({ step: 'connect', connections: conns.length, failed, perSec: (conns.length - failed) / seconds });
        break;
      }
      case 'rate': {
        let measuring = false;
        const latencies: number[] = [];
        let offered = 0;
        let skipped = 0;
        for (const conn of conns) {
          conn.onDelivery = (payload) => {
            if (measuring) latencies.push(performance.now() - sentAt(payload));
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
        await sleep(step.measureMs);
        measuring = false;
        clearInterval(timer);
        const seconds = (performance.now() - started) / 1000;
        const expected = offered * (conns.length / groups.length);
        latencies.sort((a, b) => a - b);
        await sleep(1000); // what is still in flight lands before the next step
        await report({
          step: 'rate',
          rate: step.rate,
          offeredPerSec: offered / seconds,
          deliveredPerSec: latencies.length / seconds,
          deliveredShare: expected === 0 ? 0 : latencies.length / expected,
          skipped,
          p50Ms: percentile(latencies, 50),
          p99Ms: percentile(latencies, 99),
        });
        break;
      }
      case 'fanout': {
        const from = conns[step.from]!;
        const receivers = byTopic.get(from.member.topic)!.filter((c) => c !== from);
        let waiting = receivers.length;
        let last = 0;
        const started = performance.now();
        const done = new Promise<void>((resolve) => {
          for (const conn of receivers) {
            conn.onDelivery = () => {
              conn.onDelivery = () => undefined;
              last = performance.now();
              if (--waiting === 0) resolve();
            };
          }
        });
        publish(from, filler);
        await Promise.race([done, sleep(step.timeoutMs)]);
        await report({ step: 'fanout', receivers: receivers.length, missing: waiting, lastDeliveryMs: last - started });
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
        const failed = await openAll(spec.port, away, spec.clean, away.length);
        const connectedMs = performance.now() - started;
        await Promise.race([allCaughtUp, sleep(step.timeoutMs)]);
        await report({ step: 'storm', reconnecting: away.length, failed, connectedMs, behind, caughtUpMs: behind === 0 ? performance.now() - started : null });
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
