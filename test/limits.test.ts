import { readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { TCP_KEEPALIVE_IDLE_MS } from '../broker/admission.js';
import { TestChorus, connectPacket, metric, until } from './harness.js';

/** Resolves when the socket is closed by the other side; `false` if it is still open after `ms`. */
const closedWithin = (socket: Socket | WebSocket, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });

/** A TCP connection to the MQTT port that sends nothing. */
const openIdle = async (port: number): Promise<Socket> => {
  const socket = tcpConnect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  return socket;
};

describe('per-connection publish rate', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ mqttPublishRate: 20, sqliteSynchronous: 'normal' });
  });
  afterAll(async () => {
    await t.close();
  });

  it('paces a connection over its rate without dropping anything, while another connection is served at once', async () => {
    const groupId = await t.group('alice', ['bob']);
    const alice = await t.mqtt('alice');
    const bob = await t.mqtt('bob');
    const started = performance.now();
    let aliceDone = 0;
    const burst = Array.from({ length: 60 }, (_, i) =>
      alice
        .publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: `a${i}`, body: 'x' }), { qos: 1 })
        .then(() => {
          aliceDone += 1;
        }),
    );
    await until(() => aliceDone >= 20, 'the first burst');
    await bob.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'b', body: 'y' }), { qos: 1 });
    expect(aliceDone).toBeLessThan(60); // bob did not wait behind alice's backlog
    await Promise.all(burst);
    // 20 at once, then 20 a second: the last 40 take at least 2 s (less a little for timer slack).
    expect(performance.now() - started).toBeGreaterThan(1800);
    const stored = await t.api('alice', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0&limit=100`);
    expect(stored.body.messages).toHaveLength(61);
    expect(await metric(t, 'chorus_mqtt_throttled_publishes_total')).toBeGreaterThanOrEqual(35);
    await Promise.all([alice.endAsync(), bob.endAsync()]);
  });
});

describe('failed logins and unauthenticated connections are bounded', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ authFailuresPerMinute: 3, maxUnauthenticatedConnections: 2 });
  });
  afterAll(async () => {
    await t.close();
  });

  const connackCode = async (password: string): Promise<number> => {
    const client = mqtt.connect(t.chorus.urls.mqtt, {
      username: 'alice',
      password,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    const code = await new Promise<number>((resolve) => {
      client.once('connect', () => resolve(0));
      client.once('error', (err) => resolve((err as { code?: number }).code ?? -1));
    });
    client.end(true);
    return code;
  };

  it('slows and refuses the failures of an address that failed too often, never a valid token from it (MQTT and REST)', async () => {
    for (let i = 0; i < 3; i++) expect(await connackCode('not a token')).toBe(4);
    // Over its budget: the attacker's next try waits, then hears "server unavailable: come back later".
    const started = performance.now();
    expect(await connackCode('not a token')).toBe(3);
    expect(performance.now() - started).toBeGreaterThan(900);
    expect(await metric(t, 'chorus_mqtt_refused_connections_total')).toBe(1);
    // A valid client behind the same address (a NAT, a proxy) gets in at once, over MQTT and REST.
    const validStarted = performance.now();
    expect(await connackCode(await t.token('alice'))).toBe(0);
    expect(performance.now() - validStarted).toBeLessThan(900);
    expect((await t.api('alice', 'GET', '/v1/groups')).status).toBe(200);
    const refused = await fetch(`${t.chorus.urls.http}/v1/groups`, {
      headers: { authorization: 'Bearer not-a-token' },
    });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { code: string }).code).toBe('RATE_LIMITED');
  });
});

describe('one address cannot take the pre-login pool', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ maxUnauthenticatedPerAddress: 50 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('serves another client at once while one address holds 2,000 idle sockets, refusing that address past its cap', async () => {
    // The attacker connects from 127.0.0.2 (any 127/8 address is this machine), the valid client from 127.0.0.1.
    const idle: Socket[] = [];
    await Promise.all(
      Array.from({ length: 2000 }, async () => {
        const socket = tcpConnect({ port: t.chorus.mqttPort, host: '127.0.0.1', localAddress: '127.0.0.2' });
        socket.on('error', () => undefined);
        idle.push(socket);
        await new Promise((resolve) => socket.once('connect', resolve));
      }),
    );
    await until(
      async () => (await metric(t, 'chorus_mqtt_refused_connections_total')) >= 1950,
      'the sockets past the per-address cap to be refused',
    );
    const started = performance.now();
    const client = await mqtt.connectAsync(t.chorus.urls.mqtt, {
      username: 'alice',
      password: await t.token('alice'),
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    const tookMs = performance.now() - started;
    // Under 100 ms on an idle machine. Without the per-address cap it waits for a place behind the idle sockets, which
    // are closed only after PRESSED_CONNECT_DEADLINE_MS (2 s), or is refused: a second tells the two apart on a busy one.
    expect(tookMs).toBeLessThan(1000);
    expect(idle.filter((socket) => !socket.destroyed && socket.readyState === 'open').length).toBeLessThanOrEqual(50);
    await client.endAsync();
    for (const socket of idle) socket.destroy();
  });
});

describe('connections waiting to authenticate are bounded', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ maxUnauthenticatedConnections: 2, maxWaitingConnections: 1 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('lets a connection wait while too many have not authenticated, serves it when one leaves, and closes one beyond maxWaitingConnections at once', async () => {
    const open = () => openIdle(t.chorus.mqttPort);
    const idle = [await open(), await open()];
    const waiting = mqtt.connect(t.chorus.urls.mqtt, {
      username: 'alice',
      password: await t.token('alice'),
      reconnectPeriod: 0,
      protocolVersion: 4,
      connectTimeout: 20_000,
    });
    const connected = new Promise<boolean>((resolve) => {
      waiting.once('connect', () => resolve(true));
      waiting.once('close', () => resolve(false));
    });
    await until(async () => (await metric(t, 'chorus_mqtt_waiting_connections')) === 1, 'the third connection waits');
    const fourth = await open();
    expect(await closedWithin(fourth, 5000)).toBe(true);
    expect(await metric(t, 'chorus_mqtt_refused_connections_total')).toBe(1);
    expect(waiting.connected).toBe(false); // unread while it waits
    idle[0]!.destroy();
    expect(await connected).toBe(true);
    expect(await closedWithin(idle[1]!, 300)).toBe(false); // those already served keep their connect timeout
    idle[1]!.destroy();
    await waiting.endAsync();
  });
});

/**
 * The kernel's timers on the broker's ends of loopback connections to `serverPort`, from /proc/net/tcp: for each
 * established one, by the client's port, the timer's kind (0 none, 2 keepalive or delayed ACK) and its seconds left.
 */
const brokerSideTimers = (serverPort: number): Map<number, { kind: number; seconds: number }> => {
  const timers = new Map<number, { kind: number; seconds: number }>();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const [, local, remote, state, , timer] = line.trim().split(/\s+/);
    if (!local || !remote || !timer || state !== '01') continue; // 01: ESTABLISHED
    if (Number.parseInt(local.split(':')[1]!, 16) !== serverPort) continue;
    const [kind, when] = timer.split(':');
    // Seconds left, in the kernel's USER_HZ ticks (100 a second).
    timers.set(Number.parseInt(remote.split(':')[1]!, 16), {
      kind: Number.parseInt(kind!, 16),
      seconds: Number.parseInt(when!, 16) / 100,
    });
  }
  return timers;
};

describe('clients that turn MQTT keep alive off', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start();
  });
  afterAll(async () => {
    await t.close();
  });

  it('are still probed by TCP keepalive, over TCP and WebSocket, so one that vanishes without a FIN is found', async () => {
    const mqttPort = Number(new URL(t.chorus.urls.mqtt).port);
    const httpPort = Number(new URL(t.chorus.urls.http).port);
    const overTcp = await t.mqtt('alice', { mqtt: { keepalive: 0 } });
    const tcpClientPort = (overTcp.stream as Socket).localPort!;
    const before = new Set(brokerSideTimers(httpPort).keys()); // the REST calls' connections
    const overWs = await t.mqtt('bob', { transport: 'ws', mqtt: { keepalive: 0 } });
    await sleep(500); // past any delayed ACK: what is left on an idle connection is the keepalive timer
    const wsClientPorts = [...brokerSideTimers(httpPort).keys()].filter((port) => !before.has(port));
    expect(wsClientPorts).toHaveLength(1);
    for (const timer of [
      brokerSideTimers(mqttPort).get(tcpClientPort),
      brokerSideTimers(httpPort).get(wsClientPorts[0]!),
    ]) {
      expect(timer?.kind).toBe(2);
      expect(timer?.seconds).toBeGreaterThan(TCP_KEEPALIVE_IDLE_MS / 1000 - 10);
      expect(timer?.seconds).toBeLessThanOrEqual(TCP_KEEPALIVE_IDLE_MS / 1000);
    }
    await Promise.all([overTcp.endAsync(), overWs.endAsync()]);
  });
});

describe('maxPacketBytes over WebSocket', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ maxPacketBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('closes a connection whose first packet announces more than maxPacketBytes, before buffering it', async () => {
    const ws = new WebSocket(t.chorus.urls.ws, 'mqtt');
    await new Promise((resolve) => ws.once('open', resolve));
    // A CONNECT whose Remaining Length says 100 MB, sent as a small WebSocket message: only the header tells.
    ws.send(Buffer.from([0x10, 0x80, 0xc2, 0xd7, 0x2f]));
    ws.send(Buffer.alloc(1024));
    expect(await closedWithin(ws, 5000)).toBe(true);
  });

  it('closes an authenticated connection that starts a packet over maxPacketBytes across many WebSocket messages', async () => {
    const groupId = await t.group('alice');
    const alice = await t.mqtt('alice', { transport: 'ws' });
    const closed = new Promise<void>((resolve) => alice.once('close', () => resolve()));
    alice.publish(`groups/${groupId}/messages`, Buffer.alloc(100 * 1024, 0x20), { qos: 0 });
    await closed;
    expect(alice.connected).toBe(false);
  });
});

describe('behind a trusted load balancer (PROXY protocol)', () => {
  let t: TestChorus;
  beforeAll(async () => {
    // 127.0.0.3 plays HAProxy with send-proxy: it passes each client's address before the client's bytes.
    t = await TestChorus.start({ trustedProxies: '127.0.0.3', maxUnauthenticatedPerAddress: 2 });
  });
  afterAll(async () => {
    await t.close();
  });

  /** A connection from `from` that writes `header` first; resolves when the server closes it, or false after `ms`. */
  const proxied = async (from: string, header: Buffer | string, ms = 1500) => {
    const socket = tcpConnect({ port: t.chorus.mqttPort, host: '127.0.0.1', localAddress: from });
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(header);
    return { socket, closed: closedWithin(socket, ms) };
  };
  const v2Header = (client: string) => {
    const header = Buffer.alloc(28);
    Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]).copy(header);
    header.writeUInt8(0x21, 12); // version 2, PROXY
    header.writeUInt8(0x11, 13); // TCP over IPv4
    header.writeUInt16BE(12, 14);
    Buffer.from(client.split('.').map(Number)).copy(header, 16);
    Buffer.from([127, 0, 0, 1]).copy(header, 20);
    header.writeUInt16BE(40_000, 24);
    header.writeUInt16BE(1883, 26);
    return header;
  };

  it('counts each client under the address the proxy passes (v1 and v2), and logs in those it passes', async () => {
    const attacker = '203.0.113.7';
    const held = [
      await proxied('127.0.0.3', `PROXY TCP4 ${attacker} 127.0.0.1 40001 1883\r\n`),
      await proxied('127.0.0.3', v2Header(attacker)),
    ];
    const third = await proxied('127.0.0.3', `PROXY TCP4 ${attacker} 127.0.0.1 40003 1883\r\n`);
    expect(await third.closed).toBe(true); // over maxUnauthenticatedPerAddress for 203.0.113.7
    for (const { closed } of held) expect(await Promise.race([closed, sleep(200).then(() => false)])).toBe(false);
    // Another client through the same proxy logs in: the PROXY header, then its CONNECT, in one write.
    const connect = connectPacket({
      userId: 'alice',
      password: await t.token('alice'),
      clientId: 'behind-the-proxy',
      keepalive: 30,
    });
    const { socket } = await proxied('127.0.0.3', Buffer.concat([v2Header('198.51.100.9'), connect]));
    const connack = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
    expect([...connack.subarray(0, 4)]).toEqual([0x20, 0x02, 0x00, 0x00]); // CONNACK, accepted
    socket.destroy();
    for (const { socket } of held) socket.destroy();
  });

  it('counts WebSocket clients under the X-Forwarded-For address the trusted proxy names, as the REST API does', async () => {
    const open = async (forwardedFor: string) => {
      const ws = new WebSocket(t.chorus.urls.ws, 'mqtt', {
        localAddress: '127.0.0.3',
        headers: { 'x-forwarded-for': forwardedFor },
      });
      await new Promise((resolve) => ws.once('open', resolve));
      return ws;
    };
    const held = [await open('203.0.113.20'), await open('203.0.113.20')];
    const third = await open('203.0.113.20');
    expect(await closedWithin(third, 1500)).toBe(true); // over maxUnauthenticatedPerAddress for 203.0.113.20
    const other = await open('203.0.113.21');
    expect(await closedWithin(other, 300)).toBe(false);
    for (const ws of [...held, other]) ws.terminate();
  });

  it('believes no PROXY header from an address it does not trust, and closes a trusted one that sends none', async () => {
    // 127.0.0.4 is not trusted: whatever addresses its headers claim, its connections count under 127.0.0.4.
    const spoofing = [];
    for (const claimed of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) {
      spoofing.push(await proxied('127.0.0.4', `PROXY TCP4 ${claimed} 127.0.0.1 40004 1883\r\n`));
    }
    expect(await spoofing[2]!.closed).toBe(true);
    const bare = await proxied('127.0.0.3', Buffer.from([0x10, 0x00]));
    expect(await bare.closed).toBe(true);
    for (const { socket } of spoofing) socket.destroy();
  });
});

describe('a shorter CONNECT deadline while the pre-login pool is under pressure', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ maxUnauthenticatedConnections: 4 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('sheds connections that send nothing after 2 s, down to half the pool, and none when the pool is not pressed', async () => {
    const open = () => openIdle(t.chorus.mqttPort);
    const alone = await open(); // one of four: no pressure
    expect(await closedWithin(alone, 3000)).toBe(false);
    alone.destroy();
    const crowd = await Promise.all([open(), open(), open(), open()]); // four of four
    // Within 5 s (Aedes's own CONNECT deadline is 10 s), exactly two go, whatever order their deadlines fire in:
    // then the pool is half full, no longer pressed.
    const closed = await Promise.all(crowd.map((socket) => closedWithin(socket, 5000)));
    expect(closed.filter(Boolean)).toHaveLength(2);
    for (const socket of crowd) socket.destroy();
  });
});
