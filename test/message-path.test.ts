import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryPositionStore } from '../clients/position-store.js';
import { TestChorus, deliveries, sdkClient, until } from './harness.js';

describe('message path through real clients', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start();
  });
  afterAll(async () => {
    await t.close();
  });

  it('gives three members (TCP and WebSocket) every message once, in the same seq order, while two send concurrently', async () => {
    const groupId = await t.group('alice', ['bob', 'carol']);
    const alice = await sdkClient(t, 'alice');
    const bob = await sdkClient(t, 'bob', { transport: 'ws' });
    const carol = await sdkClient(t, 'carol');
    const got = [alice, bob, carol].map(deliveries);
    await Promise.all([alice, bob, carol].map((c) => c.join(groupId)));

    const perSender = 150;
    const sends = await Promise.all([
      ...Array.from({ length: perSender }, (_, i) => alice.send(groupId, { body: `alice ${i}` })),
      ...Array.from({ length: perSender }, (_, i) => bob.send(groupId, { body: `bob ${i}` })),
    ]);
    const total = 2 * perSender;
    expect(new Set(sends.map((s) => s.seq)).size).toBe(total);
    await until(() => got.every((g) => (g.get(groupId)?.length ?? 0) >= total), 'all deliveries');
    await new Promise((resolve) => setTimeout(resolve, 200)); // room for any duplicate to show

    const seqsSeen = got.map((g) => g.get(groupId)!.map((m) => m.seq));
    for (const seqs of seqsSeen) expect(seqs).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    const bodies = got.map((g) => g.get(groupId)!.map((m) => `${m.senderId}:${m.body}`));
    expect(bodies[1]).toEqual(bodies[0]);
    expect(bodies[2]).toEqual(bodies[0]);
    // Each sender's own messages keep their send order.
    const aliceOrder = bodies[0]!.filter((b) => b.startsWith('alice:')).map((b) => Number(b.split(' ')[1]));
    expect(aliceOrder).toEqual([...aliceOrder].sort((a, b) => a - b));
    await Promise.all([alice, bob, carol].map((c) => c.close()));

    const metrics = await (await fetch(`${t.chorus.urls.http}/metrics`)).text();
    const committed = Number(/^chorus_sequencer_batch_messages_sum (\d+)/m.exec(metrics)?.[1]);
    expect(committed).toBeGreaterThanOrEqual(total);
    expect(metrics).toMatch(/^chorus_sequencer_commit_seconds_count \d+/m);
    expect(metrics).toMatch(/^chorus_mqtt_connected_clients \d+/m);
  });

  it('lets a member who was offline during 500 messages catch up through the SDK: in order, no gaps, no duplicates', async () => {
    const groupId = await t.group('dave', ['erin']);
    const positions = new MemoryPositionStore();
    const erin = await sdkClient(t, 'erin', { positions });
    const dave = await sdkClient(t, 'dave');
    const before = deliveries(erin);
    await erin.join(groupId);
    await dave.send(groupId, { body: 'before the break' });
    await until(() => before.get(groupId)?.length === 1, 'first message');
    await erin.close();

    for (let i = 0; i < 500; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => dave.send(groupId, { body: `while away ${i + j}` })));
    }

    const back = await sdkClient(t, 'erin', { positions });
    const after = deliveries(back);
    await back.join(groupId);
    await dave.send(groupId, { body: 'after the break' });
    await until(() => (after.get(groupId)?.length ?? 0) >= 501, '501 messages after reconnect');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const seqs = after.get(groupId)!.map((m) => m.seq);
    expect(seqs).toEqual(Array.from({ length: 501 }, (_, i) => i + 2));
    expect(after.get(groupId)!.at(-1)!.body).toBe('after the break');
    expect(await positions.load(groupId)).toBe(502);
    await Promise.all([back.close(), dave.close()]);
  });

  it('resumes a live client after its connection drops, filling what it missed', async () => {
    const groupId = await t.group('frank', ['gina']);
    const gina = await sdkClient(t, 'gina');
    const frank = await sdkClient(t, 'frank');
    const got = deliveries(gina);
    await gina.join(groupId);
    await frank.send(groupId, { body: 'one' });
    await until(() => got.get(groupId)?.length === 1, 'first');
    // Drop gina's connection from the server side; MQTT.js reconnects by itself.
    for (const client of t.chorus.broker.live.clientsOf('gina')) client.close();
    await Promise.all(Array.from({ length: 50 }, (_, i) => frank.send(groupId, { body: `missed ${i}` })));
    await until(() => (got.get(groupId)?.length ?? 0) >= 51, 'resumed stream');
    expect(got.get(groupId)!.map((m) => m.seq)).toEqual(Array.from({ length: 51 }, (_, i) => i + 1));
    await Promise.all([gina.close(), frank.close()]);
  });

  it('serves MQTT over TCP with Nagle off, so that a small PUBACK or delivery never waits for the previous one to be acknowledged', async () => {
    const client = await t.mqtt('henry', { clientId: 'henry-nodelay' });
    const conn = (t.chorus.broker.aedes as unknown as { clients: Record<string, { conn: object }> }).clients[
      'henry-nodelay'
    ]!.conn;
    // Node keeps what setNoDelay last set under this symbol (there is no public getter).
    const noDelay = Object.getOwnPropertySymbols(conn).find((symbol) => symbol.description === 'kSetNoDelay');
    expect(noDelay).toBeDefined();
    expect((conn as Record<symbol, unknown>)[noDelay!]).toBe(true);
    await client.endAsync();
  });
});
