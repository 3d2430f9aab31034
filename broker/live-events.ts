import type { Aedes, PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import type { DeliveredMark } from '../groups/group-store.js';
import { eventsTopic, type UserEvent } from '../protocol/index.js';
import { deliver0, type MessageBus, messageBus, subscriptionOf } from './aedes.js';
import type { LiveUsers } from './live-users.js';

/** Where live events of a group travel between nodes: no client may subscribe to `$` topics [MQTT-4.7.2-1]. */
const LIVE_TOPIC_PREFIX = '$chorus/live/';
/** A live event on the bus: the event, and the one member not to tell (its author; '' for nobody). */
type LiveEntry = { except: string; event: UserEvent };
/** (group, user) presence changes held for the next batch; one more sends the batch at once. */
const MAX_PENDING_PRESENCE = 10_000;
const noop = () => {};

export interface LiveEventsDeps {
  aedes: Aedes;
  live: LiveUsers;
  /** A group's member count as kept per node (Groups.keptMemberCount). */
  memberCount: (groupId: string) => Promise<number>;
  /** Groups larger than this get no live events (typing, receipts, presence): members read them on request. */
  liveEventsMaxGroupMembers: number;
  presenceBatchMs: number;
  logger: Logger;
}

/**
 * Events on users' own topics (`users/{u}/events`): one user's (acks, membership changes), and a group's live events
 * (typing, read and delivered receipts, presence), told to the group's members on every node.
 */
export class LiveEvents {
  private readonly bus: MessageBus;
  /** Presence changes for the next batch: group id -> user id -> online. */
  private pendingPresence = new Map<string, Map<string, boolean>>();
  private pendingPresenceCount = 0;
  private presenceTimer: NodeJS.Timeout | null = null;
  /** Set by close(): the node's clients are leaving, nobody here is told anything more. */
  private closing = false;

  constructor(private readonly deps: LiveEventsDeps) {
    this.bus = messageBus(deps.aedes);
    this.bus.on(`${LIVE_TOPIC_PREFIX}+`, (packet, done) => {
      this.deliverLive(packet.topic.slice(LIVE_TOPIC_PREFIX.length), packet.payload);
      done();
    });
  }

  /** Publishes an event on a user's own events topic (to the user's clients on every node). */
  sendEvent(userId: string, event: UserEvent): void {
    const packet: PublishPacket = {
      cmd: 'publish',
      topic: eventsTopic(userId),
      payload: Buffer.from(JSON.stringify(event)),
      qos: 1,
      retain: false,
      dup: false,
    };
    this.deps.aedes.publish(packet, (err) => {
      if (err) this.deps.logger.error({ err, topic: packet.topic }, 'publish failed');
    });
  }

  /**
   * Tells a group's members but one of a live event (typing, read and delivered receipts) on their events topics, on
   * every node. One message per event (a list of them: see tellPresence) crosses the node's message bus (Redis in a
   * cluster), not one per member: each node hands it to its own clients of the group's members (deliverLive). Only
   * groups of at most liveEventsMaxGroupMembers: in larger ones such events are not pushed (read them on request).
   * Best effort: when the group's size cannot be read, nobody is told.
   */
  readonly tellGroup = (groupId: string, event: UserEvent, except: string): Promise<void> =>
    this.tellGroupAll(groupId, [{ except, event }]);

  /** Delivered watermarks as stored, told to each group's members: all marks of a group in one event. */
  tellDelivered(marks: DeliveredMark[]): void {
    if (this.closing) return; // the clients are leaving: nobody to tell
    const byGroup = new Map<string, { userId: string; seq: number }[]>();
    for (const { groupId, userId, seq } of marks) {
      const list = byGroup.get(groupId);
      if (list) list.push({ userId, seq });
      else byGroup.set(groupId, [{ userId, seq }]);
    }
    for (const [groupId, groupMarks] of byGroup)
      void this.tellGroup(groupId, { type: 'delivered', groupId, marks: groupMarks }, '');
  }

  /**
   * Tells the user's fellow members that the user came online or went offline, on their events topics, in groups of
   * at most liveEventsMaxGroupMembers (in larger ones presence is read on demand: GET /v1/groups/:id/presence). The
   * changes of presenceBatchMs are told together, one bus message per group (each node hands the events to its own
   * clients), each user's last state only: a reconnect storm, or a node's clients moving to the others, costs a
   * message per group instead of one per member and group, and a member who flapped counts once. The groups come from
   * the live ACL set, which connecting already loaded: no second scan of the user's memberships, and no read of any
   * group's members on this path.
   */
  announcePresence(userId: string, groupIds: string[], online: boolean): void {
    if (this.closing) return; // presence leaves with the node (Presence.close)
    for (const groupId of groupIds) {
      let changes = this.pendingPresence.get(groupId);
      if (!changes) this.pendingPresence.set(groupId, (changes = new Map()));
      if (!changes.has(userId)) this.pendingPresenceCount += 1;
      changes.set(userId, online);
    }
    if (this.pendingPresenceCount > MAX_PENDING_PRESENCE) this.tellPresence();
    else this.presenceTimer ??= setTimeout(() => this.tellPresence(), this.deps.presenceBatchMs).unref();
  }

  /** The node is closing: what is pending is dropped, and nothing more is told. */
  close(): void {
    this.closing = true;
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
  }

  private tellPresence(): void {
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    const pending = this.pendingPresence;
    this.pendingPresence = new Map();
    this.pendingPresenceCount = 0;
    for (const [groupId, changes] of pending) {
      const entries = [...changes].map(
        ([userId, online]): LiveEntry => ({ except: userId, event: { type: 'presence', groupId, userId, online } }),
      );
      void this.tellGroupAll(groupId, entries);
    }
  }

  /** tellGroup for several events of one group, as one message on the bus. */
  private async tellGroupAll(groupId: string, entries: LiveEntry[]): Promise<void> {
    const { logger } = this.deps;
    try {
      if ((await this.deps.memberCount(groupId)) > this.deps.liveEventsMaxGroupMembers) return;
    } catch (err) {
      logger.debug(
        { err: (err as Error).message, groupId, type: entries[0]!.event.type },
        'live event not told: group size unreadable',
      );
      return;
    }
    const packet = {
      cmd: 'publish' as const,
      topic: `${LIVE_TOPIC_PREFIX}${groupId}`,
      payload: Buffer.from(JSON.stringify(entries)),
      qos: 0 as const,
      retain: false as const,
    };
    this.bus.emit(packet, (err?: Error) => {
      if (err) logger.debug({ err: err.message, groupId, type: entries[0]!.event.type }, 'live event not told');
    });
  }

  /**
   * A live event from any node, to this node's clients of the group's members, at QoS 0: these are hints that the next
   * one supersedes, and the receipts route has the truth, so none is queued for an offline session or waits for a
   * PUBACK. The members are those the live ACL knows here, kept current by every membership change: no store read,
   * so that an event costs each node in proportion to its own clients of the group, and nothing when it has none.
   */
  private deliverLive(groupId: string, raw: Buffer): void {
    const { live } = this.deps;
    const members = live.membersOf(groupId);
    if (members.length === 0) return;
    const entries = (JSON.parse(raw.toString()) as LiveEntry[]).map(({ except, event }) => ({
      except,
      payload: Buffer.from(JSON.stringify(event)),
    })); // once for all of them
    for (const userId of members) {
      const topic = eventsTopic(userId);
      for (const client of live.clientsOf(userId)) {
        if (!subscriptionOf(client, topic)) continue;
        for (const { except, payload } of entries) {
          if (userId !== except)
            deliver0(client, { cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, noop);
        }
      }
    }
  }
}
