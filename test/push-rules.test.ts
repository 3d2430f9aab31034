import { describe, expect, it } from 'vitest';
import { checkPushEndpoint } from '../push/endpoint-policy.js';
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

  it('accepts public https push services and refuses what could reach inside (SSRF)', () => {
    expect(checkPushEndpoint('https://fcm.googleapis.com/fcm/send/abc', false).host).toBe('fcm.googleapis.com');
    for (const bad of ['http://updates.push.services.mozilla.com/x', 'https://127.0.0.1/x', 'https://localhost/x', 'https://10.0.0.8/x',
      'https://192.168.1.1/x', 'https://172.20.0.1/x', 'https://169.254.169.254/latest', 'https://[::1]/x', 'https://[fd00::1]/x',
      'https://a:b@push.example.com/x', 'not a url', 'file:///etc/passwd']) {
      expect(() => checkPushEndpoint(bad, false), bad).toThrow(expect.objectContaining({ code: 'INVALID_PUSH_ENDPOINT' }));
    }
    expect(checkPushEndpoint('https://127.0.0.1:9999/push/x', true).port).toBe('9999');
  });
});
