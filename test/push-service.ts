import { createDecipheriv, createECDH, createPublicKey, hkdfSync, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { tempDir } from './harness.js';
import { jwtVerify } from 'jose';

/**
 * A push service on loopback, written for the tests and independent of the web-push package: it checks the VAPID
 * authorization (RFC 8292: ES256 JWT, audience = the endpoint's origin, expiry within 24 h, signed by the key in k=)
 * and decrypts the aes128gcm body (RFC 8291 / RFC 8188) with the device's private key, as a browser would.
 */
export interface ReceivedPush {
  deviceId: string;
  at: number;
  payload: any;
  urgency: string | undefined;
  topic: string | undefined;
  ttl: string | undefined;
  vapidKey: string;
}

export interface Device {
  id: string;
  subscription: { endpoint: string; keys: { p256dh: string; auth: string } };
}

type Responder = (push: {
  deviceId: string;
  attempt: number;
}) => { status: number; headers?: Record<string, string> } | 'hang';

const b64u = (buffer: Buffer) => buffer.toString('base64url');

export class TestPushService {
  readonly received: ReceivedPush[] = [];
  readonly rejected: { deviceId: string; reason: string }[] = [];
  readonly attempts = new Map<string, number[]>();
  private readonly devices = new Map<string, { ecdh: ReturnType<typeof createECDH>; auth: Buffer }>();
  private readonly responders = new Map<string, Responder>();
  private readonly hanging: ServerResponse[] = [];
  private server!: Server;
  port = 0;
  /** The self-signed certificate this service presents: Chorus is told to trust it (pushCaFile). */
  readonly caFile: string;
  private readonly keyFile: string;

  constructor() {
    // Push services speak HTTPS only (and the web-push package uses nothing else): a throwaway certificate for 127.0.0.1.
    const dir = tempDir('chorus-push-');
    this.caFile = join(dir, 'cert.pem');
    this.keyFile = join(dir, 'key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        this.keyFile,
        '-out',
        this.caFile,
      ],
      { stdio: 'ignore' },
    );
  }

  async start(): Promise<void> {
    this.server = createServer(
      { key: readFileSync(this.keyFile), cert: readFileSync(this.caFile) },
      (req, res) => void this.handle(req, res),
    );
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as { port: number }).port;
  }

  /** A browser-like device: a P-256 key pair and a 16-byte auth secret, as PushManager.subscribe makes them. */
  device(id: string): Device {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const auth = randomBytes(16);
    this.devices.set(id, { ecdh, auth });
    return {
      id,
      subscription: {
        endpoint: `https://127.0.0.1:${this.port}/push/${id}`,
        keys: { p256dh: b64u(ecdh.getPublicKey()), auth: b64u(auth) },
      },
    };
  }

  respond(deviceId: string, responder: Responder): void {
    this.responders.set(deviceId, responder);
  }

  pushesTo(deviceId: string): ReceivedPush[] {
    return this.received.filter((p) => p.deviceId === deviceId);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const deviceId = (req.url ?? '').split('/').pop()!;
    const tries = [...(this.attempts.get(deviceId) ?? []), Date.now()];
    this.attempts.set(deviceId, tries);
    const response = this.responders.get(deviceId)?.({ deviceId, attempt: tries.length }) ?? { status: 201 };
    if (response === 'hang') {
      this.hanging.push(res);
      return;
    }
    if (response.status === 201) {
      try {
        const vapidKey = await this.checkVapid(req);
        const payload = this.decrypt(deviceId, Buffer.concat(chunks), req.headers['content-encoding']);
        this.received.push({
          deviceId,
          at: Date.now(),
          payload,
          urgency: req.headers.urgency as string | undefined,
          topic: req.headers.topic as string | undefined,
          ttl: req.headers.ttl as string | undefined,
          vapidKey,
        });
      } catch (err) {
        this.rejected.push({ deviceId, reason: (err as Error).message });
        res.writeHead(400).end();
        return;
      }
    }
    res.writeHead(response.status, response.headers).end();
  }

  /** RFC 8292 §2-3: Authorization: vapid t=<JWT>, k=<uncompressed P-256 public key>. Returns k. */
  private async checkVapid(req: IncomingMessage): Promise<string> {
    const match = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(req.headers.authorization ?? '');
    if (!match) throw new Error(`no vapid authorization: ${req.headers.authorization}`);
    const [, token, k] = match as unknown as [string, string, string];
    const point = Buffer.from(k, 'base64url');
    if (point.length !== 65 || point[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
    const key = createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: b64u(point.subarray(1, 33)), y: b64u(point.subarray(33)) },
      format: 'jwk',
    });
    const { payload } = await jwtVerify(token, key, {
      algorithms: ['ES256'],
      audience: `https://127.0.0.1:${this.port}`,
    });
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.exp !== 'number' || payload.exp <= now || payload.exp > now + 24 * 3600)
      throw new Error('bad exp');
    if (typeof payload.sub !== 'string' || !/^(mailto:|https:)/.test(payload.sub)) throw new Error('bad sub');
    return k;
  }

  /** RFC 8291 §3.4 key derivation and RFC 8188 aes128gcm, one record. */
  private decrypt(deviceId: string, body: Buffer, encoding: string | string[] | undefined): unknown {
    if (encoding !== 'aes128gcm') throw new Error(`content-encoding ${encoding}`);
    const device = this.devices.get(deviceId);
    if (!device) throw new Error(`unknown device ${deviceId}`);
    const salt = body.subarray(0, 16);
    const idLength = body[20]!;
    const senderKey = body.subarray(21, 21 + idLength);
    const ciphertext = body.subarray(21 + idLength);
    const shared = device.ecdh.computeSecret(senderKey);
    const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), device.ecdh.getPublicKey(), senderKey]);
    const ikm = Buffer.from(hkdfSync('sha256', shared, device.auth, keyInfo, 32));
    const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
    const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
    const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
    decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
    const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
    let end = padded.length - 1;
    while (end >= 0 && padded[end] === 0) end--;
    if (padded[end] !== 2) throw new Error('missing last-record delimiter');
    return JSON.parse(padded.subarray(0, end).toString('utf8'));
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
