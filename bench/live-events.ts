/**
 * Part of `npm run bench`: does the chatter of small groups (read receipts and typing indicators) cost message
 * throughput? One Chorus (SQLite) with GROUPS groups of MEMBERS members, each member an MQTT client subscribed to its
 * group and its events. In every group one member publishes QoS 1 messages as fast as a window of WINDOW in flight
 * allows. Phases alternate, in one run: without chatter, and with it (every member marks what it has read once a
 * second over REST, and says it is typing every 2 s), and the deliveries per second of each phase are compared.
 *
 * Environment: BENCH_LIVE_ROUNDS (default 3), BENCH_LIVE_PHASE_MS (default 10000), BENCH_LIVE_GROUPS (10),
 * BENCH_LIVE_MEMBERS (20), BENCH_LIVE_WINDOW (16); BENCH_PROFILE_DIR writes a CPU profile of the server there.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { signToken } from '../broker/auth.js';
import { seqOfPayload } from '../broker/delivered-marks.js';
import { loadConfig } from '../config/config.js';
import { freePort } from './free-port.js';

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const ROUNDS = env('BENCH_LIVE_ROUNDS', 3);
const PHASE_MS = env('BENCH_LIVE_PHASE_MS', 10_000);
const GROUPS = env('BENCH_LIVE_GROUPS', 10);
const MEMBERS = env('BENCH_LIVE_MEMBERS', 20);
const WINDOW = env('BENCH_LIVE_WINDOW', 16);
const here = new URL('.', import.meta.url).pathname;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const [mqttPort, httpPort] = [await freePort(), await freePort()];
const settings = {
  CHORUS_DATA_DIR: mkdtempSync(join(tmpdir(), 'chorus-bench-live-')),
  CHORUS_MQTT_PORT: String(mqttPort),
  CHORUS_HTTP_PORT: String(httpPort),
  CHORUS_LOG_LEVEL: 'error',
  CHORUS_MQTT_PUBLISH_RATE: '1000000',
  CHORUS_RATE_LIMIT_PER_MINUTE: '1000000',
};
const profile = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];
const server = spawn(process.execPath, [...profile, join(here, '..', 'clients', 'cli.js'), 'serve'], { env: { ...process.env, ...settings }, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise<void>((resolve) => server.stdout!.on('data', (d: Buffer) => d.toString().includes('Chorus is running') && resolve()));
const config = loadConfig(settings);
/** The server's CPU time so far, in seconds (utime + stime from /proc, in clock ticks of 10 ms). */
const serverCpuSeconds = () => {
  const fields = readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const tokens = new Map<string, string>();
const token = async (userId: string) => tokens.get(userId) ?? tokens.set(userId, await signToken(config, userId, 3600)).get(userId)!;
const rest = async (userId: string, method: string, path: string, body: unknown) => {
  const res = await fetch(`http://127.0.0.1:${httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${await token(userId)}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return (await res.json()) as { id: string };
};

interface Member {
  userId: string;
  groupId: string;
  client: MqttClient;
  /** The newest seq this member received. */
  seen: number;
}

let deliveries = 0;
const liveEvents = { read: 0, typing: 0, delivered: 0 };
const members: Member[] = [];
for (let g = 0; g < GROUPS; g++) {
  const userIds = Array.from({ length: MEMBERS }, (_, i) => `g${g}m${i}`);
  const { id: groupId } = await rest(userIds[0]!, 'POST', '/v1/groups', { name: `bench ${g}`, members: userIds.slice(1) });
  for (const userId of userIds) {
    const client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, { username: userId, password: await token(userId), protocolVersion: 4, reconnectPeriod: 0 });
    await new Promise((resolve) => client.once('connect', resolve));
    const member: Member = { userId, groupId, client, seen: 0 };
    client.on('message', (topic, payload) => {
      if (topic.startsWith('groups/')) {
        deliveries += 1;
        member.seen = Math.max(member.seen, seqOfPayload(payload));
      } else {
        // Counted by the start of the type's name, without parsing: the generator's own cost stays small.
        const type = payload.subarray(9, 13).toString();
        if (type === 'read') liveEvents.read += 1;
        else if (type === 'typi') liveEvents.typing += 1;
        else if (type === 'deli') liveEvents.delivered += 1;
      }
    });
    await client.subscribeAsync([`groups/${groupId}/messages`, `users/${userId}/events`], { qos: 1 });
    members.push(member);
  }
}

let running = true;
const publishers = members.filter((m) => m.userId.endsWith('m0'));
const lanes = publishers.flatMap((publisher) =>
  Array.from({ length: WINDOW }, async (_, lane) => {
    for (let i = 0; running; i++) {
      await publisher.client.publishAsync(`groups/${publisher.groupId}/messages`, JSON.stringify({ clientMsgId: `${lane}-${i}-${Date.now()}`, body: 'hello, group' }), { qos: 1 });
    }
  }),
);

/** Every member marks what it has read once a second and types every 2 s, spread over the interval. */
let chatter = false;
const chatterLoops = members.map(async (member, i) => {
  await sleep((i * 1000) / members.length);
  for (let tick = 0; running; tick++) {
    if (chatter) {
      if (member.seen > 0) void rest(member.userId, 'PUT', `/v1/groups/${member.groupId}/read`, { seq: member.seen }).catch(() => undefined);
      if (tick % 2 === 0) member.client.publish(`groups/${member.groupId}/typing`, '', { qos: 0 });
    }
    await sleep(1000);
  }
});

const phases: { chatter: boolean; perSec: number; cpuUsPerDelivery: number; events: typeof liveEvents }[] = [];
await sleep(3000); // warm-up
for (let round = 1; round <= ROUNDS; round++) {
  for (const on of [false, true]) {
    chatter = on;
    await sleep(1500); // let the switch take effect
    const before = deliveries;
    const cpuBefore = serverCpuSeconds();
    const eventsBefore = { ...liveEvents };
    await sleep(PHASE_MS);
    const events = { read: liveEvents.read - eventsBefore.read, typing: liveEvents.typing - eventsBefore.typing, delivered: liveEvents.delivered - eventsBefore.delivered };
    const delivered = deliveries - before;
    const phase = { chatter: on, perSec: (delivered * 1000) / PHASE_MS, cpuUsPerDelivery: ((serverCpuSeconds() - cpuBefore) * 1e6) / delivered, events };
    phases.push(phase);
    console.log(
      `round ${round} ${on ? 'with receipts and typing' : 'without'}: ${phase.perSec.toFixed(0)} deliveries/s, server CPU ${phase.cpuUsPerDelivery.toFixed(1)} µs per delivery; events received: ${events.read} read, ${events.typing} typing, ${events.delivered} delivered`,
    );
  }
}
running = false;
await Promise.race([Promise.all([...lanes, ...chatterLoops]), sleep(5000)]);
const summary = (on: boolean) => {
  const ps = phases.filter((p) => p.chatter === on);
  return { perSec: median(ps.map((p) => p.perSec)), cpu: median(ps.map((p) => p.cpuUsPerDelivery)) };
};
const [off, on] = [summary(false), summary(true)];
console.log(`\nread receipts and typing, ${GROUPS} groups of ${MEMBERS} (medians of ${ROUNDS} rounds):`);
console.log('| phase | message deliveries/s | server CPU per delivery |');
console.log('|---|---|---|');
console.log(`| without | ${off.perSec.toFixed(0)} | ${off.cpu.toFixed(1)} µs |`);
console.log(`| with receipts and typing | ${on.perSec.toFixed(0)} | ${on.cpu.toFixed(1)} µs |`);
console.log(`throughput with / without: ${(on.perSec / off.perSec).toFixed(2)}x (target >= 0.90x); server CPU per delivery with / without: ${(on.cpu / off.cpu).toFixed(2)}x`);
await Promise.all(members.map((m) => m.client.endAsync(true)));
server.kill('SIGTERM');
await new Promise((resolve) => server.once('exit', resolve));
