import { setTimeout as sleep } from 'node:timers/promises';
import { createServer, type LookupFunction } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import webPush from 'web-push';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PushSender } from '../push/push-sender.js';
import { PushStoreSqlite } from '../push/push-store-sqlite.js';
import { tempDir, until } from './harness.js';
import { TestPushService } from './push-service.js';

describe('push sender', () => {
  const service = new TestPushService();
  const store = new PushStoreSqlite(join(tempDir(), 'push.db'));
  const lines: string[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write: (chunk, _enc, done) => {
        lines.push(chunk.toString());
        done();
      },
    }),
  );
  let sender: PushSender;
  beforeAll(async () => {
    await service.start();
    sender = new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, store, logger, {
      extraCa: readFileSync(service.caFile),
      allowLoopback: true,
    });
  });
  afterAll(async () => {
    sender.close();
    await service.close();
    await store.close();
  });

  it('logs a refused push with the endpoint host only, never the keys, and keeps the subscription', async () => {
    const device = service.device('refusing');
    service.respond(device.id, () => ({ status: 400 }));
    const record = {
      userId: 'u',
      endpoint: device.subscription.endpoint,
      ...device.subscription.keys,
      createdAtMs: Date.now(),
    };
    await store.saveSubscription(record, 5);
    sender.send(record, { hello: 'world' }, { urgency: 'normal', topic: 'abc' });
    await until(() => lines.some((l) => l.includes('refused')), 'the log line');
    const line = JSON.parse(lines.find((l) => l.includes('refused'))!);
    expect(line).toMatchObject({ host: `127.0.0.1:${service.port}`, status: 400 });
    const all = lines.join('\n');
    expect(all).not.toContain(device.subscription.keys.p256dh);
    expect(all).not.toContain(device.subscription.keys.auth);
    expect(all).not.toContain('/push/refusing'); // not even the endpoint path, which identifies the device
    expect(service.attempts.get(device.id)).toHaveLength(1); // a 400 is not retried
    expect(await store.listSubscriptions('u')).toHaveLength(1);
  });

  it('never connects to an endpoint whose name resolves inside, whatever it resolved to before', async () => {
    const listener = createServer((socket) => {
      connections += 1;
      socket.destroy();
    });
    let connections = 0;
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', () => resolve()));
    const port = (listener.address() as { port: number }).port;
    // The name now resolves to loopback (DNS rebinding); the sender does not allow loopback.
    const lookup = ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) =>
      options.all
        ? callback(null, [{ address: '127.0.0.1', family: 4 }])
        : callback(null, '127.0.0.1', 4)) as unknown as LookupFunction;
    const strict = new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, store, logger, { lookup });
    const record = {
      userId: 'v',
      endpoint: `https://push.rebind.example:${port}/push/x`,
      ...service.device('rebound').subscription.keys,
      createdAtMs: Date.now(),
    };
    strict.send(record, { hello: 'world' }, { urgency: 'normal', topic: 'abc' });
    await sleep(1500); // the first attempt and its first retry
    strict.close();
    listener.close();
    expect(connections).toBe(0);
    // Reached through the same sender with a public answer, the connection is made: the test can fail.
    const open = new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, store, logger, {
      lookup,
      allowLoopback: true,
    });
    const listener2 = createServer((socket) => {
      connections += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener2.listen(port, '127.0.0.1', () => resolve()));
    open.send(record, { hello: 'world' }, { urgency: 'normal', topic: 'abc' });
    await until(() => connections > 0, 'a connection when loopback is allowed');
    open.close();
    listener2.close();
  });
});
