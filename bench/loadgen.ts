/**
 * The load generator: its own process, raw MQTT 3.1.1 over TCP with mqtt-packet (no client library per message),
 * writing as MQTT.js does.
 * Publishers keep `window` QoS 1 publishes in flight each; subscribers acknowledge every delivery. Each payload carries
 * its send time, so the latency measured is end to end: publisher -> broker (-> sequencer -> log) -> subscriber.
 * Prints one JSON line with the results.
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import mqttPacket from 'mqtt-packet';
import { v7 as uuidv7 } from 'uuid';
import { cpuMeter } from './process-usage.js';

export interface LoadSpec {
  port: number;
  topic: string;
  publishers: { username: string; password: string }[];
  subscribers: { username: string; password: string }[];
  window: number;
  bodyBytes: number;
  warmupMs: number;
  measureMs: number;
  /** Processes whose CPU time is reported over the measured window (the server, Redis, Cassandra), by name. */
  watch?: Record<string, number>;
}

interface Conn {
  socket: Socket;
  send(packet: mqttPacket.Packet): void;
  onPacket(handler: (packet: mqttPacket.Packet) => void): void;
}

async function open(port: number, clientId: string, username: string, password: string): Promise<Conn> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  socket.on('data', (chunk) => parser.parse(chunk));
  const conn: Conn = {
    socket,
    // As MQTT.js sends (mqtt-packet's writeToStream corks the stream until the next tick): the packets written in one
    // tick, say the PUBACKs for a batch of deliveries read at once, leave in one syscall rather than one each. The
    // generator shares the box with the server it measures, so every syscall it saves is CPU the server gets.
    send: (packet) => {
      if (!socket.writableCorked) {
        socket.cork();
        process.nextTick(() => socket.uncork());
      }
      socket.write(mqttPacket.generate(packet));
    },
    onPacket: (handler) => parser.on('packet', handler),
  };
  await new Promise<void>((resolve, reject) => {
    parser.once('packet', (p) =>
      (p as mqttPacket.IConnackPacket).returnCode === 0 ? resolve() : reject(new Error(`CONNACK ${JSON.stringify(p)}`)),
    );
    socket.once('error', reject);
    conn.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId,
      keepalive: 60,
      username,
      password: Buffer.from(password),
    });
  });
  return conn;
}

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function run(spec: LoadSpec): Promise<void> {
  const latencies: number[] = [];
  let measuring = false;
  let acked = 0;
  let ackedInAll = 0;
  let delivered = 0;
  const filler = 'x'.repeat(spec.bodyBytes);

  const subscribers = await Promise.all(
    spec.subscribers.map(async (s, i) => {
      const conn = await open(spec.port, `bench-sub-${i}-${process.pid}`, s.username, s.password);
      await new Promise<void>((resolve) => {
        conn.onPacket((p) => {
          if (p.cmd === 'suback') resolve();
          if (p.cmd !== 'publish') return;
          if (p.qos === 1) conn.send({ cmd: 'puback', messageId: p.messageId! });
          if (!measuring) return;
          delivered += 1;
          const text = p.payload.toString();
          const at = text.indexOf('~T');
          const sentAt = Number(text.slice(at + 2, text.indexOf('|', at)));
          latencies.push(performance.now() - sentAt);
        });
        conn.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: spec.topic, qos: 1 }] });
      });
      return conn;
    }),
  );

  let stopped = false;
  const publishers = await Promise.all(
    spec.publishers.map(async (p, i) => {
      const conn = await open(spec.port, `bench-pub-${i}-${process.pid}`, p.username, p.password);
      let messageId = 0;
      // UUIDv7 ids, time-ordered as the SDK makes them, but with a counter where the SDK draws fresh random bits: a
      // random read per id cost this process a fifth of its CPU, which the server it measures would otherwise get.
      const random = crypto.getRandomValues(new Uint8Array(16));
      let idSeq = 0;
      const publishOne = () => {
        messageId = (messageId % 65535) + 1;
        const clientMsgId = uuidv7({ random, msecs: Date.now(), seq: idSeq++ });
        const payload = `{"clientMsgId":"${clientMsgId}","body":"~T${performance.now()}|${filler}"}`;
        conn.send({ cmd: 'publish', topic: spec.topic, qos: 1, messageId, retain: false, dup: false, payload });
      };
      conn.onPacket((packet) => {
        if (packet.cmd !== 'puback') return;
        ackedInAll += 1;
        if (measuring) acked += 1;
        if (!stopped) publishOne();
      });
      for (let w = 0; w < spec.window; w++) publishOne();
      return conn;
    }),
  );

  await new Promise((resolve) => setTimeout(resolve, spec.warmupMs));
  measuring = true;
  const started = performance.now();
  const watched = cpuMeter(spec.watch ?? {});
  const generatorBefore = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, spec.measureMs));
  measuring = false;
  stopped = true;
  const generator = process.cpuUsage(generatorBefore);
  const windowCpuSeconds = { ...watched(), generator: (generator.user + generator.system) / 1e6 };
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  process.stdout.write(
    `${JSON.stringify({
      publishPerSec: acked / seconds,
      deliveredPerSec: delivered / seconds,
      p50Ms: percentile(latencies, 50),
      p99Ms: percentile(latencies, 99),
      samples: latencies.length,
      acked,
      ackedInAll,
      windowCpuSeconds,
    })}\n`,
  );
  for (const conn of [...publishers, ...subscribers]) conn.socket.destroy();
}

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
run(spec).catch((err: Error) => {
  process.stderr.write(`loadgen: ${err.message}\n`);
  process.exit(1);
});
