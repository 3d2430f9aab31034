import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import webPush from 'web-push';
import { afterAll, describe, expect, it } from 'vitest';
import { PresenceLocal } from '../broker/presence.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { Groups } from '../groups/groups.js';
import { MembershipFeedLocal } from '../groups/membership-feed.js';
import { Notifier } from '../push/notifier.js';
import { PushSender } from '../push/push-sender.js';
import { PushStoreSqlite } from '../push/push-store-sqlite.js';
import { toStampedMessage } from '../sequencer/message-log.js';

/** The in-process presence, counting how often the notifier asks it. */
class CountedPresence extends PresenceLocal {
  asked = 0;
  override async online(userIds: string[]): Promise<Set<string>> {
    this.asked += 1;
    return super.online(userIds);
  }
}

describe('push notifier passes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'chorus-notifier-'));
  const logger = pino({ level: 'silent' });
  const pushStore = new PushStoreSqlite(join(dir, 'push.db'));
  const groups = new Groups(new GroupStoreSqlite(join(dir, 'groups.db'), 'normal'), new MembershipFeedLocal(), 100);
  const presence = new CountedPresence();
  const notifier = new Notifier(
    groups,
    presence,
    pushStore,
    new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, pushStore, logger),
    1000,
    1000,
    logger,
  );
  afterAll(() => notifier.close());

  /** Gives each user one push subscription. */
  const subscribeToPush = async (userIds: string[]) => {
    for (const userId of userIds) {
      await pushStore.saveSubscription(
        {
          userId,
          endpoint: `https://push.example.com/${userId}`,
          p256dh: 'B'.repeat(87),
          auth: 'a'.repeat(22),
          createdAtMs: Date.now(),
        },
        5,
      );
    }
  };

  /** A sender that records whom it would push, and what (seq, mention), instead of sending. */
  const recordingSender = () => {
    const pushed: { userId: string; mention: boolean; seq: number }[] = [];
    const sender = new (class extends PushSender {
      override send(subscription: { userId: string }, payload: object): void {
        const p = payload as { mention: boolean; seq: number };
        pushed.push({ userId: subscription.userId, mention: p.mention, seq: p.seq });
      }
    })(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, pushStore, logger);
    return { sender, pushed };
  };

  it('reads members and presence once per pass, not once per commit, and starts a quiet group at once', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'busy', members: ['bob', 'carol'] });
    let seq = 0;
    const commit = () => {
      for (let i = 0; i < 5; i++) {
        notifier.onMessage(
          toStampedMessage(groupId, ++seq, {
            senderId: 'alice',
            clientMsgId: `m${seq}`,
            type: 'text',
            body: 'hi',
            createdAtMs: Date.now(),
          }),
        );
      }
    };
    const started = performance.now();
    commit();
    while (presence.asked === 0) await sleep(1);
    expect(performance.now() - started).toBeLessThan(100); // the first commit of a quiet period does not wait for the interval
    for (let i = 0; i < 8; i++) {
      commit(); // eight more commits, 5 ms apart: all within one interval
      await sleep(5);
    }
    await sleep(250);
    // One more pass for all of them (two if a stalled machine spread the commits over two intervals), never eight.
    expect(presence.asked).toBeGreaterThanOrEqual(2);
    expect(presence.asked).toBeLessThanOrEqual(3);
  });

  it('reads presence once for all the groups a pass covers, and pushes each group’s offline members', async () => {
    const groupIds: string[] = [];
    for (let g = 0; g < 6; g++) {
      const members = [`pass${g}a`, `pass${g}b`];
      await subscribeToPush(members);
      groupIds.push((await groups.create('alice', { name: `pass ${g}`, members })).id);
    }
    const counted = new CountedPresence();
    await counted.connected('pass0a'); // online: not pushed
    const { sender, pushed } = recordingSender();
    const passes = new Notifier(groups, counted, pushStore, sender, 1000, 1000, logger);
    for (const groupId of groupIds) {
      passes.onMessage(
        toStampedMessage(groupId, 1, {
          senderId: 'alice',
          clientMsgId: `pass-${groupId}`,
          type: 'text',
          body: 'hi',
          createdAtMs: Date.now(),
        }),
      );
    }
    while (pushed.length < 11) await sleep(5);
    expect(counted.asked).toBe(1);
    expect(pushed.map((p) => p.userId).sort()).toEqual(
      groupIds
        .flatMap((_, g) => [`pass${g}a`, `pass${g}b`])
        .filter((u) => u !== 'pass0a')
        .sort(),
    );
    passes.close();
  });

  it('delays the pushes of a pass that could not read presence (Redis away) until it can, and gives up on old messages', async () => {
    const members = ['away-a', 'away-b'];
    await subscribeToPush(members);
    const { id: groupId } = await groups.create('alice', { name: 'presence away', members });
    /** Presence whose first reads fail, as Redis's do while it is away or failing over. */
    const failingFirst = new (class extends CountedPresence {
      override async online(userIds: string[]): Promise<Set<string>> {
        if (this.asked++ < 2) throw new Error('Reached the max retries per request limit (which is 2)');
        return super.online(userIds);
      }
    })();
    const { sender, pushed } = recordingSender();
    const passes = new Notifier(groups, failingFirst, pushStore, sender, 1000, 1000, logger);
    const message = (seq: number, createdAtMs: number) =>
      toStampedMessage(groupId, seq, {
        senderId: 'alice',
        clientMsgId: `away-${seq}`,
        type: 'text',
        body: 'hi',
        createdAtMs,
      });
    passes.onMessage(message(1, Date.now() - 120_000)); // sent two minutes ago: too late to push now
    passes.onMessage(message(2, Date.now()));
    await expect.poll(() => pushed.map((p) => `${p.userId}:${p.seq}`).sort()).toEqual(['away-a:2', 'away-b:2']);
    expect(failingFirst.asked).toBeGreaterThanOrEqual(3); // two failed reads, then the one that pushed
    expect(passes.dropped).toBe(1);
    passes.close();
  });

  it('keeps at most 10,000 messages waiting for a pass, dropping the oldest', async () => {
    await subscribeToPush(['queued-a']);
    const { id: groupId } = await groups.create('alice', { name: 'queue bound', members: ['queued-a'] });
    const { sender, pushed } = recordingSender();
    const passes = new Notifier(groups, new CountedPresence(), pushStore, sender, 1000, 1000, logger);
    for (let seq = 1; seq <= 10_002; seq++) {
      passes.onMessage(
        toStampedMessage(groupId, seq, {
          senderId: 'alice',
          clientMsgId: `queued-${seq}`,
          type: 'text',
          body: 'hi',
          createdAtMs: Date.now(),
        }),
      );
    }
    expect(passes.dropped).toBe(2); // before any pass ran: the queue held 10,000
    await expect.poll(() => pushed.length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(pushed[0]).toMatchObject({ userId: 'queued-a', seq: 3 }); // seqs 1 and 2 were the ones dropped
    passes.close();
  });

  it('reads push settings once per page of members, not per member, and stops a pass once closed', async () => {
    const members = Array.from({ length: 90 }, (_, i) => `m${i}`);
    const { id: groupId } = await groups.create('alice', { name: 'big', members });
    await subscribeToPush(members);
    const reads = { reachable: 0, getMode: 0, listSubscriptions: 0 };
    let reachableDelayMs = 0;
    const countingStore = Object.create(pushStore) as PushStoreSqlite;
    countingStore.reachable = async (userIds, group) => {
      reads.reachable += 1;
      await sleep(reachableDelayMs);
      return pushStore.reachable(userIds, group);
    };
    countingStore.getMode = async (userId, group) => {
      reads.getMode += 1;
      return pushStore.getMode(userId, group);
    };
    countingStore.listSubscriptions = async (userId) => {
      reads.listSubscriptions += 1;
      return pushStore.listSubscriptions(userId);
    };
    const message = (seq: number) =>
      toStampedMessage(groupId, seq, {
        senderId: 'alice',
        clientMsgId: `big-${seq}`,
        type: 'text',
        body: 'hi',
        createdAtMs: Date.now(),
      });
    const newNotifier = () =>
      new Notifier(
        groups,
        new PresenceLocal(),
        countingStore,
        new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, pushStore, logger),
        1000,
        1000,
        logger,
      );

    const open = newNotifier();
    open.onMessage(message(1));
    while (reads.listSubscriptions < members.length) await sleep(5); // each offline member with a subscription gets a push
    expect(reads).toEqual({ reachable: 1, getMode: 0, listSubscriptions: members.length });
    open.close();

    reads.reachable = reads.listSubscriptions = 0;
    reachableDelayMs = 100;
    const closing = newNotifier();
    closing.onMessage(message(2));
    while (reads.reachable === 0) await sleep(1);
    closing.close(); // while the page's settings are being read: nothing is pushed after
    await sleep(300);
    expect(reads.listSubscriptions).toBe(0);
  });

  it('in a group over everyMessageMaxMembers, pushes only members named in a message, and reads just them', async () => {
    const members = Array.from({ length: 8 }, (_, i) => `big${i}`);
    const { id: groupId } = await groups.create('alice', { name: 'over the limit', members });
    await subscribeToPush(members);
    await pushStore.setMode('big1', groupId, 'muted');
    await pushStore.setMode('big2', groupId, 'all');
    const { sender, pushed } = recordingSender();
    let memberPagesRead = 0;
    const countingGroups = Object.create(groups) as Groups;
    countingGroups.memberPages = (group, pageSize) => {
      memberPagesRead += 1;
      return groups.memberPages(group, pageSize);
    };
    // 9 members (alice and 8) over a limit of 5: mentions only. big1 muted this group; big2 asked for every message.
    const mentionsOnly = new Notifier(countingGroups, new PresenceLocal(), pushStore, sender, 1000, 5, logger);
    const message = (seq: number, extra: { mentions?: string[]; mentionEveryone?: true }) =>
      toStampedMessage(groupId, seq, {
        senderId: 'alice',
        clientMsgId: `over-${seq}`,
        type: 'text',
        body: 'hi',
        createdAtMs: Date.now(),
        ...extra,
      });
    mentionsOnly.onMessage(message(1, {}));
    mentionsOnly.onMessage(message(2, { mentionEveryone: true }));
    mentionsOnly.onMessage(message(3, { mentions: ['big0', 'big1', 'not-a-member'] }));
    while (pushed.length === 0) await sleep(5); // the mention
    await sleep(200);
    expect(pushed).toEqual([{ userId: 'big0', mention: true, seq: 3 }]);
    expect(memberPagesRead).toBe(0);
    mentionsOnly.close();

    // The same messages in a group within the limit: every offline member but the muted one hears of them.
    pushed.length = 0;
    const everyMessage = new Notifier(countingGroups, new PresenceLocal(), pushStore, sender, 1000, 9, logger);
    everyMessage.onMessage(message(4, {}));
    while (pushed.length < members.length - 1) await sleep(5); // every member but the muted one
    expect(memberPagesRead).toBe(1);
    everyMessage.close();
  });

  it('keeps a group’s member ids between passes, and never pushes to a user no longer a member, even when it missed the change', async () => {
    const members = ['keep0', 'keep1', 'keep2'];
    const { id: groupId } = await groups.create('alice', { name: 'kept', members });
    await subscribeToPush(members);
    const { sender, pushed } = recordingSender();
    let memberPagesRead = 0;
    // Membership changes never reach this notifier, as when Redis is away: its kept member ids go stale.
    const deaf = Object.create(groups) as Groups;
    deaf.subscribe = () => () => undefined;
    deaf.memberPages = (group, pageSize) => {
      memberPagesRead += 1;
      return groups.memberPages(group, pageSize);
    };
    const kept = new Notifier(deaf, new PresenceLocal(), pushStore, sender, 50, 1000, logger);
    const message = (seq: number) =>
      toStampedMessage(groupId, seq, {
        senderId: 'alice',
        clientMsgId: `kept-${seq}`,
        type: 'text',
        body: 'hi',
        createdAtMs: Date.now(),
      });
    kept.onMessage(message(1));
    while (pushed.length < 3) await sleep(5);
    await groups.removeMember(groupId, 'alice', 'keep1');
    await sleep(100); // past the push window
    kept.onMessage(message(2));
    while (pushed.length < 5) await sleep(5);
    await sleep(100);
    expect(pushed.map((p) => p.userId).sort()).toEqual(['keep0', 'keep0', 'keep1', 'keep2', 'keep2']);
    expect(memberPagesRead).toBe(1);
    kept.close();
  });
});
