import { connect as connectTcp, createServer, type Server } from 'node:net';
import type { Aedes, Client } from 'aedes';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  clientById,
  clientsOf,
  createAedes,
  deliver0,
  maxPacketSizeOf,
  messageBus,
  packetArrived,
  parserBetweenPackets,
  silenceTopics,
  storeSubscriptions,
  subscriptionOf,
  wantsProblemInformation,
  writableTarget,
} from '../broker/aedes.js';
import { connectPacket, until } from './harness.js';

// Each internal of Aedes that broker/aedes.ts relies on, checked against the installed Aedes through a real client:
// an Aedes upgrade that moves one of them fails here, by name, before anything that depends on it.
describe('the Aedes internals Chorus relies on', () => {
  let aedes: Aedes;
  let server: Server;
  let port: number;
  const clients: MqttClient[] = [];

  const connect = async (clientId: string, clean = true, options: IClientOptions = {}): Promise<MqttClient> => {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId,
      clean,
      reconnectPeriod: 0,
      ...options,
    });
    clients.push(client);
    await until(() => clientById(aedes, clientId) !== undefined, `${clientId} registered`);
    return client;
  };

  beforeAll(async () => {
    aedes = await createAedes({ maxOfflineQueue: 10, maxPacketBytes: 65_536, maxSessionExpirySeconds: 60 });
    server = createServer(aedes.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const client of clients) client.end(true);
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('clients: the connected clients by id, in connection order', async () => {
    await connect('first');
    await connect('second');
    expect(clientById(aedes, 'first')?.id).toBe('first');
    expect(clientById(aedes, 'nobody')).toBeUndefined();
    expect(clientsOf(aedes).map((c: Client) => c.id)).toEqual(expect.arrayContaining(['first', 'second']));
    expect(clientsOf(aedes).findIndex((c) => c.id === 'first')).toBeLessThan(
      clientsOf(aedes).findIndex((c) => c.id === 'second'),
    );
  });

  it('subscriptions: a client subscription by exact topic, with its granted QoS', async () => {
    const client = await connect('subscriber');
    await client.subscribeAsync('groups/g_a/messages', { qos: 1 });
    const aedesClient = clientById(aedes, 'subscriber')!;
    expect(subscriptionOf(aedesClient, 'groups/g_a/messages')?.qos).toBe(1);
    expect(subscriptionOf(aedesClient, 'groups/g_b/messages')).toBeUndefined();
  });

  it('mq: the router carries a packet from emit to a listener', async () => {
    const heard: string[] = [];
    messageBus(aedes).on('$test/bus/+', (packet, done) => {
      heard.push(packet.payload.toString());
      done();
    });
    messageBus(aedes).emit(
      { cmd: 'publish', topic: '$test/bus/x', payload: Buffer.from('hello'), qos: 0, retain: false },
      () => {},
    );
    await until(() => heard.length === 1, 'the bus to deliver');
    expect(heard).toEqual(['hello']);
  });

  it('deliver0: a QoS 0 PUBLISH written to one client', async () => {
    const client = await connect('receiver0');
    await client.subscribeAsync('users/u/events', { qos: 0 });
    const received: string[] = [];
    client.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`));
    const packet = {
      cmd: 'publish' as const,
      topic: 'users/u/events',
      payload: Buffer.from('{"type":"typing"}'),
      qos: 0 as const,
      retain: false,
      dup: false,
    };
    deliver0(clientById(aedes, 'receiver0')!, packet, () => {});
    await until(() => received.length === 1, 'the QoS 0 write');
    expect(received).toEqual(['users/u/events {"type":"typing"}']);
  });

  it('conn and _nextId: the connection and the next packet identifier (1-65535) of a connected client, none of a closed one', async () => {
    await connect('target');
    const aedesClient = clientById(aedes, 'target')!;
    const target = writableTarget(aedesClient);
    expect(target).not.toBeNull();
    expect(typeof target!.conn.write).toBe('function');
    expect(target!._nextId).toBeGreaterThanOrEqual(1);
    expect(target!._nextId).toBeLessThanOrEqual(65_535);
    await new Promise<void>((resolve) => aedesClient.close(() => resolve()));
    expect(writableTarget(aedesClient)).toBeNull();
  });

  it('persistence: subscriptions stored with a persistent session are there when it comes back', async () => {
    const client = await connect('persistent', false);
    await storeSubscriptions(aedes, clientById(aedes, 'persistent')!, [{ topic: '$chorus/test-marker', qos: 0 }]);
    await client.endAsync();
    await until(() => clientById(aedes, 'persistent') === undefined, 'the session to go offline');
    // CONNACK's Session Present is 1 only when Aedes found stored subscriptions for the client id [MQTT-3.2.2-2].
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve) => {
      const again = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
        clientId: 'persistent',
        clean: false,
        reconnectPeriod: 0,
      });
      clients.push(again);
      again.once('connect', (packet) => resolve(packet as { sessionPresent: boolean }));
    });
    expect(connack.sessionPresent).toBe(true);
  });

  it("iterateStores (the patch's): a returning session's queue arrives in order, a clean start drops it, and SUBSCRIBE gets the retained message", async () => {
    // Set, or Aedes is not the patched one and reads both through its stream pipelines (see patches/).
    expect((aedes as unknown as { iterateStores?: boolean }).iterateStores).toBe(true);
    const publish = (topic: string, payload: string, qos: 0 | 1, retain = false) =>
      new Promise<void>((resolve, reject) =>
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain, dup: false }, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
    const away = await connect('queued', false);
    await away.subscribeAsync('queue/topic', { qos: 1 });
    await away.endAsync();
    await until(() => clientById(aedes, 'queued') === undefined, 'the session to go offline');
    for (const payload of ['m1', 'm2', 'm3']) await publish('queue/topic', payload, 1);

    const received: string[] = [];
    const back = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'queued', clean: false, reconnectPeriod: 0 });
    clients.push(back);
    back.on('message', (_topic, payload) => received.push(payload.toString()));
    await until(() => received.length === 3, 'the queued messages');
    expect(received).toEqual(['m1', 'm2', 'm3']);
    await back.endAsync();
    await until(() => clientById(aedes, 'queued') === undefined, 'the session to go offline again');

    await publish('queue/topic', 'm4', 1);
    const queueOf = async (clientId: string) => {
      const stream = (
        aedes as unknown as { persistence: { outgoingStream(c: { id: string }): AsyncIterable<unknown> } }
      ).persistence.outgoingStream({ id: clientId });
      const queued: unknown[] = [];
      for await (const packet of stream) queued.push(packet);
      return queued;
    };
    expect(await queueOf('queued')).toHaveLength(1);
    await connect('queued', true); // [MQTT-3.1.2-6]: a clean session discards the one before
    await until(async () => (await queueOf('queued')).length === 0, 'the clean start to drop the queue');

    await publish('kept/topic', 'kept', 0, true);
    const late = await connect('late');
    const retained: string[] = [];
    late.on('message', (topic, payload, packet) => retained.push(`${topic} ${payload.toString()} ${packet.retain}`));
    await late.subscribeAsync('kept/#', { qos: 0 });
    await until(() => retained.length === 1, 'the retained message');
    expect(retained).toEqual(['kept/topic kept true']);
  });

  it("keepaliveSweep (the patch's): a client silent for 1.5 times its keep alive is cut, never earlier, and one that pings is kept [MQTT-3.1.2-24]", async () => {
    expect((aedes as unknown as { keepaliveSweep?: boolean }).keepaliveSweep).toBe(true);
    // A CONNECT (MQTT 3.1.1, clean session, keep alive 1 s, client id "silent") and then nothing, not even PINGREQ.
    const silentConnect = connectPacket({ userId: 'silent', password: 'x', clientId: 'silent', keepalive: 1 });
    const silent = connectTcp(port, '127.0.0.1');
    await new Promise<void>((resolve) => silent.once('connect', () => resolve()));
    const sentAt = Date.now();
    silent.write(silentConnect);
    const connackAt = await new Promise<number>((resolve) => silent.once('data', () => resolve(Date.now())));
    const closedAt = new Promise<number>((resolve) => silent.once('close', () => resolve(Date.now())));
    silent.on('error', () => undefined);
    const pinging = await connect('pinging', true, { keepalive: 1 });
    expect(clientById(aedes, 'silent')).toBeDefined();
    // The sweep keeps no timer per client.
    expect((clientById(aedes, 'pinging') as unknown as { _keepaliveTimer: unknown })._keepaliveTimer).toBeNull();

    const cutAfter = (await closedAt) - sentAt;
    expect(cutAfter).toBeGreaterThanOrEqual(1_500); // its last packet was sent at sentAt at the earliest
    expect((await closedAt) - connackAt).toBeLessThan(6_000); // 1.5 s and at most two sweeps late, with room for a busy machine
    await until(() => clientById(aedes, 'silent') === undefined, 'the silent client to be gone');
    // The pinging client (mqtt.js sends PINGREQ each second it has sent nothing) outlives the silent one by seconds.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(pinging.connected).toBe(true);
    expect(clientById(aedes, 'pinging')).toBeDefined();
  });

  it('_parser and the keep alive: between packets only when no part of one is read; packetArrived keeps a silent client [MQTT-3.1.2-24]', async () => {
    // A CONNECT (MQTT 3.1.1, clean session, keep alive 1 s, client id "half") on a raw socket, then a PINGREQ byte by byte.
    const raw = connectTcp(port, '127.0.0.1');
    raw.setNoDelay(true);
    raw.on('error', () => undefined);
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const read: Buffer[] = [];
    raw.on('data', (chunk: Buffer) => read.push(chunk));
    let closed = false;
    raw.once('close', () => {
      closed = true;
    });
    raw.write(connectPacket({ userId: 'half', password: 'x', clientId: 'half', keepalive: 1 }));
    await until(() => clientById(aedes, 'half')?.connected === true, 'half connected');
    const client = clientById(aedes, 'half')!;
    expect(parserBetweenPackets(client)).toBe(true);
    raw.write(Buffer.from([0xc0])); // PINGREQ's first byte
    await until(() => !parserBetweenPackets(client), 'the parser to hold half a PINGREQ');
    raw.write(Buffer.from([0x00]));
    await until(
      () =>
        Buffer.concat(read)
          .subarray(-2)
          .equals(Buffer.from([0xd0, 0x00])),
      'PINGRESP',
    );
    expect(parserBetweenPackets(client)).toBe(true);

    // Silent on the wire from here on: only packetArrived, twice a second, keeps it past 1.5 times its keep alive.
    const arriving = setInterval(() => packetArrived(client), 500);
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    clearInterval(arriving);
    expect(closed).toBe(false);
    await until(() => closed, 'the client cut once nothing arrives', 6_000);
  });

  it("closeOnConnClose (the patch's): a connection destroyed on the broker's side closes its client, whose will is published", async () => {
    expect((aedes as unknown as { closeOnConnClose?: boolean }).closeOnConnClose).toBe(true);
    const watcher = await connect('will-watcher');
    const wills: string[] = [];
    watcher.on('message', (topic, payload) => wills.push(`${topic} ${payload.toString()}`));
    await watcher.subscribeAsync('wills/#', { qos: 0 });
    await connect('doomed', true, {
      will: { topic: 'wills/doomed', payload: Buffer.from('gone'), qos: 0, retain: false },
    });
    // Destroyed here, the socket emits 'close' but never 'end': only the close listener can close the client.
    writableTarget(clientById(aedes, 'doomed')!)!.conn.destroy();
    await until(() => clientById(aedes, 'doomed') === undefined, 'the client of the destroyed connection to close');
    await until(() => wills.length === 1, 'the will');
    expect(wills).toEqual(['wills/doomed gone']);
  });

  it("maximumPacketSize and _requestProblemInformation: an MQTT 5 client's CONNECT properties", async () => {
    await connect('v5-limits', true, {
      protocolVersion: 5,
      properties: { maximumPacketSize: 1234, requestProblemInformation: false },
    });
    await connect('v5-default', true, { protocolVersion: 5 });
    await connect('v4-client');
    expect(maxPacketSizeOf(clientById(aedes, 'v5-limits')!)).toBe(1234);
    expect(wantsProblemInformation(clientById(aedes, 'v5-limits')!)).toBe(false);
    expect(maxPacketSizeOf(clientById(aedes, 'v5-default')!)).toBeUndefined();
    expect(wantsProblemInformation(clientById(aedes, 'v5-default')!)).toBe(true);
    expect(maxPacketSizeOf(clientById(aedes, 'v4-client')!)).toBeUndefined();
  });

  it('publish: a silenced topic is not routed, and its publish completes at once', async () => {
    const heard: string[] = [];
    messageBus(aedes).on('$test/silenced', (packet, done) => {
      heard.push(packet.topic);
      done();
    });
    messageBus(aedes).on('$test/routed', (packet, done) => {
      heard.push(packet.topic);
      done();
    });
    silenceTopics(aedes, new Set(['$test/silenced']));
    const publish = (topic: string) =>
      new Promise<void>((resolve) =>
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 0, retain: false, dup: false }, () =>
          resolve(),
        ),
      );
    await publish('$test/silenced');
    await publish('$test/routed');
    await until(() => heard.length === 1, 'the routed topic');
    expect(heard).toEqual(['$test/routed']);
  });
});
