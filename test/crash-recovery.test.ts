import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { signToken } from '../auth/token-verifier.js';
import { ChorusClient } from '../clients/chorus-client.js';
import { serveProcess } from './harness.js';

describe('SIGKILL mid-stream', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const child of children) child.kill('SIGKILL');
  });

  const chorusProcess = () => serveProcess(children);

  it('keeps every acknowledged message, and seq continues after restart without reuse or holes', async () => {
    const { start, api, config, mqttPort } = await chorusProcess();
    let server = await start();
    const groupId = (await api('POST', '/v1/groups', { name: 'crash' })).id as string;
    const client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, {
      username: 'alice',
      password: await signToken(config, 'alice', 600),
      reconnectPeriod: 0,
    });
    await new Promise((resolve) => client.once('connect', resolve));
    const acked: string[] = [];
    let sent = 0;
    let stop = false;
    const sender = async (lane: number) => {
      for (let i = 0; !stop; i++) {
        const clientMsgId = `l${lane}-${i}`;
        sent += 1;
        try {
          await client.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId, body: 'x' }), {
            qos: 1,
          });
          if (!stop) acked.push(clientMsgId);
        } catch {
          return;
        }
      }
    };
    const lanes = Array.from({ length: 8 }, (_, lane) => sender(lane));
    while (acked.length < 400) await sleep(5);
    server.kill('SIGKILL'); // mid-stream: publishes are in flight on 8 lanes
    stop = true;
    await new Promise((resolve) => server.once('exit', resolve));
    client.end(true);
    await Promise.race([Promise.all(lanes), sleep(1000)]);
    expect(sent).toBeGreaterThan(acked.length);

    server = await start();
    const stored: { seq: number; clientMsgId: string }[] = [];
    for (let after = 0; ; ) {
      const page = (await api('GET', `/v1/groups/${groupId}/messages?afterSeq=${after}&limit=1000`)).messages;
      stored.push(...page);
      if (page.length < 1000) break;
      after = page.at(-1).seq;
    }
    const storedIds = new Set(stored.map((m) => m.clientMsgId));
    expect(acked.filter((id) => !storedIds.has(id))).toEqual([]);
    expect(stored.map((m) => m.seq)).toEqual(stored.map((_, i) => i + 1));
    expect(storedIds.size).toBe(stored.length);

    const next = await api('POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'after-restart', body: 'y' });
    expect(next.seq).toBe(stored.length + 1);
    // A retry of a message that was acknowledged before the crash still finds its original seq.
    const retry = await api('POST', `/v1/groups/${groupId}/messages`, { clientMsgId: acked[0], body: 'x' });
    expect(retry).toMatchObject({ duplicate: true, seq: stored.find((m) => m.clientMsgId === acked[0])!.seq });
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
  });

  it('resolves every SDK send with its seq across a SIGKILL, long before the send timeout', async () => {
    const { start, api, config, mqttPort, httpPort } = await chorusProcess();
    let server = await start();
    const groupId = (await api('POST', '/v1/groups', { name: 'kill' })).id as string;
    const alice = await ChorusClient.connect({
      mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
      apiUrl: `http://127.0.0.1:${httpPort}`,
      userId: 'alice',
      token: await signToken(config, 'alice', 600),
      // No timeout fallback within the test: the seq comes from the ack events of the publishes MQTT.js re-sends, or,
      // for a publish acknowledged just before the kill whose event was lost, from REST right after its PUBACK.
      sendTimeoutMs: 120_000,
      mqttOptions: { reconnectPeriod: 200 },
    });
    const receipts: Promise<{ seq: number; clientMsgId: string }>[] = [];
    for (let i = 0; i < 300; i++) {
      receipts.push(alice.send(groupId, { body: `m${i}` }));
      if (i % 20 === 19) await sleep(5);
      if (i === 150) {
        server.kill('SIGKILL'); // sends in flight are re-sent by MQTT.js on its next connection
        await new Promise((resolve) => server.once('exit', resolve));
        server = await start();
      }
    }
    const settled = await Promise.all(receipts);
    const stored = (await api('GET', `/v1/groups/${groupId}/messages?afterSeq=0&limit=1000`)).messages as {
      seq: number;
      clientMsgId: string;
    }[];
    expect(stored.map((m) => m.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    const seqOf = new Map(stored.map((m) => [m.clientMsgId, m.seq]));
    expect(settled.every((r) => seqOf.get(r.clientMsgId) === r.seq)).toBe(true);
    await alice.close();
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
  }, 60_000);
});
