import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REACHABLE_QUERY, type PushStore, type PushSubscriptionRecord } from '../push/push-store.js';

/** The PushStore contract, run by every backend. */
export function pushStoreContract(name: string, open: () => Promise<PushStore>): void {
  describe(`PushStore contract: ${name}`, () => {
    let store: PushStore;
    beforeAll(async () => {
      store = await open();
    });
    afterAll(async () => {
      await store.close();
    });
    const sub = (userId: string, n: number, extra: Partial<PushSubscriptionRecord> = {}): PushSubscriptionRecord => ({
      userId,
      endpoint: `https://push.example.com/${userId}/${n}`,
      p256dh: 'B'.repeat(87),
      auth: 'a'.repeat(22),
      createdAtMs: 1_700_000_000_000,
      ...extra,
    });

    it('keeps several devices per user, replaces by endpoint, and refuses a new one past the limit', async () => {
      const user = `u-${randomUUID()}`;
      expect(await store.saveSubscription(sub(user, 1, { deviceId: 'phone' }), 2)).toBe('saved');
      expect(await store.saveSubscription(sub(user, 2), 2)).toBe('saved');
      expect(await store.saveSubscription(sub(user, 3), 2)).toBe('limit');
      expect(await store.saveSubscription(sub(user, 1, { auth: 'b'.repeat(22) }), 2)).toBe('saved');
      const list = await store.listSubscriptions(user);
      expect(list.map((s) => s.endpoint).sort()).toEqual([sub(user, 1).endpoint, sub(user, 2).endpoint]);
      expect(list.find((s) => s.endpoint === sub(user, 1).endpoint)!.auth).toBe('b'.repeat(22));
    });

    it('removes one subscription and says whether it existed', async () => {
      const user = `u-${randomUUID()}`;
      await store.saveSubscription(sub(user, 1), 5);
      expect(await store.removeSubscription(user, sub(user, 1).endpoint)).toBe(true);
      expect(await store.removeSubscription(user, sub(user, 1).endpoint)).toBe(false);
      expect(await store.listSubscriptions(user)).toEqual([]);
    });

    it('defaults a preference to all and keeps one per user and group', async () => {
      const user = `u-${randomUUID()}`;
      expect(await store.getMode(user, 'g1')).toBe('all');
      await store.setMode(user, 'g1', 'muted');
      await store.setMode(user, 'g2', 'mentions');
      await store.setMode(user, 'g2', 'all');
      expect([await store.getMode(user, 'g1'), await store.getMode(user, 'g2')]).toEqual(['muted', 'all']);
    });

    it('tells which of many users push can reach, each with their preference for the group', async () => {
      const run = randomUUID();
      const users = Array.from({ length: MAX_REACHABLE_QUERY }, (_, i) => `r-${run}-${i}`);
      const [twoDevices, muted, mentions, plain] = users;
      await store.saveSubscription(sub(twoDevices!, 1), 5);
      await store.saveSubscription(sub(twoDevices!, 2), 5);
      for (const user of [muted!, mentions!, plain!]) await store.saveSubscription(sub(user, 1), 5);
      await store.setMode(muted!, 'g1', 'muted');
      await store.setMode(mentions!, 'g1', 'mentions');
      await store.setMode(mentions!, 'g2', 'muted'); // another group's preference changes nothing here
      await store.setMode(users[10]!, 'g1', 'mentions'); // a preference without a subscription: not reachable
      const reachable = await store.reachable(users, 'g1');
      expect([...reachable].sort()).toEqual(
        [
          [twoDevices, 'all'],
          [muted, 'muted'],
          [mentions, 'mentions'],
          [plain, 'all'],
        ].sort(),
      );
      expect(await store.reachable([], 'g1')).toEqual(new Map());
    });
  });
}
