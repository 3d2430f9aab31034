/**
 * The servers the benches compare, each started in a process of its own on a free loopback port, with the members a
 * load generator connects as: Mosquitto (when installed), bare Aedes (bench/bare-aedes.ts) and Chorus on its embedded
 * defaults. BENCH_PROFILE_DIR writes CPU profiles of the Node servers there; BENCH_HEAP=1 has them take heap snapshots.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signToken } from '../auth/token-verifier.js';
import { loadConfig } from '../config/config.js';
import { CHORUS_CLI } from './chorus-cli.js';
import { freePort } from './free-port.js';
import type { Member } from './groups-loadgen.js';
import { LiveHeap } from './live-heap.js';
import { waitForLine } from './wait-for-line.js';

const here = new URL('.', import.meta.url).pathname;
/** BENCH_HEAP=1: the Node servers' live heap (from heap snapshots) before and after each connect step, per connection. */
export const HEAP = process.env.BENCH_HEAP === '1';

export interface Server {
  child: ChildProcess;
  /** Set for Node servers in BENCH_HEAP mode. */
  heap?: LiveHeap;
  /** Topics and credentials for `groups` groups of the given sizes. */
  members(sizes: number[], persistent: boolean): Promise<Member[]>;
}

export interface Target {
  name: string;
  start(): Promise<Server & { port: number }>;
}

/** Node's flags that write a CPU profile of a server process into BENCH_PROFILE_DIR when it is set. */
const profileArgs = () =>
  process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];

/** Members of anonymous brokers: any user name, a topic per group. */
const plainMembers = async (sizes: number[], persistent: boolean): Promise<Member[]> =>
  sizes.flatMap((size, g) =>
    Array.from({ length: size }, (_, i) => ({
      username: `u${g}-${i}`,
      password: 'x',
      clientId: `c${g}-${i}${persistent ? '-p' : ''}`,
      topics: [`groups/g${g}/messages`],
    })),
  );

/** Debian's broker, which lives in /usr/sbin (not on every user's PATH); '' when it is not installed. */
export const MOSQUITTO = spawnSync('sh', ['-c', 'PATH="$PATH:/usr/sbin" command -v mosquitto'])
  .stdout.toString()
  .trim();

export const mosquitto: Target = {
  name: 'Mosquitto',
  async start() {
    const port = await freePort();
    const file = join(mkdtempSync(join(tmpdir(), 'chorus-bench-mosquitto-')), 'mosquitto.conf');
    writeFileSync(
      file,
      `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000\nlog_type error\n`,
    );
    const child = spawn(MOSQUITTO, ['-c', file], { stdio: 'ignore' }); // its log, unread, would fill a pipe and stop it
    await waitUntilListening(port);
    return { child, port, members: plainMembers };
  },
};

export const bareAedes: Target = {
  name: 'bare Aedes',
  async start() {
    const port = await freePort();
    const heap = HEAP ? new LiveHeap() : undefined;
    const child = spawn(
      process.execPath,
      [...profileArgs(), ...(heap ? LiveHeap.flags : []), join(here, 'bare-aedes.js'), String(port)],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        ...(heap ? { cwd: heap.dir } : {}),
      },
    );
    await waitForLine(child, 'ready');
    return { child, port, members: plainMembers, ...(heap ? { heap } : {}) };
  },
};

/** Chorus on its embedded defaults (SQLite log), started from a built `chorus` command: this build's unless given. */
export const chorusTarget = (cli = CHORUS_CLI, name = 'Chorus (SQLite)'): Target => ({
  name,
  async start() {
    const [port, httpPort] = [await freePort(), await freePort()];
    const settings = {
      CHORUS_DATA_DIR: mkdtempSync(join(tmpdir(), 'chorus-bench-groups-')),
      CHORUS_MQTT_PORT: String(port),
      CHORUS_HTTP_PORT: String(httpPort),
      CHORUS_LOG_LEVEL: 'error',
      CHORUS_MAX_CONNECTIONS: '100000',
      // The load generator is one address: the per-address cap before login would refuse its connect bursts.
      CHORUS_MAX_UNAUTHENTICATED_PER_ADDRESS: '100000',
      CHORUS_RATE_LIMIT_PER_MINUTE: '10000000',
    };
    const heap = HEAP ? new LiveHeap() : undefined;
    const child = spawn(process.execPath, [...profileArgs(), ...(heap ? LiveHeap.flags : []), cli, 'serve'], {
      env: { ...process.env, ...settings },
      stdio: ['ignore', 'pipe', 'inherit'],
      ...(heap ? { cwd: heap.dir } : {}),
    });
    await waitForLine(child, 'Chorus is running');
    const config = loadConfig(settings);
    const api = async (admin: string, method: string, path: string, body: unknown) => {
      const res = await fetch(`http://127.0.0.1:${httpPort}/v1${path}`, {
        method,
        headers: {
          authorization: `Bearer ${await signToken(config, admin, 7200)}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as { id: string };
    };
    return {
      child,
      port,
      ...(heap ? { heap } : {}),
      async members(sizes, persistent) {
        const members: Member[] = [];
        for (const [g, size] of sizes.entries()) {
          const users = Array.from({ length: size }, (_, i) => `u${g}-${i}`);
          const admin = users[0]!;
          const { id } = await api(admin, 'POST', '/groups', { name: `g${g}`, members: users.slice(1, 1000) });
          for (let i = 1000; i < users.length; i += 50) {
            await Promise.all(
              users.slice(i, i + 50).map((userId) => api(admin, 'POST', `/groups/${id}/members`, { userId })),
            );
          }
          for (const userId of users) {
            members.push({
              username: userId,
              password: await signToken(config, userId, 7200),
              clientId: `${userId}${persistent ? '-p' : ''}`,
              topics: [`groups/${id}/messages`],
            });
          }
        }
        return members;
      },
    };
  },
});

async function waitUntilListening(port: number): Promise<void> {
  const { connect } = await import('node:net');
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => resolve(true)).on('error', () => resolve(false));
      socket.once('connect', () => socket.destroy());
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`nothing listens on ${port}`);
}
