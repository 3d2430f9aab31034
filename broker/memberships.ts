import type { Client } from 'aedes';
import type { Logger } from 'pino';
import type { GroupAnnouncement, Groups } from '../groups/groups.js';
import { joins, type MembershipChange } from '../groups/membership-feed.js';
import { groupTopic, type UserEvent } from '../protocol/index.js';
import type { LiveEvents } from './live-events.js';
import type { LiveUsers } from './live-users.js';

/** Live users whose groups are read at once when this node reads its memberships again. */
const RELOADS_IN_FLIGHT = 16;
/** A user whose groups could not be read then (the store away too) is tried again this much later. */
const RELOAD_RETRY_MS = 2_000;

/**
 * Membership changes on the MQTT side: live subscriptions on this node follow every change at once (a removal takes
 * effect on live subscriptions too), and the users concerned hear of each change once. When this node may have missed
 * changes (Redis was away), every live user's groups are read again from the store and their subscriptions follow.
 */
export class LiveMemberships {
  private readonly unsubscribe: (() => void)[];
  /** Counts the times changes were missed: a read-again pass that a newer one started stops retrying. */
  private missed = 0;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly groups: Groups,
    private readonly live: LiveUsers,
    private readonly events: LiveEvents,
    private readonly logger: Logger,
  ) {
    this.unsubscribe = [
      groups.subscribe((change) => this.follow(change)),
      groups.onAnnounce((change) => this.announce(change)),
      groups.onGroupAnnounce((announcement) => void this.announceGroup(announcement)),
      groups.onMissed(() => void this.readAgain(this.live.userIds(), ++this.missed)),
    ];
  }

  close(): void {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    clearTimeout(this.retry);
  }

  /** Makes live subscriptions on this node follow a membership change; resolves when every client has followed. */
  private async follow(change: MembershipChange): Promise<void> {
    const clients = this.live.apply(change);
    const joined = joins(change);
    if (joined !== undefined) await this.resubscribe(clients, change.groupId, joined);
  }

  /**
   * Subscribes the clients to the group's topic (joined) or unsubscribes them; resolves when every one has. The forward
   * check already refuses a removed member; dropping the subscription frees it.
   */
  private async resubscribe(clients: Client[], groupId: string, joined: boolean): Promise<void> {
    const topic = groupTopic(groupId);
    await Promise.all(
      clients.map(
        (client) =>
          new Promise<void>((resolve) => {
            if (joined) client.subscribe({ topic, qos: 1 }, () => resolve());
            else client.unsubscribe({ unsubscriptions: [topic] } as never, () => resolve());
          }),
      ),
    );
  }

  /**
   * Reads the groups of these live users again, RELOADS_IN_FLIGHT at a time, and makes their subscriptions follow what
   * changed. Users whose read failed are tried again RELOAD_RETRY_MS later, until a newer pass (`pass`) starts.
   */
  private async readAgain(userIds: string[], pass: number): Promise<void> {
    clearTimeout(this.retry);
    const failed: string[] = [];
    let [next, joined, left] = [0, 0, 0];
    const reader = async () => {
      while (next < userIds.length) {
        const userId = userIds[next++]!;
        try {
          const changed = await this.live.reload(userId, () => this.groups.allGroupIds(userId));
          if (!changed) continue;
          joined += changed.joined.length;
          left += changed.left.length;
          for (const groupId of changed.left) await this.resubscribe(changed.clients, groupId, false);
          for (const groupId of changed.joined) await this.resubscribe(changed.clients, groupId, true);
        } catch {
          failed.push(userId);
        }
      }
    };
    await Promise.all(Array.from({ length: RELOADS_IN_FLIGHT }, reader));
    this.logger.info(
      { users: userIds.length, joined, left, failed: failed.length },
      'memberships read again: changes may have been missed while Redis was away',
    );
    if (failed.length > 0 && pass === this.missed) {
      this.retry = setTimeout(() => void this.readAgain(failed, pass), RELOAD_RETRY_MS);
      this.retry.unref();
    }
  }

  /**
   * Tells the user of a change made on this node, once: the event is routed to the user's clients on every node, so
   * announcing it from each node's feed listener would deliver it once per node.
   */
  private announce(change: MembershipChange): void {
    const { groupId, userId, by } = change;
    if (change.kind === 'added')
      this.events.sendEvent(userId, { type: 'member-added', groupId, userId, role: change.role, by });
    else if (change.kind === 'removed') this.events.sendEvent(userId, { type: 'member-removed', groupId, userId, by });
    else if (change.kind === 'role-changed')
      this.events.sendEvent(userId, { type: 'role-changed', groupId, userId, role: change.role, by });
  }

  /** Tells every member (of any group size: these are rare admin acts) of a group update or deletion, once. */
  private async announceGroup(announcement: GroupAnnouncement): Promise<void> {
    if (announcement.kind === 'group-deleted') {
      const { groupId, by } = announcement;
      for (const userId of announcement.memberIds)
        this.events.sendEvent(userId, { type: 'group-deleted', groupId, by });
      return;
    }
    const { group, by } = announcement;
    const event: Extract<UserEvent, { type: 'group-updated' }> = {
      type: 'group-updated',
      groupId: group.id,
      by,
      name: group.name,
      historyVisibility: group.historyVisibility,
    };
    if (group.description !== undefined) event.description = group.description;
    if (group.avatarUrl !== undefined) event.avatarUrl = group.avatarUrl;
    if (group.retentionDays !== undefined) event.retentionDays = group.retentionDays;
    try {
      for await (const page of this.groups.memberPages(group.id, 1000))
        for (const member of page) this.events.sendEvent(member.userId, event);
    } catch (err) {
      this.logger.warn(
        { err: (err as Error).message, groupId: group.id },
        'group update not told to every member: members unreadable',
      );
    }
  }
}
