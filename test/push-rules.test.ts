import { describe, expect, it } from 'vitest';
import webPush from 'web-push';
import { checkPushEndpoint, checkPushKeys } from '../push/endpoint-policy.js';
import { retryAfterMs } from '../push/push-sender.js';

describe('push rules', () => {
  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-11-22T10:00:00Z');
    expect(retryAfterMs('120', now)).toBe(120_000);
    expect(retryAfterMs('Sun, 22 Nov 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Sun, 22 Nov 2026 09:00:00 GMT', now)).toBe(0);
    expect(retryAfterMs('soon', now)).toBeUndefined();
    expect(retryAfterMs(undefined, now)).toBeUndefined();
  });

  /** A resolver for names that are not in any DNS here: what each name "resolves" to in these tests. */
  const names: Record<string, string[]> = {
    'fcm.googleapis.com': ['142.250.74.42', '2a00:1450:4001:82a::200a'],
    'rebind.example': ['127.0.0.1'],
    'mixed.example': ['10.0.0.1', '93.184.215.14'],
    'localhost.': ['127.0.0.1'],
    'ip6-localhost': ['::1'],
    'localhost.localdomain': ['127.0.0.1'],
  };
  const resolve = async (host: string) => {
    const addresses = names[host];
    if (!addresses) throw new Error(`ENOTFOUND ${host}`);
    return addresses;
  };
  const policy = { allowLoopback: false, resolve };

  it('accepts public https push services and refuses what could reach inside (SSRF), after DNS too', async () => {
    expect((await checkPushEndpoint('https://fcm.googleapis.com/fcm/send/abc', policy)).host).toBe(
      'fcm.googleapis.com',
    );
    expect((await checkPushEndpoint('https://mixed.example/x', policy)).host).toBe('mixed.example'); // the agent checks each connection
    const refused = [
      'http://updates.push.services.mozilla.com/x',
      'https://127.0.0.1/x',
      'https://localhost/x',
      'https://localhost./x',
      'https://10.0.0.8/x',
      'https://192.168.1.1/x',
      'https://172.20.0.1/x',
      'https://169.254.169.254/latest',
      'https://[::1]/x',
      'https://[fd00::1]/x',
      'https://[fec0::1]/x',
      'https://[64:ff9b::7f00:1]/x',
      'https://[::ffff:127.0.0.1]/x',
      'https://[::127.0.0.1]/x', // IPv4-compatible IPv6 (::/96), which ipaddr.js calls unicast
      'https://[::8.8.8.8]/x',
      'https://198.18.0.1/x',
      'https://224.0.0.1/x',
      'https://255.255.255.255/x',
      'https://192.0.0.1/x',
      'https://100.64.0.1/x',
      'https://0.0.0.0/x',
      'https://rebind.example/x',
      'https://ip6-localhost/x',
      'https://localhost.localdomain/x',
      'https://metadata.google.internal./x',
      'https://fcm.googleapis.com:22/x',
      'https://a:b@push.example.com/x',
      'not a url',
      'file:///etc/passwd',
    ];
    for (const bad of refused) {
      await expect(checkPushEndpoint(bad, policy), bad).rejects.toMatchObject({ code: 'INVALID_PUSH_ENDPOINT' });
    }
    expect((await checkPushEndpoint('https://127.0.0.1:9999/push/x', { ...policy, allowLoopback: true })).port).toBe(
      '9999',
    );
  });

  it('refuses push keys that are not a P-256 point and a 16-byte secret', () => {
    const { publicKey, privateKey } = webPush.generateVAPIDKeys(); // a P-256 public key, as browsers make for p256dh
    const auth = Buffer.alloc(16, 7).toString('base64url');
    expect(() => checkPushKeys(publicKey, auth)).not.toThrow();
    const offCurve = Buffer.from(publicKey, 'base64url');
    offCurve[64] = offCurve[64]! ^ 1;
    for (const [p256dh, secret] of [
      [offCurve.toString('base64url'), auth],
      [Buffer.alloc(65, 4).toString('base64url'), auth],
      [privateKey, auth],
      [publicKey, Buffer.alloc(15).toString('base64url')],
    ] as const) {
      expect(() => checkPushKeys(p256dh, secret)).toThrow(expect.objectContaining({ code: 'VALIDATION_FAILED' }));
    }
  });
});
