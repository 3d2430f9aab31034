/**
 * Part of `npm run bench`: does the chatter of small groups (read receipts and typing indicators) cost message
 * throughput? One Chorus (SQLite) with GROUPS groups of MEMBERS members, each member an MQTT client subscribed to its
 * group and its events. In every group one member publishes QoS 1 messages as fast as a window of WINDOW in flight
 * allows. Phases alternate, in one run, and the deliveries per second of each are compared with the phase without
 * chatter:
 * - typical: every member marks what it has read every 2 s (an app marks read while a conversation is on screen,
 *   debounced; over MQTT, as the SDK's markRead does), and 3 members of each group are typing (one indicator every 2 s);
 * - stress: every member marks read every second, and every member is typing.
 *
 * Environment: BENCH_LIVE_ROUNDS (default 5), BENCH_LIVE_PHASE_MS (default 8000), BENCH_LIVE_GROUPS (10),
 * BENCH_LIVE_MEMBERS (20), BENCH_LIVE_WINDOW (16), BENCH_LIVE_PHASES (none,typical,stress); BENCH_PROFILE_DIR writes a CPU profile of the server there.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHORUS_CLI } from './chorus-cli.js';
import mqtt, { type MqttClient } from 'mqtt';
import { signToken } from '../auth/token-verifier.js';
import { seqOfPayload } from '../broker/group-delivery.js';
import { loadConfig } from '../config/config.js';
import { freePort } from './free-port.js';
import { env } from './env-number.js';
import { cpuSeconds } from './process-usage.js';

const ROUNDS = env('BENCH_LIVE_ROUNDS', 5);
const PHASE_MS = env('BENCH_LIVE_PHASE_MS', 8000);
const GROUPS = env('BENCH_LIVE_GROUPS', 10);
const MEMBERS = env('BENCH_LIVE_MEMBERS', 20);
const WINDOW = env('BENCH_LIVE_WINDOW', 16);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const [mqttPort, httpPort] = [await freePort(), await freePort()];
const settings = {
  CHORUS_DATA_DIR: mkdtempSync(join(tmpdir(), 'chorus-bench-live-')),
  CHORUS_MQTT_PORT: String(mqttPort),
  CHORUS_HTTP_PORT: String(httpPort),
  CHORUS_LOG_LEVEL: 'error',
  CHORUS_MQTT_PUBLISH_RATE: '1000000',
  CHORUS_RATE_LIMIT_PER_MINUTE: '1000000',
  // The load generator is one address: the per-address cap before login would refuse its connect burst.
  CHORUS_MAX_UNAUTHENTICATED_PER_ADDRESS: '100000',
};
const profile = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];
const server = spawn(process.execPath, [...profile, CHORUS_CLI, 'serve'], {
  env: { ...process.env, ...settings },
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise<void>((resolve) =>
  server.stdout!.on('data', (d: Buffer) => d.toString().includes('Chorus is running') && resolve()),
);
const config = loadConfig(settings);
/** The server's CPU time so far, in seconds. */
const serverCpuSeconds = () => cpuSeconds(server.pid!);
const tokens = new Map<string, string>();
const token = async (userId: string) =>
  tokens.get(userId) ?? tokens.set(userId, await signToken(config, userId, 3600)).get(userId)!;
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
  const { id: groupId } = await rest(userIds[0]!, 'POST', '/v1/groups', {
    name: `bench ${g}`,
    members: userIds.slice(1),
  });
  for (const userId of userIds) {
    const client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, {
      username: userId,
      password: await token(userId),
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
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
      await publisher.client.publishAsync(
        `groups/${publisher.groupId}/messages`,
        JSON.stringify({ clientMsgId: `${lane}-${i}-${Date.now()}`, body: 'hello, group' }),
        { qos: 1 },
      );
    }
  }),
);

type Chatter = 'none' | 'typical' | 'stress';
/** BENCH_LIVE_PHASES (e.g. "none,typical") runs only those, for profiling one kind of phase. */
const PHASES = (process.env.BENCH_LIVE_PHASES ?? 'none,typical,stress').split(',') as Chatter[];
const TYPERS_PER_GROUP = 3;
/** Each member ticks once a second (spread over the second): it marks read and types as the phase has it. */
let chatter: Chatter = 'none';
const chatterLoops = members.map(async (member, i) => {
  const index = Number(member.userId.split('m').pop());
  await sleep((i * 1000) / members.length);
  for (let tick = 0; running; tick++) {
    const reads = chatter === 'stress' || (chatter === 'typical' && tick % 2 === 0);
    const types =
      tick % 2 === 0 && (chatter === 'stress' || (chatter === 'typical' && index > 0 && index <= TYPERS_PER_GROUP));
    // As the SDK's markRead does while connected: a QoS 1 publish on the open connection.
    if (reads && member.seen > 0)
      member.client.publish(`groups/${member.groupId}/read`, JSON.stringify({ seq: member.seen }), { qos: 1 });
    if (types) member.client.publish(`groups/${member.groupId}/typing`, '', { qos: 0 });
    await sleep(1000);
  }
});

const phases: { chatter: Chatter; perSec: number; cpuUsPerDelivery: number; events: typeof liveEvents }[] = [];
await sleep(3000); // warm-up
for (let round = 1; round <= ROUNDS; round++) {
  // Every other round runs the phases backwards, so that a drift over the run (the log grows) favours none of them.
  for (const on of round % 2 === 1 ? PHASES : [...PHASES].reverse()) {
    chatter = on;
    await sleep(1500); // let the switch take effect
    const before = deliveries;
    const cpuBefore = serverCpuSeconds();
    const eventsBefore = { ...liveEvents };
    await sleep(PHASE_MS);
    const events = {
      read: liveEvents.read - eventsBefore.read,
      typing: liveEvents.typing - eventsBefore.typing,
      delivered: liveEvents.delivered - eventsBefore.delivered,
    };
    const delivered = deliveries - before;
    const phase = {
      chatter: on,
      perSec: (delivered * 1000) / PHASE_MS,
      cpuUsPerDelivery: ((serverCpuSeconds() - cpuBefore) * 1e6) / delivered,
      events,
    };
    phases.push(phase);
    console.log(
      `round ${round} ${on === 'none' ? 'without chatter' : `${on} chatter`}: ${phase.perSec.toFixed(0)} deliveries/s, server CPU ${phase.cpuUsPerDelivery.toFixed(1)} µs per delivery; events received: ${events.read} read, ${events.typing} typing, ${events.delivered} delivered`,
    );
  }
}
running = false;
await Promise.race([Promise.all([...lanes, ...chatterLoops]), sleep(5000)]);
const summary = (on: Chatter) => {
  const ps = phases.filter((p) => p.chatter === on);
  const perSec = median(ps.map((p) => p.perSec));
  const events = median(ps.map((p) => (p.events.read + p.events.typing) / (PHASE_MS / 1000)));
  return { perSec, cpu: median(ps.map((p) => p.cpuUsPerDelivery)), events };
};
const off = summary('none');
console.log(`\nread receipts and typing, ${GROUPS} groups of ${MEMBERS} (medians of ${ROUNDS} rounds):`);
console.log('| chatter | read + typing events/s | message deliveries/s | ratio | server CPU per delivery | ratio |');
console.log('|---|---|---|---|---|---|');
for (const on of PHASES) {
  const r = summary(on);
  console.log(
    `| ${on} | ${r.events.toFixed(0)} | ${r.perSec.toFixed(0)} | ${(r.perSec / off.perSec).toFixed(2)}x | ${r.cpu.toFixed(1)} µs | ${(r.cpu / off.cpu).toFixed(2)}x |`,
  );
}
console.log('target: typical chatter keeps message throughput >= 0.90x of none');
await Promise.all(members.map((m) => m.client.endAsync(true)));
server.kill('SIGTERM');
await new Promise((resolve) => server.once('exit', resolve));
