import type { Client } from 'aedes';
import { describe, expect, it } from 'vitest';
import { LiveUsers } from '../broker/live-users.js';

// LiveUsers keys its state by the client object only; a bare object stands for a connection here.
const client = () => ({}) as Client;
const sorted = (ids: string[]) => [...ids].sort();

describe("LiveUsers: the groups of the users connected here, and each group's users here", () => {
  it('indexes a user under every loaded group, once however many clients, and forgets them with the last client', async () => {
    const live = new LiveUsers();
    const [ann1, ann2, bob] = [client(), client(), client()];
    await live.attach(ann1, 'ann', async () => ['g1', 'g2']);
    await live.attach(ann2, 'ann', async () => ['never read: ann is loaded']);
    await live.attach(bob, 'bob', async () => ['g2']);
    expect(live.membersOf('g1')).toEqual(['ann']);
    expect(sorted(live.membersOf('g2'))).toEqual(['ann', 'bob']);
    expect(live.detach(ann1)).toBe(false);
    expect(sorted(live.membersOf('g2'))).toEqual(['ann', 'bob']);
    expect(live.detach(ann2)).toBe(true);
    expect(live.membersOf('g1')).toEqual([]);
    expect(live.membersOf('g2')).toEqual(['bob']);
  });

  it('follows additions, removals and deletions, for the ACL and the index alike', async () => {
    const live = new LiveUsers();
    const [ann, bob] = [client(), client()];
    await live.attach(ann, 'ann', async () => ['g1']);
    await live.attach(bob, 'bob', async () => ['g1']);
    expect(live.apply({ kind: 'added', groupId: 'g2', userId: 'ann', role: 'member', by: 'bob' })).toEqual([ann]);
    expect(live.isMember(ann, 'g2')).toBe(true);
    expect(live.membersOf('g2')).toEqual(['ann']);
    live.apply({ kind: 'removed', groupId: 'g1', userId: 'bob', by: 'ann' });
    expect(live.isMember(bob, 'g1')).toBe(false);
    expect(live.membersOf('g1')).toEqual(['ann']);
    expect(live.apply({ kind: 'removed', groupId: 'g1', userId: 'carl', by: 'ann' })).toEqual([]);
    // A deletion reaches the group's members here (bob left g1), and nobody else.
    expect(live.apply({ kind: 'group-deleted', groupId: 'g1', userId: 'ann', by: 'ann' })).toEqual([ann]);
    expect(live.isMember(ann, 'g1')).toBe(false);
    expect(live.membersOf('g1')).toEqual([]);
    expect(live.groupsOf('ann')).toEqual(['g2']);
  });

  it('applies the changes that land during the load on top of it, and indexes nobody whose clients left meanwhile', async () => {
    const live = new LiveUsers();
    let finishLoad!: (groups: string[]) => void;
    const ann = client();
    const attached = live.attach(ann, 'ann', () => new Promise((resolve) => (finishLoad = resolve)));
    live.apply({ kind: 'added', groupId: 'g3', userId: 'ann', role: 'member', by: 'bob' });
    live.apply({ kind: 'removed', groupId: 'g1', userId: 'ann', by: 'bob' });
    expect(live.membersOf('g3')).toEqual([]); // not before the load: the client is not authorized yet
    finishLoad(['g1', 'g2']);
    await attached;
    expect(sorted(live.groupsOf('ann'))).toEqual(['g2', 'g3']);
    expect(live.membersOf('g1')).toEqual([]);
    expect(live.membersOf('g3')).toEqual(['ann']);

    // A group deleted while a user's groups load is gone from them once loaded, whatever the load read.
    const cara = client();
    const caraAttached = live.attach(cara, 'cara', () => new Promise((resolve) => (finishLoad = resolve)));
    expect(live.apply({ kind: 'group-deleted', groupId: 'g5', userId: 'bob', by: 'bob' })).toEqual([cara]);
    finishLoad(['g5', 'g2']);
    await caraAttached;
    expect(live.groupsOf('cara')).toEqual(['g2']);
    expect(live.membersOf('g5')).toEqual([]);

    const bob = client();
    const bobAttached = live.attach(bob, 'bob', () => new Promise((resolve) => (finishLoad = resolve)));
    live.detach(bob);
    finishLoad(['g2']);
    await bobAttached;
    expect(sorted(live.membersOf('g2'))).toEqual(['ann', 'cara']);
  });
  it("reads a user's groups again: keeps the known ones meanwhile, applies changes at once and again on top of the read", async () => {
    const live = new LiveUsers();
    const [ann, bob] = [client(), client()];
    await live.attach(ann, 'ann', async () => ['g1', 'g2']);
    await live.attach(bob, 'bob', async () => ['g2']);
    let finishRead!: (groups: string[]) => void;
    // The store says: ann left g2 and joined g3 (changes this node missed), and is still in g1.
    const reloaded = live.reload('ann', () => new Promise((resolve) => (finishRead = resolve)));
    expect(live.isMember(ann, 'g2')).toBe(true); // what was known holds until the read is back
    // A change heard meanwhile counts at once, and the read (which may be older) does not undo it.
    live.apply({ kind: 'removed', groupId: 'g1', userId: 'ann', by: 'bob' });
    expect(live.isMember(ann, 'g1')).toBe(false);
    finishRead(['g1', 'g3']);
    expect(await reloaded).toEqual({ joined: ['g3'], left: ['g2'], clients: [ann] });
    expect(sorted(live.groupsOf('ann'))).toEqual(['g3']);
    expect(live.membersOf('g2')).toEqual(['bob']);
    expect(live.membersOf('g3')).toEqual(['ann']);
    expect(live.isMember(ann, 'g1')).toBe(false);
    // A user gone meanwhile, or never here, is left alone.
    expect(await live.reload('carl', async () => ['g1'])).toBeUndefined();
    const gone = live.reload('bob', async () => ['g9']);
    live.detach(bob);
    expect(await gone).toBeUndefined();
    expect(live.membersOf('g9')).toEqual([]);
  });
});
