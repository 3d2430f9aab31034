import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tcpConnect } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestChorus, collect, until } from './harness.js';

describe('bad input gets a clear code, never a crash, a redelivery loop or a lost message', () => {
  let t: TestChorus;
  let groupId: string;
  beforeAll(async () => {
    t = await TestChorus.start({ maxBodyBytes: 1024, maxPacketBytes: 64 * 1024, rateLimitPerMinute: 200 });
    groupId = await t.group('alice', ['bob']);
  });
  afterAll(async () => {
    await t.close();
  });

  it('acknowledges malformed, oversized and unknown-field publishes and reports each with its code', async () => {
    const alice = await t.mqtt('alice');
    const events = collect(alice);
    await alice.subscribeAsync('users/alice/events', { qos: 1 });
    const topic = `groups/${groupId}/messages`;
    const cases: [string | Buffer, string][] = [
      ['{not json', 'INVALID_JSON'],
      [Buffer.from([0xff, 0xfe, 0x00]), 'INVALID_MESSAGE'], // not UTF-8
      // An encoded surrogate (ED A0 80) inside the body: not UTF-8, though a lenient decoder would let it through.
      [
        Buffer.concat([
          Buffer.from('{"clientMsgId":"sur","body":"a'),
          Buffer.from([0xed, 0xa0, 0x80]),
          Buffer.from('"}'),
        ]),
        'INVALID_MESSAGE',
      ],
      ['{"clientMsgId":"esc","body":"a\\ud800"}', 'INVALID_MESSAGE'], // a lone surrogate by JSON escape
      [JSON.stringify({ clientMsgId: 'big', body: 'x'.repeat(1025) }), 'PAYLOAD_TOO_LARGE'],
      [JSON.stringify({ clientMsgId: 'huge', body: 'é'.repeat(600) }), 'PAYLOAD_TOO_LARGE'],
      [JSON.stringify({ clientMsgId: 'extra', body: 'hi', admin: true }), 'UNKNOWN_FIELD'],
      [JSON.stringify({ clientMsgId: 'no body' }), 'INVALID_MESSAGE'],
      [JSON.stringify({ clientMsgId: 'm', body: 'x', mentions: 'bob' }), 'INVALID_MESSAGE'],
      [JSON.stringify({ clientMsgId: 'r', body: 'x', replyToSeq: 999 }), 'REPLY_TO_UNKNOWN'],
      [JSON.stringify([1, 2, 3]), 'INVALID_MESSAGE'],
      ['null', 'INVALID_MESSAGE'],
    ];
    for (const [payload, _] of cases) await alice.publishAsync(topic, payload, { qos: 1 }); // each gets its PUBACK
    await alice.publishAsync('users/bob/events', '{}', { qos: 1 });
    await alice.publishAsync('anything/else', 'x', { qos: 1 });
    await until(() => events.all.length === cases.length + 2, 'all rejections');
    expect(events.all.map((e) => e.body.code)).toEqual([
      ...cases.map(([, code]) => code),
      'TOPIC_NOT_ALLOWED',
      'TOPIC_NOT_ALLOWED',
    ]);
    expect(events.all.every((e) => e.body.type === 'rejected' && typeof e.body.message === 'string')).toBe(true);
    expect(events.all[6]!.body).toMatchObject({ clientMsgId: 'extra', groupId });
    expect(alice.connected).toBe(true);
    // Nothing was stored, and the same connection still sends.
    await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'good', body: 'fine' }), { qos: 1 });
    await until(() => events.all.some((e) => e.body.type === 'ack'), 'ack of the good message');
    expect(events.all.find((e) => e.body.type === 'ack')!.body.seq).toBe(1);
    await alice.endAsync();
  });

  it('closes only the connection that sends a packet over maxPacketBytes; others keep being served', async () => {
    const bob = await t.mqtt('bob');
    const bobGot = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    const greedy = await t.mqtt('alice');
    const closed = new Promise<void>((resolve) => greedy.once('close', () => resolve()));
    greedy.publish(`groups/${groupId}/messages`, Buffer.alloc(200 * 1024, 0x61), { qos: 1 });
    await closed;
    const res = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'after-greedy',
      body: 'still here',
    });
    expect(res.status).toBe(201);
    await until(() => bobGot.all.some((m) => m.body.clientMsgId === 'after-greedy'), 'delivery to bob');
    greedy.end(true);
    await bob.endAsync();
  });

  it('refuses connections past maxConnections and takes them again when a slot frees', async () => {
    const small = await TestChorus.start({ maxConnections: 2 });
    try {
      const [one, two] = [await small.mqtt('a1'), await small.mqtt('a2')];
      await expect(small.mqtt('a3')).rejects.toMatchObject({ code: 3 }); // CONNACK 3: server unavailable
      await one.endAsync();
      await sleep(100);
      const three = await small.mqtt('a3');
      expect(three.connected).toBe(true);
      await Promise.all([two.endAsync(), three.endAsync()]);
    } finally {
      await small.close();
    }
  });

  it('survives garbage bytes on the MQTT port', async () => {
    const socket = tcpConnect(t.chorus.mqttPort, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(Buffer.from('GET / HTTP/1.1\r\n\r\n\u00ff\u00ff\u00ff\u00ff\u00ff'));
    await new Promise((resolve) => socket.once('close', resolve));
    const alice = await t.mqtt('alice');
    expect(alice.connected).toBe(true);
    await alice.endAsync();
  });

  it('answers bad REST input with 4xx and a stable code', async () => {
    const path = `/v1/groups/${groupId}/messages`;
    const raw = async (body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) => {
      const res = await fetch(`${t.chorus.urls.http}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await t.token('alice')}`, ...headers },
        body,
      });
      return { status: res.status, body: (await res.json()) as { code: string } };
    };
    expect(await raw('{oops')).toMatchObject({ status: 400, body: { code: 'INVALID_JSON' } });
    expect(await raw(JSON.stringify({ clientMsgId: 'x', body: 'y', extra: 1 }))).toMatchObject({
      status: 400,
      body: { code: 'UNKNOWN_FIELD' },
    });
    expect(await raw(JSON.stringify({ clientMsgId: 'x', body: 'y'.repeat(1025) }))).toMatchObject({
      status: 413,
      body: { code: 'PAYLOAD_TOO_LARGE' },
    });
    expect(await raw('x'.repeat(20_000))).toMatchObject({ status: 413, body: { code: 'PAYLOAD_TOO_LARGE' } });
    // A send is checked by send validation, over REST as over MQTT: the same codes.
    expect(await raw(JSON.stringify({ clientMsgId: 'has space', body: 'y' }))).toMatchObject({
      status: 400,
      body: { code: 'INVALID_MESSAGE' },
    });
    // What the document calls invalid for a type (an app message naming a target) is refused as the document says.
    expect(await raw(JSON.stringify({ clientMsgId: 'app', type: 'poll', body: 'y', targetSeq: 1 }))).toMatchObject({
      status: 400,
      body: { code: 'INVALID_MESSAGE' },
    });
    expect((await t.api('alice', 'GET', `${path}?afterSeq=-1`)).body.code).toBe('VALIDATION_FAILED');
    expect((await t.api('alice', 'GET', `${path}?afterSeq=1&colour=blue`)).body.code).toBe('UNKNOWN_FIELD');
    expect((await t.api('alice', 'GET', '/v1/groups?limit=5&sort=name')).body.code).toBe('UNKNOWN_FIELD');
    expect((await t.api('alice', 'GET', '/v1/groups/bad$id/messages')).body.code).toBe('VALIDATION_FAILED');
    expect((await t.api('alice', 'GET', '/v1/nowhere')).body.code).toBe('NOT_FOUND');
    const noAuth = await fetch(`${t.chorus.urls.http}/v1/groups`);
    expect([noAuth.status, ((await noAuth.json()) as { code: string }).code]).toEqual([401, 'UNAUTHORIZED']);
    const expired = await fetch(`${t.chorus.urls.http}/v1/groups`, {
      headers: { authorization: `Bearer ${await t.token('alice', -60)}` },
    });
    expect(expired.status).toBe(401);
    await sleep(10);
  });

  it('documents in OpenAPI what the routes answer: every /v1 route its errors, optional limits, exclusive cursors', async () => {
    const doc = (await (await fetch(`${t.chorus.urls.http}/docs/json`)).json()) as {
      paths: Record<
        string,
        Record<
          string,
          { parameters?: { name: string; in: string; required?: boolean }[]; responses: Record<string, unknown> }
        >
      >;
    };
    for (const [path, methods] of Object.entries(doc.paths).filter(([p]) => p.startsWith('/v1/'))) {
      for (const [method, op] of Object.entries(methods)) {
        expect(Object.keys(op.responses), `${method} ${path}`).toEqual(
          expect.arrayContaining(['400', '401', '429', '500']),
        );
        const limit = op.parameters?.find((p) => p.name === 'limit');
        if (limit) expect(limit.required ?? false, `${method} ${path} limit`).toBe(false);
      }
    }
    expect(Object.keys(doc.paths['/v1/push/vapid-public-key']!.get!.responses)).toContain('401');
    // A send's fields by type, as send validation takes them: no target on an app message, no body on a reaction.
    const send = (doc.paths['/v1/groups/{groupId}/messages']!.post as any).requestBody.content['application/json']
      .schema;
    const variants = Object.fromEntries(
      send.anyOf.map((v: { title: string; required: string[]; properties: object }) => [v.title, v]),
    );
    expect(Object.keys(variants).sort()).toEqual([
      'delete',
      'edit',
      'message with attachments',
      'message with body',
      'reaction',
    ]);
    expect(variants.reaction.required).toEqual(expect.arrayContaining(['targetSeq', 'emoji']));
    expect(Object.keys(variants.reaction.properties)).not.toContain('body');
    expect(Object.keys(variants['message with body'].properties)).not.toContain('targetSeq');
    const push = (doc.paths['/v1/push/subscriptions']!.post as any).requestBody.content['application/json'].schema;
    expect(push.properties.keys.properties.p256dh.pattern).toBe('^B[A-Za-z0-9_-]{86}=?$');
  });

  it('validates REST bodies as they are, without converting types', async () => {
    const refused = async (method: string, path: string, body: unknown) => {
      const res = await t.api('alice', method, path, body);
      return [res.status, res.body.code];
    };
    const bad = [400, 'VALIDATION_FAILED'];
    expect(await refused('POST', `/v1/groups/${groupId}/members`, { role: 'admin', userId: false })).toEqual(bad);
    expect(await refused('POST', '/v1/groups', { name: 'n', members: [false] })).toEqual(bad);
    const badSend = [400, 'INVALID_MESSAGE'];
    expect(
      await refused('POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'm1', body: 'x', mentions: [false] }),
    ).toEqual(badSend);
    expect(
      await refused('POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'm2', body: 'x', replyToSeq: '1' }),
    ).toEqual(badSend);
    expect(await refused('PUT', `/v1/groups/${groupId}/read`, { seq: true })).toEqual(bad);
    const members = await t.api('alice', 'GET', `/v1/groups/${groupId}/members?limit=5`); // query strings still convert
    expect(members.status).toBe(200);
    expect(members.body.members.map((m: { userId: string }) => m.userId)).not.toContain('false');
  });

  it('answers in the one error shape also what is refused before any route runs (414, 431, bad HTTP, 405)', async () => {
    const shape = async (res: Response) => [res.status, ((await res.json()) as { code: string }).code];
    const auth = { authorization: `Bearer ${await t.token('alice')}` };
    expect(await shape(await fetch(`${t.chorus.urls.http}/v1/groups/${'g'.repeat(5000)}`, { headers: auth }))).toEqual([
      414,
      'URI_TOO_LONG',
    ]);
    expect(
      await shape(
        await fetch(`${t.chorus.urls.http}/v1/groups`, { headers: { ...auth, 'x-big': 'x'.repeat(100_000) } }),
      ),
    ).toEqual([431, 'HEADERS_TOO_LARGE']);
    const patch = await fetch(`${t.chorus.urls.http}/v1/groups`, { method: 'PATCH', headers: auth });
    expect(patch.headers.get('allow')?.split(', ')).toEqual(expect.arrayContaining(['GET', 'POST']));
    expect(await shape(patch)).toEqual([405, 'METHOD_NOT_ALLOWED']);
    expect(await shape(await fetch(`${t.chorus.urls.http}/v1/nowhere`, { method: 'PATCH', headers: auth }))).toEqual([
      404,
      'NOT_FOUND',
    ]);
    // A query string of 100 KB makes the request line too long: 414, not the 431 of headers too large.
    expect(await shape(await fetch(`${t.chorus.urls.http}/healthz?q=${'a'.repeat(100_000)}`))).toEqual([
      414,
      'URI_TOO_LONG',
    ]);
    // A route that does not exist says so before its body is read.
    const put = await fetch(`${t.chorus.urls.http}/healthz`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: '{not json',
    });
    expect(await shape(put)).toEqual([404, 'NOT_FOUND']);
    const socket = tcpConnect(t.chorus.httpPort, '127.0.0.1');
    socket.write('NOT HTTP AT ALL\r\n\r\n');
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d) => (text += d.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ code: 'BAD_REQUEST' });
  });

  /** Writes raw packets on a new TCP connection; resolves with the packets it got back and whether it was closed. */
  const exchange = async (packets: Buffer[], waitMs = 1000): Promise<{ got: Packet[]; closed: boolean }> => {
    const socket = tcpConnect(t.chorus.mqttPort, '127.0.0.1');
    socket.on('error', () => undefined);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const got: Packet[] = [];
    parser.on('packet', (packet) => got.push(packet));
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    const closed = new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), waitMs);
    });
    await new Promise((resolve) => socket.once('connect', resolve));
    for (const packet of packets) socket.write(packet);
    const wasClosed = await closed;
    socket.destroy();
    return { got, closed: wasClosed };
  };

  /** alice's CONNECT under a client id of its own, at a protocol name and level of its own (3.1.1 by default). */
  const connectPacket = async (clientId: string, protocolId: 'MQTT' | 'MQIsdp' = 'MQTT', protocolVersion: 3 | 4 = 4) =>
    mqttPacket.generate({
      cmd: 'connect',
      protocolId,
      protocolVersion,
      clientId,
      clean: true,
      keepalive: 30,
      username: 'alice',
      password: Buffer.from(await t.token('alice')),
    });

  it('answers CONNECT with protocol name "MQTT" at level 3 with CONNACK 0x01 [MQTT-3.1.2-2]', async () => {
    const connect = (protocolId: 'MQTT' | 'MQIsdp', protocolVersion: 3 | 4) =>
      connectPacket(`level-${protocolId}-${protocolVersion}`, protocolId, protocolVersion);
    const wrong = await exchange([await connect('MQTT', 3)]);
    expect(wrong.got).toMatchObject([{ cmd: 'connack', returnCode: 1 }]);
    expect(wrong.closed).toBe(true);
    // The pairings the versions define are served: 3.1.1 and 3.1.
    expect((await exchange([await connect('MQTT', 4)], 300)).got).toMatchObject([{ cmd: 'connack', returnCode: 0 }]);
    expect((await exchange([await connect('MQIsdp', 3)], 300)).got).toMatchObject([{ cmd: 'connack', returnCode: 0 }]);
  });

  it('closes, without a PUBACK and without storing it, a connection whose QoS 1 PUBLISH has packet identifier 0 [MQTT-2.3.1-1]', async () => {
    const connect = await connectPacket('zero-id');
    // mqtt-packet will not write identifier 0 at QoS 1: the bytes of one with identifier 1, patched.
    const publish = mqttPacket.generate({
      cmd: 'publish',
      topic: `groups/${groupId}/messages`,
      payload: JSON.stringify({ clientMsgId: 'zero', body: 'x' }),
      qos: 1,
      messageId: 1,
      dup: false,
      retain: false,
    });
    const idAt = 2 + 2 + Buffer.byteLength(`groups/${groupId}/messages`); // fixed header (2), topic length (2), topic
    publish.writeUInt16BE(0, idAt);
    const { got, closed } = await exchange([connect, publish], 3000);
    expect(got.map((p) => p.cmd)).toEqual(['connack']);
    expect(closed).toBe(true);
    const history = await t.api('alice', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0&limit=100`);
    expect(history.body.messages.map((m: { clientMsgId: string }) => m.clientMsgId)).not.toContain('zero');
  });

  it('answers a deeply nested MQTT payload with INVALID_MESSAGE, not INTERNAL', async () => {
    const alice = await t.mqtt('alice');
    const events = collect(alice);
    await alice.subscribeAsync('users/alice/events', { qos: 1 });
    const deep = `{"clientMsgId":"deep","body":"x","mentions":${'['.repeat(5000)}${']'.repeat(5000)}}`;
    await alice.publishAsync(`groups/${groupId}/messages`, deep, { qos: 1 });
    // Only rejections count: bob's presence, told up to 250 ms after the tests before, may reach alice's events topic too
    // (waiting for exactly one event timed out once, when a presence event arrived within the same poll as the rejection).
    const rejections = () => events.all.filter((e) => e.body.type === 'rejected');
    await until(() => rejections().length > 0, 'the rejection');
    expect(rejections().map((e) => e.body)).toMatchObject([{ code: 'INVALID_MESSAGE', clientMsgId: 'deep' }]);
    await alice.endAsync();
  });

  it('answers a caller over its REST budget with 429 RATE_LIMITED, without touching other callers', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 220; i++) statuses.push((await t.api('greedy', 'GET', '/v1/groups')).status);
    expect(statuses.slice(0, 200).every((s) => s === 200)).toBe(true);
    expect(statuses.slice(200).every((s) => s === 429)).toBe(true);
    const limited = await t.api('greedy', 'GET', '/v1/groups');
    expect([limited.status, limited.body.code]).toEqual([429, 'RATE_LIMITED']);
    expect((await t.api('someone-else', 'GET', '/v1/groups')).status).toBe(200);
  });
});
