import { afterAll, describe, expect, it } from 'vitest';
import type { MembershipChange, MembershipFeed } from '../groups/membership-feed.js';

/** Nodes sharing one feed: `node()` makes another (in one process they may be one and the same). */
export interface FeedMedium {
  node(): Promise<MembershipFeed>;
}

const change = (userId: string): MembershipChange => ({ kind: 'removed', groupId: 'g1', userId, by: 'ann' });

/** What every MembershipFeed promises (see groups/groups.ts). */
export function membershipFeedContract(
  name: string,
  medium: () => Promise<FeedMedium>,
  close: () => Promise<void>,
): void {
  describe(`MembershipFeed contract: ${name}`, () => {
    afterAll(close);

    it('gives every listener on every node each change once, and resolves publish after they all acted on it', async () => {
      const m = await medium();
      const [one, two] = [await m.node(), await m.node()];
      const acted: string[] = [];
      const slowly = (label: string) => async (c: MembershipChange) => {
        await new Promise((resolve) => setTimeout(resolve, 100));
        acted.push(`${label}:${c.userId}`);
      };
      one.subscribe(slowly('one'));
      two.subscribe(slowly('two'));
      await one.publish(change('bob'));
      expect(acted.sort()).toEqual(['one:bob', 'two:bob']);
      await two.publish(change('cy'));
      await new Promise((resolve) => setTimeout(resolve, 200)); // room for a duplicate to show up
      expect(acted.sort()).toEqual(['one:bob', 'one:cy', 'two:bob', 'two:cy']);
    });

    it('stops giving changes to a listener that unsubscribed', async () => {
      const m = await medium();
      const node = await m.node();
      const got: string[] = [];
      const unsubscribe = node.subscribe((c) => void got.push(c.userId));
      await node.publish(change('dee'));
      unsubscribe();
      await node.publish(change('eve'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(got).toEqual(['dee']);
    });
  });
}
