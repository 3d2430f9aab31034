import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GroupStore } from '../groups/group-store.js';

/**
 * What every GroupStore promises (see groups/group-store.ts); a backend runs it with a store of its own.
 * `racingAddsBounded: false` is for a backend that documents its member limit as checked per add, not per group (the
 * Cassandra store): the limit is then tested with adds one after another only.
 */
export function groupStoreContract(
  name: string,
  open: () => Promise<GroupStore>,
  options = { racingAddsBounded: true },
): void {
  describe(`GroupStore contract: ${name}`, () => {
    let store: GroupStore;
    beforeAll(async () => {
      store = await open();
    });
    afterAll(async () => {
      await store.close();
    });

    const newGroup = async (createdBy = 'ann') => {
      const id = `g_${randomUUID()}`;
      await store.createGroup({
        id,
        name: 'team',
        historyVisibility: 'all',
        createdBy,
        createdAtMs: 1_700_000_000_000,
      });
      return id;
    };

    it('creates a group with its creator as admin, and refuses an id that exists', async () => {
      const id = await newGroup();
      expect(await store.getGroup(id)).toEqual({
        id,
        name: 'team',
        historyVisibility: 'all',
        createdBy: 'ann',
        createdAtMs: 1_700_000_000_000,
      });
      expect(await store.getMember(id, 'ann')).toMatchObject({ groupId: id, userId: 'ann', role: 'admin', readSeq: 0 });
      await expect(
        store.createGroup({ id, name: 'again', historyVisibility: 'all', createdBy: 'bob', createdAtMs: 1 }),
      ).rejects.toThrow();
      expect(await store.getGroup(`g_${randomUUID()}`)).toBeNull();
    });

    it(`adds members with every outcome, and never past maxMembers${options.racingAddsBounded ? ', even when adds race' : ''}`, async () => {
      const id = await newGroup();
      expect(await store.addMember(id, 'bob', 'member', 10)).toBe('added');
      expect(await store.addMember(id, 'bob', 'member', 10)).toBe('already-member');
      expect(await store.addMember(`g_${randomUUID()}`, 'bob', 'member', 10)).toBe('no-group');
      const add = (i: number) => store.addMember(id, `u${i}`, 'member', 5);
      const outcomes = options.racingAddsBounded
        ? await Promise.all(Array.from({ length: 8 }, (_, i) => add(i)))
        : await Array.from({ length: 8 }, (_, i) => i).reduce<Promise<string[]>>(
            async (done, i) => [...(await done), await add(i)],
            Promise.resolve([]),
          );
      expect(outcomes.filter((r) => r === 'added')).toHaveLength(3);
      expect(outcomes.filter((r) => r === 'group-full')).toHaveLength(5);
      expect(await store.countMembers(id)).toBe(5);
    });

    it('adds members in bulk: those already in are left as they are, and the limit is all or none', async () => {
      const id = await newGroup();
      expect(await store.addMember(id, 'bob', 'admin', 100)).toBe('added');
      const many = Array.from({ length: 120 }, (_, i) => `b${String(i).padStart(3, '0')}`); // more than one chunk
      expect(await store.addMembers(id, ['bob', ...many.slice(0, 60)], 'member', 200, 7)).toEqual({
        added: many.slice(0, 60),
        alreadyMembers: ['bob'],
      });
      expect(await store.getMember(id, 'bob')).toMatchObject({ role: 'admin' }); // left as it was
      expect(await store.addMembers(id, many, 'member', 100)).toBe('group-full'); // 62 + 60 newcomers > 100
      expect(await store.countMembers(id)).toBe(62);
      expect(await store.addMembers(id, many, 'member', 200, 9)).toEqual({
        added: many.slice(60),
        alreadyMembers: many.slice(0, 60),
      });
      expect(await store.countMembers(id)).toBe(122);
      expect(await store.getMember(id, 'b119')).toMatchObject({ role: 'member', readSeq: 0 });
      expect(await store.seqRanges(id, 'b000')).toEqual([{ after: 7, until: null }]);
      expect(await store.seqRanges(id, 'b119')).toEqual([{ after: 9, until: null }]);
      expect((await store.listMemberships('b119', '', 10)).map((m) => m.groupId)).toEqual([id]);
      expect(await store.addMembers(`g_${randomUUID()}`, ['x'], 'member', 10)).toBe('no-group');
      // A member who left and comes back in a batch keeps the earlier range.
      expect(await store.removeMember(id, 'b000', true, 20)).toBe('removed');
      expect(await store.addMembers(id, ['b000'], 'member', 200, 30)).toEqual({ added: ['b000'], alreadyMembers: [] });
      expect(await store.seqRanges(id, 'b000')).toEqual([
        { after: 7, until: 20 },
        { after: 30, until: null },
      ]);
    });

    it('adds each user once when a bulk add races single adds of the same users', async () => {
      const id = await newGroup();
      const users = Array.from({ length: 80 }, (_, i) => `r${i}`);
      const [bulk, ...singles] = await Promise.all([
        store.addMembers(id, users, 'member', 1000),
        ...users.map((u) => store.addMember(id, u, 'member', 1000)),
      ]);
      if (typeof bulk === 'string') throw new Error(bulk);
      const addedOnce = users.filter(
        (u, i) => (bulk.added.includes(u) ? 1 : 0) + (singles[i] === 'added' ? 1 : 0) === 1,
      );
      expect(addedOnce).toEqual(users);
      expect(await store.countMembers(id)).toBe(81);
    });

    it('keeps an admin while the group has members, on removal and on role change', async () => {
      const id = await newGroup();
      await store.addMember(id, 'bob', 'member', 10);
      expect(await store.removeMember(id, 'ann', true)).toBe('last-admin');
      expect(await store.setRole(id, 'ann', 'member', true)).toBe('last-admin');
      expect(await store.setRole(id, 'bob', 'admin', true)).toBe('changed');
      expect(await store.setRole(id, 'zed', 'admin', true)).toBe('not-member');
      expect(await store.countMembers(id)).toBe(2);
      expect(await store.removeMember(id, 'ann', true)).toBe('removed');
      expect(await store.removeMember(id, 'ann', true)).toBe('not-member');
      expect(await store.countMembers(id)).toBe(1); // a removal that found no member counts nothing
      expect(await store.getMember(id, 'ann')).toBeNull();
      expect(await store.getMember(id, 'bob')).toMatchObject({ role: 'admin' });
    });

    it('lists members by user id and memberships by group id, paged by the last id seen', async () => {
      const id = await newGroup('m0');
      for (const userId of ['m3', 'm1', 'm2']) await store.addMember(id, userId, 'member', 10);
      const first = await store.listMembers(id, '', 2);
      expect(first.map((m) => m.userId)).toEqual(['m0', 'm1']);
      expect((await store.listMembers(id, 'm1', 2)).map((m) => m.userId)).toEqual(['m2', 'm3']);
      expect(await store.listMembers(id, 'm3', 2)).toEqual([]);

      const user = `u_${randomUUID()}`;
      const groups = [await newGroup(), await newGroup(), await newGroup()];
      for (const g of groups) await store.addMember(g, user, 'member', 10);
      const sorted = [...groups].sort();
      const page1 = await store.listMemberships(user, '', 2);
      expect(page1.map((m) => m.groupId)).toEqual(sorted.slice(0, 2));
      expect((await store.listMemberships(user, page1[1]!.groupId, 2)).map((m) => m.groupId)).toEqual(sorted.slice(2));
      expect(await store.listGroupIds(user, '', 2)).toEqual(sorted.slice(0, 2));
      expect(await store.listGroupIds(user, sorted[1]!, 2)).toEqual(sorted.slice(2));
      expect(await store.listGroupIds(`u_${randomUUID()}`, '', 2)).toEqual([]);
    });

    it('moves a read pointer forward only, and answers null for a non-member', async () => {
      const id = await newGroup();
      expect(await store.setReadSeq(id, 'ann', 5)).toBe(5);
      expect(await store.setReadSeq(id, 'ann', 3)).toBe(5);
      expect(await store.setReadSeq(id, 'ann', 9)).toBe(9);
      expect(await store.getMember(id, 'ann')).toMatchObject({ readSeq: 9 });
      expect(await store.setReadSeq(id, 'nobody', 4)).toBeNull();
    });

    it('changes and clears group metadata, and answers null for no group', async () => {
      const id = await newGroup();
      const changed = {
        name: 'renamed',
        description: 'about us',
        avatarUrl: 'https://cdn.example/a.png',
        historyVisibility: 'since-joined',
      } as const;
      expect(await store.updateGroup(id, changed)).toMatchObject(changed);
      expect(await store.getGroup(id)).toMatchObject(changed);
      const cleared = await store.updateGroup(id, { description: null });
      expect(cleared).toMatchObject({ name: 'renamed', avatarUrl: 'https://cdn.example/a.png' });
      expect(cleared).not.toHaveProperty('description');
      expect(await store.getGroup(id)).not.toHaveProperty('description');
      expect(await store.updateGroup(`g_${randomUUID()}`, { name: 'x' })).toBeNull();
    });

    it("keeps a group's own retention, and forgets it when set to null", async () => {
      const id = await newGroup();
      expect(await store.getGroup(id)).not.toHaveProperty('retentionDays');
      expect(await store.updateGroup(id, { retentionDays: 7 })).toMatchObject({ retentionDays: 7 });
      expect(await store.getGroup(id)).toMatchObject({ retentionDays: 7 });
      expect(await store.updateGroup(id, { name: 'still seven' })).toMatchObject({ retentionDays: 7 });
      expect(await store.updateGroup(id, { retentionDays: null })).not.toHaveProperty('retentionDays');
      expect(await store.getGroup(id)).not.toHaveProperty('retentionDays');
      const chosen = `g_${randomUUID()}`;
      await store.createGroup({ ...(await store.getGroup(id))!, id: chosen, retentionDays: 3 });
      expect(await store.getGroup(chosen)).toMatchObject({ retentionDays: 3 });
    });

    it('keeps each member seq ranges across leave and re-join', async () => {
      const id = await newGroup();
      expect(await store.seqRanges(id, 'ann')).toEqual([{ after: 0, until: null }]);
      await store.addMember(id, 'bob', 'member', 10, 5);
      await store.removeMember(id, 'bob', true, 9);
      expect(await store.seqRanges(id, 'bob')).toEqual([{ after: 5, until: 9 }]);
      await store.addMember(id, 'bob', 'member', 10, 20);
      expect(await store.seqRanges(id, 'bob')).toEqual([
        { after: 5, until: 9 },
        { after: 20, until: null },
      ]);
      expect(await store.seqRanges(id, 'nobody')).toEqual([]);
    });

    it('raises delivered watermarks in batches, forward only in any order, and counts receipts', async () => {
      const id = await newGroup('a0');
      for (const userId of ['a1', 'a2', 'a3']) await store.addMember(id, userId, 'member', 10);
      await store.raiseDelivered([
        { groupId: id, userId: 'a1', seq: 7 },
        { groupId: id, userId: 'a2', seq: 4 },
      ]);
      await store.raiseDelivered([{ groupId: id, userId: 'a1', seq: 3 }]); // late and lower: no effect
      await store.setReadSeq(id, 'a3', 6); // read implies delivered
      await store.setReadSeq(id, 'a2', 2);
      expect(await store.receipts(id, 5, '', 10)).toEqual({
        members: 4,
        deliveredTo: 2,
        readBy: 1,
        readers: [{ userId: 'a3', readSeq: 6 }],
      });
      expect(await store.receipts(id, 2, '', 1)).toMatchObject({
        deliveredTo: 3,
        readBy: 2,
        readers: [{ userId: 'a2', readSeq: 2 }],
      });
      expect(await store.receipts(id, 2, 'a2', 1)).toMatchObject({
        readBy: 2,
        readers: [{ userId: 'a3', readSeq: 6 }],
      });
      expect(await store.receipts(id, 8, '', 10)).toMatchObject({ members: 4, deliveredTo: 0, readBy: 0, readers: [] });
    });

    it('deletes a group with its memberships, pointers, watermarks and ranges', async () => {
      const id = await newGroup('d0');
      await store.addMember(id, 'd1', 'member', 10);
      await store.raiseDelivered([{ groupId: id, userId: 'd1', seq: 3 }]);
      await store.deleteGroup(id);
      expect(await store.getGroup(id)).toBeNull();
      expect(await store.getMember(id, 'd1')).toBeNull();
      expect(await store.listMembers(id, '', 10)).toEqual([]);
      expect((await store.listMemberships('d1', '', 100)).map((m) => m.groupId)).not.toContain(id);
      expect(await store.seqRanges(id, 'd1')).toEqual([]);
      expect(await store.receipts(id, 1, '', 10)).toEqual({ members: 0, deliveredTo: 0, readBy: 0, readers: [] });
    });
  });
}
