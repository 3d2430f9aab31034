import { createServer, type Server } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Aedes, type Client } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { ChorusClient } from '../clients/chorus-client.js';

/**
 * The SDK against a bare Aedes whose logins this test refuses at will: a refusal that passes (the store away) is
 * followed by another try, a final one (a bad token) ends the client. MQTT.js alone stops reconnecting after any
 * refused CONNACK, which left an SDK client offline for good after a Cassandra outage.
 */
describe.each([4, 5] as const)('SDK reconnects after a CONNACK refusal (MQTT %s)', (protocolVersion) => {
  let broker: Aedes;
  let server: Server;
  afterEach(async () => {
    await new Promise((resolve) => server?.close(() => resolve(undefined)));
    await new Promise((resolve) => broker?.close(() => resolve(undefined)));
  });

  /** A broker refusing the next `refusals` logins with this 3.1.1 return code and MQTT 5 reason code. */
  const start = async () => {
    const control = { refusals: 0, returnCode: 3, reasonCode: 0x88, attempts: 0, clients: [] as Client[] };
    broker = await Aedes.createBroker({
      authenticate: (client, _username, _password, done) => {
        control.attempts += 1;
        if (control.refusals === 0) {
          control.clients.push(client);
          return done(null, true);
        }
        control.refusals -= 1;
        done(Object.assign(new Error('refused'), control) as never, false);
      },
    });
    server = createServer(broker.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const sdk = await ChorusClient.connect({
      mqttUrl: `mqtt://127.0.0.1:${port}`,
      apiUrl: 'http://127.0.0.1:9', // not used here
      userId: 'alice',
      token: 'token',
      protocolVersion,
      mqttOptions: { reconnectPeriod: 100 },
    });
    sdk.on('error', () => undefined);
    return { control, sdk };
  };

  it('tries again after "server unavailable" and gets back in', async () => {
    const { control, sdk } = await start();
    let connects = 0;
    sdk.on('connect', () => (connects += 1));
    control.refusals = 2;
    control.clients[0]!.close(); // the node's store went away: it drops the client and refuses logins for a while
    await expect.poll(() => connects).toBe(1);
    expect(control.attempts).toBe(4); // the first login, two refusals, the one let in
    await sdk.close();
  });

  it('stops after a final refusal (a bad token)', async () => {
    const { control, sdk } = await start();
    Object.assign(control, { refusals: 100, returnCode: 4, reasonCode: 0x86 });
    control.clients[0]!.close();
    await expect.poll(() => control.attempts).toBe(2);
    await sleep(500); // five reconnect periods
    expect(control.attempts).toBe(2);
    await sdk.close();
  });
});
