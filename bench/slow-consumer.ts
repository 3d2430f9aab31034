/**
 * The slow-consumer part of `npm run bench`: does one member whose device stops reading hold up anyone else?
 *
 * One Chorus (SQLite log) in its own process. Group "flood": a member publishes 4 KB messages as fast as PUBACKs
 * allow (16 in flight) and another member reads them. Group "probe", unrelated: a member publishes 50 messages a
 * second and another measures their end-to-end latency. Phases alternate, each BENCH_SLOW_PHASE_MS (15 s): without
 * and with a frozen member of the flood group (a raw MQTT connection that subscribes, then never reads its socket).
 * Reports the probe's p50 / p99 in each kind of phase (medians over BENCH_SLOW_ROUNDS rounds, default 3), their
 * ratio, the server's RSS, and how many frozen connections were cut off. BENCH_SLOW_ROUNDS=10 floods for 5 minutes.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHORUS_CLI } from './chorus-cli.js';
import mqtt, { type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { signToken } from '../auth/token-verifier.js';
import { loadConfig } from '../config/config.js';
import { freePort } from './free-port.js';
import { env } from './env-number.js';

const ROUNDS = env('BENCH_SLOW_ROUNDS', 3);
const PHASE_MS = env('BENCH_SLOW_PHASE_MS', 15_000);
const BUFFER_BYTES = 1_048_576;

const percentile = (values: number[], p: number) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!;
const median = (values: number[]) => percentile(values, 0.5);

const dataDir = mkdtempSync(join(tmpdir(), 'chorus-bench-slow-'));
const [mqttPort, httpPort] = [await freePort(), await freePort()];
const settings = {
  CHORUS_DATA_DIR: dataDir,
  CHORUS_MQTT_PORT: String(mqttPort),
  CHORUS_HTTP_PORT: String(httpPort),
  CHORUS_LOG_LEVEL: 'error',
  CHORUS_MQTT_PUBLISH_RATE: '1000000',
  CHORUS_MAX_CLIENT_BUFFER_BYTES: String(BUFFER_BYTES),
};
const server = spawn(process.execPath, [CHORUS_CLI, 'serve'], {
  env: { ...process.env, ...settings },
  stdio: ['ignore', 'pipe', 'inherit'],
});
let exited: number | null = null;
server.once('exit', (code) => (exited = code ?? -1));
await new Promise<void>((resolve) =>
  server.stdout!.on('data', (d: Buffer) => d.toString().includes('Chorus is running') && resolve()),
);
const config = loadConfig(settings);
const token = (userId: string) => signToken(config, userId, 3600);
const createGroup = async (admin: string, members: string[]) => {
  const res = await fetch(`http://127.0.0.1:${httpPort}/v1/groups`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await token(admin)}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench', members }),
  });
  return ((await res.json()) as { id: string }).id;
};
const client = async (userId: string): Promise<MqttClient> => {
  const c = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, {
    username: userId,
    password: await token(userId),
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  await new Promise((resolve) => c.once('connect', resolve));
  return c;
};
const rssMb = () =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
const slowConsumersCut = async () => {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  return Number(/^chorus_mqtt_slow_consumers_total (\d+)/m.exec(text)?.[1] ?? 0);
};

const flood = await createGroup('flooder', ['reader', 'frozen']);
const probe = await createGroup('prober', ['watcher']);
const [flooder, reader, prober, watcher] = await Promise.all(['flooder', 'reader', 'prober', 'watcher'].map(client));
await reader!.subscribeAsync(`groups/${flood}/messages`, { qos: 1 });
await watcher!.subscribeAsync(`groups/${probe}/messages`, { qos: 1 });

let latencies: number[] = [];
watcher!.on('message', (_topic, payload) => {
  const body = JSON.parse(JSON.parse(payload.toString()).body as string) as { at: number };
  latencies.push(performance.now() - body.at);
});

let running = true;
let floodCount = 0;
const body = 'x'.repeat(4000);
const floodLanes = Array.from({ length: 16 }, async (_, lane) => {
  for (let i = 0; running; i++) {
    await flooder!.publishAsync(`groups/${flood}/messages`, JSON.stringify({ clientMsgId: `f${lane}-${i}`, body }), {
      qos: 1,
    });
    floodCount += 1;
  }
});
const probing = (async () => {
  for (let i = 0; running; i++) {
    void prober!.publishAsync(
      `groups/${probe}/messages`,
      JSON.stringify({ clientMsgId: `p${i}`, body: JSON.stringify({ at: performance.now() }) }),
      { qos: 1 },
    );
    await sleep(20);
  }
})();

/** A member of the flood group that subscribes and then never reads again. */
async function freeze(): Promise<Socket> {
  const socket = tcpConnect(mqttPort, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.on('error', () => undefined);
  const password = Buffer.from(await token('frozen'));
  socket.write(
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: `frozen-${Date.now()}`,
      keepalive: 0,
      username: 'frozen',
      password,
    }),
  );
  socket.write(
    mqttPacket.generate({
      cmd: 'subscribe',
      messageId: 1,
      subscriptions: [{ topic: `groups/${flood}/messages`, qos: 1 }],
    }),
  );
  await new Promise((resolve) => socket.once('data', resolve));
  socket.pause();
  return socket;
}

const phases: { frozen: boolean; p50: number; p99: number; rss: number; floodPerSec: number }[] = [];
const baseRss = rssMb();
let peakRss = baseRss;
const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, rssMb())), 250);
await sleep(3000); // warm-up
for (let round = 1; round <= ROUNDS; round++) {
  for (const frozen of [false, true]) {
    const socket = frozen ? await freeze() : undefined;
    latencies = [];
    const floodBefore = floodCount;
    await sleep(PHASE_MS);
    const phase = {
      frozen,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      rss: rssMb(),
      floodPerSec: ((floodCount - floodBefore) * 1000) / PHASE_MS,
    };
    phases.push(phase);
    console.log(
      `round ${round} ${frozen ? 'with a frozen member' : 'without'}: probe p50 ${phase.p50.toFixed(2)} ms, p99 ${phase.p99.toFixed(2)} ms; flood ${phase.floodPerSec.toFixed(0)} msg/s; RSS ${phase.rss.toFixed(0)} MB`,
    );
    socket?.destroy();
  }
}
clearInterval(rssTimer);
running = false;
await Promise.race([Promise.all([...floodLanes, probing]), sleep(5000)]);
const cut = await slowConsumersCut();
const summary = (frozen: boolean) => {
  const ps = phases.filter((p) => p.frozen === frozen);
  return {
    p50: median(ps.map((p) => p.p50)),
    p99: median(ps.map((p) => p.p99)),
    flood: median(ps.map((p) => p.floodPerSec)),
  };
};
const [without, withFrozen] = [summary(false), summary(true)];
console.log('\nslow consumer (medians):');
console.log('| unrelated group, probe latency | p50 ms | p99 ms | flood msg/s (4 KB) |');
console.log('|---|---|---|---|');
console.log(
  `| without a frozen member | ${without.p50.toFixed(2)} | ${without.p99.toFixed(2)} | ${without.flood.toFixed(0)} |`,
);
console.log(
  `| with a frozen member | ${withFrozen.p50.toFixed(2)} | ${withFrozen.p99.toFixed(2)} | ${withFrozen.flood.toFixed(0)} |`,
);
console.log(`p99 with / without: ${(withFrozen.p99 / without.p99).toFixed(2)}x (target <= 1.5x)`);
console.log(
  `server RSS: ${baseRss.toFixed(0)} MB at the start, peak ${peakRss.toFixed(0)} MB (maxClientBufferBytes ${BUFFER_BYTES / 1_048_576} MiB per connection)`,
);
const survived = exited === null;
console.log(
  `frozen connections cut off: ${cut} of ${ROUNDS}; server still running after ${((ROUNDS * 2 * PHASE_MS) / 60_000).toFixed(1)} minutes of flood: ${survived}`,
);
await Promise.all([flooder, reader, prober, watcher].map((c) => c!.endAsync(true)));
server.kill('SIGTERM');
await new Promise((resolve) => server.once('exit', resolve));
process.exitCode = survived ? 0 : 1;
