import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { pino } from 'pino';
import { signToken } from '../auth/token-verifier.js';
import { loadConfig, type ChorusConfig } from '../config/config.js';
import { startChorus, type ChorusBackends, type RunningChorus } from '../server/start.js';
import { ChorusClient } from '../clients/chorus-client.js';
import type { PositionStore } from '../clients/position-store.js';
import type { StampedMessage } from '../protocol/index.js';
import type { GroupAppend, MessageLog } from '../sequencer/message-log.js';

/** A real message log seen through a wrapper: subclasses change append, everything else goes to the log itself. */
export class WrappedLog implements MessageLog {
  constructor(protected readonly inner: MessageLog) {}
  append(batch: GroupAppend[]) {
    return this.inner.append(batch);
  }
  readAfter(groupId: string, afterSeq: number, limit: number) {
    return this.inner.readAfter(groupId, afterSeq, limit);
  }
  readBefore(groupId: string, beforeSeq: number, limit: number) {
    return this.inner.readBefore(groupId, beforeSeq, limit);
  }
  lastSeq(groupId: string) {
    return this.inner.lastSeq(groupId);
  }
  firstSeq(groupId: string) {
    return this.inner.firstSeq(groupId);
  }
  reactions(groupId: string, seqs: number[], viewerId: string) {
    return this.inner.reactions(groupId, seqs, viewerId);
  }
  deleteGroup(groupId: string) {
    return this.inner.deleteGroup(groupId);
  }
  close() {
    return this.inner.close();
  }
}

/** The real SQLite log, whose appends wait until the gate opens (or fail while it is set to fail). */
export class GatedLog extends WrappedLog {
  private opened: Promise<void> = Promise.resolve();
  private open: () => void = () => {};
  failing = false;
  /** Stores the next append, then reports it failed (a timeout after the write landed). */
  failAfterStoring = false;
  appendCalls = 0;

  shut(): void {
    this.opened = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.open();
  }

  override async append(batch: GroupAppend[]) {
    this.appendCalls += 1;
    await this.opened;
    if (this.failing) throw new Error('disk unavailable');
    const outcomes = await this.inner.append(batch);
    if (this.failAfterStoring) {
      this.failAfterStoring = false;
      throw new Error('timed out after the write');
    }
    return outcomes;
  }
}

export const tempDir = (prefix = 'chorus-test-'): string => mkdtempSync(join(tmpdir(), prefix));

/** A real Chorus on loopback, on free ports, with its data in a fresh temp dir. */
export class TestChorus {
  private constructor(
    readonly chorus: RunningChorus,
    readonly config: ChorusConfig,
  ) {}

  static async start(overrides: Partial<ChorusConfig> = {}, backends: ChorusBackends = {}): Promise<TestChorus> {
    const config = loadConfig(
      {},
      { host: '127.0.0.1', mqttPort: 0, httpPort: 0, dataDir: tempDir(), logLevel: 'silent', drainMs: 0, ...overrides },
    );
    return new TestChorus(await startChorus(config, { logger: pino({ level: config.logLevel }), ...backends }), config);
  }

  token(userId: string, ttlSeconds = 3600): Promise<string> {
    return signToken(this.config, userId, ttlSeconds);
  }

  /** Calls the REST API as `userId`; resolves with status and parsed body. */
  async api<T = any>(
    userId: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.chorus.urls.http}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${await this.token(userId)}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  /** Creates a group as `admin` with these other members; returns its id. */
  async group(admin: string, members: string[] = []): Promise<string> {
    const res = await this.api(admin, 'POST', '/v1/groups', { name: 'test group', members });
    if (res.status !== 201) throw new Error(`create group: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.id as string;
  }

  /** A raw MQTT.js client connected as `userId` (over TCP, or WebSocket with transport 'ws'; MQTT 3.1.1 unless asked). */
  async mqtt(
    userId: string,
    options: { transport?: 'tcp' | 'ws'; clientId?: string; protocolVersion?: 4 | 5; mqtt?: IClientOptions } = {},
  ): Promise<MqttClient> {
    const url = options.transport === 'ws' ? this.chorus.urls.ws : this.chorus.urls.mqtt;
    const client = mqtt.connect(url, {
      username: userId,
      password: await this.token(userId),
      clientId: options.clientId ?? `${userId}-${Math.random().toString(36).slice(2)}`,
      reconnectPeriod: 0,
      protocolVersion: options.protocolVersion ?? 4,
      ...options.mqtt,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
    return client;
  }

  /** A raw MQTT.js client with a persistent session (CleanSession=0) under a fixed client id. */
  async mqttSession(userId: string, clientId: string): Promise<MqttClient> {
    const client = mqtt.connect(this.chorus.urls.mqtt, {
      username: userId,
      password: await this.token(userId),
      clientId,
      clean: false,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    return client;
  }

  close(): Promise<void> {
    return this.chorus.close();
  }
}

/** The CONNECT a raw MQTT 3.1.1 client sends, clean session: for tests that decide how their packets fall into writes. */
export function connectPacket(login: {
  userId: string;
  password: string;
  clientId: string;
  keepalive: number;
}): Buffer {
  return mqttPacket.generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId: login.clientId,
    keepalive: login.keepalive,
    username: login.userId,
    password: Buffer.from(login.password),
  });
}

/** A counter or gauge from the node's /metrics, summed over its labels (0 when absent). */
export async function metric(t: TestChorus, name: string): Promise<number> {
  const text = await (await fetch(`${t.chorus.urls.http}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

/** Collects JSON messages arriving on a client, by topic. */
export function collect(client: MqttClient): { all: { topic: string; body: any }[]; on: (topic: string) => any[] } {
  const all: { topic: string; body: any }[] = [];
  client.on('message', (topic, payload) => all.push({ topic, body: JSON.parse(payload.toString()) }));
  return { all, on: (topic) => all.filter((m) => m.topic === topic).map((m) => m.body) };
}

/** Waits until `predicate` holds, polling; fails with `what` after timeoutMs. */
export async function until(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** An SDK client connected as `userId`, over TCP or WebSocket. */
export async function sdkClient(
  t: TestChorus,
  userId: string,
  options: {
    transport?: 'tcp' | 'ws';
    positions?: PositionStore;
    clientId?: string;
    sendTimeoutMs?: number;
    protocolVersion?: 4 | 5;
  } = {},
): Promise<ChorusClient> {
  return ChorusClient.connect({
    mqttUrl: options.transport === 'ws' ? t.chorus.urls.ws : t.chorus.urls.mqtt,
    apiUrl: t.chorus.urls.http,
    userId,
    token: await t.token(userId),
    ...(options.positions ? { positions: options.positions } : {}),
    ...(options.clientId ? { clientId: options.clientId } : {}),
    ...(options.sendTimeoutMs ? { sendTimeoutMs: options.sendTimeoutMs } : {}),
    ...(options.protocolVersion ? { protocolVersion: options.protocolVersion } : {}),
    mqttOptions: { reconnectPeriod: 200 },
  });
}

/** Records what an SDK client delivers, per group. */
export function deliveries(client: ChorusClient): Map<string, StampedMessage[]> {
  const byGroup = new Map<string, StampedMessage[]>();
  client.on('message', (m) => {
    const list = byGroup.get(m.groupId) ?? [];
    list.push(m);
    byGroup.set(m.groupId, list);
  });
  return byGroup;
}

/** The SUBACK return codes for subscribing `client` to `topics` (0x80 = refused). */
export async function subscribeCodes(client: MqttClient, topics: string[]): Promise<number[]> {
  try {
    return (await client.subscribeAsync(topics, { qos: 1 })).map((g) => g.qos);
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted;
    if (!granted) throw err;
    return granted;
  }
}

/**
 * The kernel's ephemeral ports (what bind(0) and every outgoing connection get): a port picked from them and released
 * can be taken by another test's client before a server binds it (seen: EADDRINUSE when a `chorus serve` started).
 */
const EPHEMERAL_FROM = Number(
  /^(\d+)/.exec(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8'))?.[1] ?? 32768,
);
const FIXED_PORTS_FROM = 20_000;
/** Where the ephemeral range starts lower than usual (32768), the ports overlap it and the race is back, rarely. */
const FIXED_PORTS_TO = Math.max(EPHEMERAL_FROM, FIXED_PORTS_FROM + 1000);

/** Ports freePort has handed out in this process: a cluster takes all its nodes' ports before starting any. */
const handedOut = new Set<number>();

/**
 * A port that was free a moment ago, for a server that must be started again on the same one: tried at random below
 * the ephemeral range, where only explicit binds land, and never one this process was given before (two picks of one
 * cluster, both free until its nodes start, could otherwise be the same: EADDRINUSE at the second node's start).
 */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  for (;;) {
    const port = FIXED_PORTS_FROM + Math.floor(Math.random() * (FIXED_PORTS_TO - FIXED_PORTS_FROM));
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
}

export const CLI = new URL('../dist/server/cli.js', import.meta.url).pathname;

/**
 * `chorus serve` as its own process, on fixed ports and a data dir of its own, started again on the same ones after a
 * kill or a stop. Each started child is pushed to `children`, for the caller to kill after the tests. `api` calls the
 * REST API as alice.
 */
export async function serveProcess(children: ChildProcess[]) {
  if (!existsSync(CLI)) throw new Error('run `npm run build` first (npm test does)');
  const dataDir = tempDir();
  const [mqttPort, httpPort] = [await freePort(), await freePort()];
  const env = {
    ...process.env,
    CHORUS_DATA_DIR: dataDir,
    CHORUS_MQTT_PORT: String(mqttPort),
    CHORUS_HTTP_PORT: String(httpPort),
    CHORUS_LOG_LEVEL: 'warn',
    // Thousands of its clients connect at once, all from loopback: one address, so no per-address cap before login.
    CHORUS_MAX_UNAUTHENTICATED_PER_ADDRESS: '1000000',
    CHORUS_DRAIN_MS: '0', // nothing balances load in front of it
  };
  const start = async () => {
    const child = spawn(process.execPath, [CLI, 'serve'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('Chorus is running') && resolve());
      child.once('exit', (code) => reject(new Error(`chorus exited with ${code}`)));
    });
    return child;
  };
  const config = loadConfig({ CHORUS_DATA_DIR: dataDir });
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${httpPort}${path}`, {
      method,
      headers: { authorization: `Bearer ${await signToken(config, 'alice', 600)}`, 'content-type': 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
    });
    return (await res.json()) as any;
  };
  return { start, api, config, mqttPort, httpPort };
}
