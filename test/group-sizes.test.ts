import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { GroupSizes } from '../groups/group-sizes.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { Groups, MembershipFeedLocal } from '../groups/groups.js';

describe('group sizes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'chorus-group-sizes-'));
  const groups = new Groups(new GroupStoreSqlite(join(dir, 'groups.db'), 'normal'), new MembershipFeedLocal(), 100);
  /** The groups, counting the count reads and holding each one for `delayMs`. */
  const counted = (delayMs = 0) => {
    const reads = { count: 0 };
    const wrapped = Object.create(groups) as Groups;
    wrapped.countMembers = async (groupId) => {
      reads.count += 1;
      const members = await groups.countMembers(groupId);
      await sleep(delayMs);
      return members;
    };
    return { wrapped, reads };
  };

  it('reads a group’s count once, then keeps it until a membership change on the feed', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'g', members: ['bob'] });
    const { wrapped, reads } = counted();
    const sizes = new GroupSizes(wrapped);
    expect(await sizes.of(groupId)).toBe(2);
    expect(await sizes.of(groupId)).toBe(2);
    expect(reads.count).toBe(1);
    await groups.addMember(groupId, 'alice', 'carol', 'member');
    expect(await sizes.of(groupId)).toBe(3);
    expect(reads.count).toBe(2);
    sizes.close();
    await groups.addMember(groupId, 'alice', 'dave', 'member');
    expect(await sizes.of(groupId)).toBe(3); // closed: it follows the feed no longer
  });

  it('does not keep a count that a membership change overtook', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'g2', members: ['bob'] });
    const { wrapped, reads } = counted(100);
    const sizes = new GroupSizes(wrapped);
    const first = sizes.of(groupId); // counts 2, then waits
    await sleep(20);
    await groups.addMember(groupId, 'alice', 'carol', 'member');
    expect(await first).toBe(2);
    expect(await sizes.of(groupId)).toBe(3);
    expect(reads.count).toBe(2);
    sizes.close();
  });
});
