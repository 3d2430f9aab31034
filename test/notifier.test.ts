import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import webPush from 'web-push';
import { afterAll, describe, expect, it } from 'vitest';
import { PresenceLocal } from '../broker/presence.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { Groups, MembershipFeedLocal } from '../groups/groups.js';
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
  const notifier = new Notifier(groups, presence, pushStore, new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, pushStore, logger), 1000, logger);
  afterAll(() => notifier.close());

  it('reads members and presence once per pass, not once per commit, and starts a quiet group at once', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'busy', members: ['bob', 'carol'] });
    let seq = 0;
    const commit = () => {
      for (let i = 0; i < 5; i++) {
        notifier.onMessage(toStampedMessage(groupId, ++seq, { senderId: 'alice', clientMsgId: `m${seq}`, type: 'text', body: 'hi', createdAtMs: Date.now() }));
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

  it('stops a pass mid-group once closed (its clients leaving would make every member look offline)', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'big', members: Array.from({ length: 90 }, (_, i) => `m${i}`) });
    let modesRead = 0;
    // Each offline member's push setting is read one by one: a millisecond each makes the pass last about 90 ms.
    const slowStore = Object.create(pushStore) as PushStoreSqlite;
    slowStore.getMode = async (userId, group) => {
      modesRead += 1;
      await sleep(1);
      return pushStore.getMode(userId, group);
    };
    const closing = new Notifier(groups, new PresenceLocal(), slowStore, new PushSender(webPush.generateVAPIDKeys(), 'mailto:ops@example.com', 60, pushStore, logger), 1000, logger);
    closing.onMessage(toStampedMessage(groupId, 1, { senderId: 'alice', clientMsgId: 'big-1', type: 'text', body: 'hi', createdAtMs: Date.now() }));
    while (modesRead < 5) await sleep(1);
    closing.close();
    const atClose = modesRead;
    await sleep(200);
    expect(modesRead).toBeLessThanOrEqual(atClose + 1); // the read under way when it closed, and none after
  });
});
