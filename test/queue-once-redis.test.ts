import { randomBytes } from 'node:crypto';
import redisPersistence from 'aedes-persistence-redis';
import { afterAll, describe, expect, it } from 'vitest';
import { queueGroupMessagesOnce } from '../broker/queue-once-redis.js';
import { redisConnections } from './services.js';

/** What the two nodes' persistences are used for here: Aedes's calls, without callbacks (promises). */
interface Persistence {
  outgoingEnqueueCombi(subs: { clientId: string }[], packet: object): Promise<void>;
  outgoingStream(client: { id: string }): AsyncIterable<{ topic: string; payload: Buffer; brokerCounter: number }>;
  outgoingUpdate(client: { id: string }, packet: object): Promise<void>;
  outgoingClearMessageId(client: { id: string }, packet: { messageId: number }): Promise<unknown>;
}

const queued = async (persistence: Persistence, clientId: string) => {
  const packets: { topic: string; body: string; seq: number }[] = [];
  for await (const packet of persistence.outgoingStream({ id: clientId })) {
    packets.push({ topic: packet.topic, body: Buffer.from(packet.payload).toString(), seq: packet.brokerCounter });
  }
  return packets;
};

// Two nodes' Redis persistences, as a cluster's nodes have, on the real Redis, each queueing group messages once.
describe('group messages queued once for persistent sessions, whichever nodes queue them', () => {
  const redis = redisConnections();
  afterAll(() => redis.closeAll());
  const node = async (maxQueued = 100): Promise<Persistence> => {
    const connection = await redis.connect();
    const persistence = redisPersistence({ conn: connection, packetTTL: () => 60 }) as Persistence;
    queueGroupMessagesOnce(persistence as never, connection, { ttlSeconds: 60, maxQueued });
    return persistence;
  };
  const run = randomBytes(4).toString('hex');
  const groupMessage = (seq: number) => ({
    cmd: 'publish',
    topic: `groups/g-${run}/messages`,
    payload: Buffer.from(`{"seq":${seq}}`),
    qos: 1,
    retain: false,
    dup: false,
    brokerId: `groups/g-${run}/messages`,
    brokerCounter: seq,
  });

  it("is in each session's queue once, in the persistence's own keys and encoding, however many nodes queue it", async () => {
    const [a, b] = [await node(), await node()];
    const sessions = [`away-1-${run}`, `away-2-${run}`];
    for (const seq of [1, 2]) {
      for (const persistence of [a, b]) {
        await persistence.outgoingEnqueueCombi(
          sessions.map((clientId) => ({ clientId })),
          groupMessage(seq),
        );
      }
    }
    const expected = [1, 2].map((seq) => ({ topic: `groups/g-${run}/messages`, body: `{"seq":${seq}}`, seq }));
    for (const clientId of sessions) {
      expect(await queued(a, clientId)).toEqual(expected);
      expect(await queued(b, clientId)).toEqual(expected);
    }
    // The claim outlives every late routing of the message (an hour), not the queued packet's whole TTL.
    const claimTtl = await (await redis.connect()).ttl(`chorus:queued:packet:groups/g-${run}/messages:1`);
    expect(claimTtl).toBeGreaterThan(3500);
    expect(claimTtl).toBeLessThanOrEqual(3600);
  });

  it('is cleared by the PUBACK of a live delivery on another node, and stays queued for the sessions still away', async () => {
    const [a, b] = [await node(), await node()];
    const [online, away] = [`online-${run}`, `away-${run}`];
    // Node a queues the message; node b, where the online session is, queues it too (nothing) and delivers it.
    await a.outgoingEnqueueCombi([{ clientId: online }, { clientId: away }], groupMessage(7));
    await b.outgoingEnqueueCombi([{ clientId: online }, { clientId: away }], groupMessage(7));
    const delivered = { ...groupMessage(7), messageId: 42 };
    await b.outgoingUpdate({ id: online }, delivered);
    await b.outgoingClearMessageId({ id: online }, delivered);
    expect(await queued(b, online)).toEqual([]);
    expect((await queued(b, away)).map((p) => p.seq)).toEqual([7]);
  });

  it('queues nothing more for a session whose queue is full, and still queues for the others', async () => {
    const a = await node(2);
    const [full, empty] = [`full-${run}`, `empty-${run}`];
    for (const seq of [11, 12]) await a.outgoingEnqueueCombi([{ clientId: full }], groupMessage(seq));
    await a.outgoingEnqueueCombi([{ clientId: full }, { clientId: empty }], groupMessage(13));
    expect((await queued(a, full)).map((p) => p.seq)).toEqual([11, 12]);
    expect((await queued(a, empty)).map((p) => p.seq)).toEqual([13]);
  });

  it('leaves every other packet to the persistence, which queues it each time', async () => {
    const a = await node();
    const clientId = `events-${run}`;
    const event = { ...groupMessage(0), topic: `events/u-${run}`, brokerId: `broker-${run}`, brokerCounter: 5 };
    await a.outgoingEnqueueCombi([{ clientId }], event);
    await a.outgoingEnqueueCombi([{ clientId }], event);
    expect((await queued(a, clientId)).length).toBe(2);
  });
});
