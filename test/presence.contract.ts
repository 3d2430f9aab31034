import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { Presence } from '../broker/presence.js';

/** Nodes sharing one presence: `node()` makes another (in one process they may be one and the same). */
export interface PresenceMedium {
  node(): Promise<Presence>;
  close(): Promise<void>;
}

/** What every Presence promises (see broker/presence.ts). */
export function presenceContract(name: string, medium: () => Promise<PresenceMedium>): void {
  describe(`Presence contract: ${name}`, () => {
    const media: PresenceMedium[] = [];
    afterAll(async () => {
      for (const m of media) await m.close();
    });
    const nodes = async (): Promise<[Presence, Presence]> => {
      const m = await medium();
      media.push(m);
      return [await m.node(), await m.node()];
    };

    it('says the state changed exactly at the first client anywhere and the last client anywhere', async () => {
      const [one, two] = await nodes();
      const user = `u_${randomUUID()}`;
      expect(await one.connected(user)).toBe(true);
      expect(await two.connected(user)).toBe(false);
      expect(await one.connected(user)).toBe(false);
      expect(await one.disconnected(user)).toBe(false);
      expect(await one.disconnected(user)).toBe(false);
      expect(await two.disconnected(user)).toBe(true);
    });

    it('answers online() for many users at once, from any node', async () => {
      const [one, two] = await nodes();
      const [a, b, c] = [`a_${randomUUID()}`, `b_${randomUUID()}`, `c_${randomUUID()}`];
      await one.connected(a);
      await two.connected(b);
      expect(await one.online([a, b, c])).toEqual(new Set([a, b]));
      expect(await two.online([a, b, c])).toEqual(new Set([a, b]));
      await one.disconnected(a);
      expect(await two.online([a, b, c])).toEqual(new Set([b]));
      expect(await two.online([])).toEqual(new Set());
    });
  });
}
