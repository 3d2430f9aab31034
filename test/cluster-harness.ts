import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { signToken } from '../auth/token-verifier.js';
import { ChorusClient } from '../clients/chorus-client.js';
import { loadConfig } from '../config/config.js';
import { freePort, tempDir } from './harness.js';
import { cassandraContactPoint, redisUrl, testKeyspace } from './services.js';

const CLI = new URL('../dist/server/cli.js', import.meta.url).pathname;
const SECRET = 'cluster-test-secret-cluster-test-secret-0123456789';

type Role = 'all' | 'broker' | 'api';

/** The last lines of a node's log kept in memory, for a failed test to print (the processes leave no files). */
const MAX_LOG_LINES = 300;

export class ClusterNode {
  child: ChildProcess | null = null;
  private readonly logLines: string[] = [];
  constructor(
    readonly name: string,
    readonly role: Role,
    readonly mqttPort: number,
    readonly httpPort: number,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  get mqttUrl(): string {
    return `mqtt://127.0.0.1:${this.mqttPort}`;
  }
  get httpUrl(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [CLI, 'serve'], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.logLines.push(`--- started (pid ${child.pid}) at ${new Date().toISOString()}`);
    const keep = (stream: NodeJS.ReadableStream) => {
      let partial = '';
      stream.on('data', (d: Buffer) => {
        const lines = (partial + d.toString()).split('\n');
        partial = lines.pop()!;
        this.logLines.push(...lines);
        if (this.logLines.length > MAX_LOG_LINES) this.logLines.splice(0, this.logLines.length - MAX_LOG_LINES);
      });
    };
    keep(child.stdout!);
    keep(child.stderr!);
    child.once('exit', (code, signal) =>
      this.logLines.push(`--- exited (code ${code}, signal ${signal}) at ${new Date().toISOString()}`),
    );
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not start:\n${this.logTail()}`)), 60_000);
      const started = (d: Buffer) => {
        if (!d.toString().includes('Chorus is running')) return;
        clearTimeout(timer);
        child.stdout!.off('data', started);
        resolve();
      };
      child.stdout!.on('data', started);
      child.once('exit', (code) => reject(new Error(`${this.name} exited with ${code}:\n${this.logTail()}`)));
    });
  }

  /** The node's last log lines (stdout and stderr, across its restarts). */
  logTail(): string {
    return this.logLines.join('\n');
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
    this.child = null;
  }
}

/** Several Chorus processes sharing the real Redis and a fresh Cassandra keyspace. */
export class Cluster {
  readonly nodes: ClusterNode[] = [];

  constructor(
    readonly keyspace = testKeyspace(),
    private readonly settings: NodeJS.ProcessEnv = {},
  ) {}

  private readonly config = loadConfig({ CHORUS_JWT_SECRET: SECRET });

  async add(name: string, role: Role): Promise<ClusterNode> {
    if (!existsSync(CLI)) throw new Error('run `npm run build` first (npm test does)');
    const [mqttPort, httpPort] = [await freePort(), await freePort()];
    const env = {
      ...process.env,
      CHORUS_ROLE: role,
      CHORUS_STORE: 'cassandra',
      CHORUS_NODE_ID: name,
      CHORUS_REDIS_URL: redisUrl,
      CHORUS_CASSANDRA_CONTACT_POINTS: cassandraContactPoint,
      CHORUS_CASSANDRA_KEYSPACE: this.keyspace,
      CHORUS_JWT_SECRET: SECRET,
      CHORUS_MQTT_PORT: String(mqttPort),
      CHORUS_HTTP_PORT: String(httpPort),
      CHORUS_DATA_DIR: tempDir(),
      // Debug: a failing test prints each node's last lines, which then say why (a live event not told, a client error).
      CHORUS_LOG_LEVEL: 'debug',
      // No drain before closing unless a test asks for one (behind a load balancer): a restart is a restart at once.
      CHORUS_DRAIN_MS: '0',
      ...this.settings,
    };
    const node = new ClusterNode(name, role, mqttPort, httpPort, env);
    await node.start();
    this.nodes.push(node);
    return node;
  }

  /** Starts nodes of one role: the first alone (it creates the keyspace and tables), then the others together. */
  async addAll(names: string[], role: Role): Promise<ClusterNode[]> {
    const first = await this.add(names[0]!, role);
    return [first, ...(await Promise.all(names.slice(1).map((name) => this.add(name, role))))];
  }

  token(userId: string): Promise<string> {
    return signToken(this.config, userId, 3600);
  }

  async api<T = any>(
    node: ClusterNode,
    userId: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T; headers: Headers }> {
    const res = await fetch(`${node.httpUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${await this.token(userId)}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
  }

  async client(userId: string, nodes: ClusterNode[], apiNode: ClusterNode): Promise<ChorusClient> {
    return ChorusClient.connect({
      mqttUrl: nodes.map((n) => n.mqttUrl),
      apiUrl: apiNode.httpUrl,
      userId,
      token: await this.token(userId),
      sendTimeoutMs: 3000,
      mqttOptions: { reconnectPeriod: 200 },
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop('SIGKILL')));
  }

  /** Every node's last log lines, for a failed test to print. */
  logTails(): string {
    return this.nodes.map((n) => `=== ${n.name} (${n.role})\n${n.logTail()}`).join('\n');
  }
}
