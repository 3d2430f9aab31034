import type { Logger } from 'pino';
import type { GroupAnnouncement, Groups } from '../groups/groups.js';
import type { MembershipChange } from '../groups/membership-feed.js';
import { groupTopic, type UserEvent } from '../protocol/index.js';
import type { LiveEvents } from './live-events.js';
import type { LiveUsers } from './live-users.js';

/**
 * Membership changes on the MQTT side: live subscriptions on this node follow every change at once (a removal takes
 * effect on live subscriptions too), and the users concerned hear of each change once.
 */
export class LiveMemberships {
  private readonly unsubscribe: (() => void)[];

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
    ];
  }

  close(): void {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
  }

  /** Makes live subscriptions on this node follow a membership change; resolves when every client has followed. */
  private async follow(change: MembershipChange): Promise<void> {
    const clients = this.live.apply(change);
    const topic = groupTopic(change.groupId);
    await Promise.all(
      clients.map(
        (client) =>
          new Promise<void>((resolve) => {
            if (change.kind === 'added') client.subscribe({ topic, qos: 1 }, () => resolve());
            // The forward check already refuses the removed member; dropping the subscription frees it.
            else if (change.kind === 'removed' || change.kind === 'group-deleted')
              client.unsubscribe({ unsubscriptions: [topic] } as never, () => resolve());
            else resolve();
          }),
      ),
    );
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
