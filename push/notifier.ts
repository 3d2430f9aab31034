import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Presence } from '../broker/presence.js';
import type { Groups } from '../groups/groups.js';
import { MembershipCache } from '../groups/membership-cache.js';
import { messageTypeOf, type StampedMessage } from '../protocol/index.js';
import type { PushSender } from './push-sender.js';
import { MAX_REACHABLE_QUERY, type PushStore } from './push-store.js';

/** What a push carries (encrypted): enough for a notification and a badge, not the whole message. */
export interface PushPayload {
  type: 'chorus.message';
  groupId: string;
  /** The newest message this push stands for. */
  seq: number;
  senderId: string;
  preview: string;
  /** The member's unread count in this group, as of `seq`. */
  unread: number;
  /** How many messages this push stands for (more than 1 when several were collapsed into it). */
  count: number;
  mention: boolean;
}

interface Pending {
  message: StampedMessage;
  count: number;
  mention: boolean;
}

/** One group's part of a pass: its queued messages, and the users they may reach. */
interface GroupPass {
  groupId: string;
  messages: StampedMessage[];
  userIds: string[];
  mentionsOnly: boolean;
}

interface Window {
  /** What arrived since the last push, to go out when the window ends. */
  pending: Pending | null;
  timer: NodeJS.Timeout;
}

const MAX_QUEUED_MESSAGES = 10_000;
const MAX_WINDOWS = 100_000;
const MEMBERS_PAGE = MAX_REACHABLE_QUERY;
/** Member ids kept between passes, over all groups (a few MB): a busy group's pass then reads no members. */
const MAX_KEPT_MEMBER_IDS = 200_000;
const PREVIEW_CHARS = 120;
/**
 * Passes over a group's members start at most this often: a busy group's commits arriving meanwhile share one pass,
 * so reading members and presence costs per pass, not per commit. A quiet group's first message starts one at once.
 */
export const PASS_INTERVAL_MS = 100;
/** A pass reads the presence of its groups' users together, in runs of groups of about this many users. */
const PRESENCE_READ_USERS = 5_000;
/**
 * A pass that cannot read presence (Redis away, failing over) or a group's members (the store away) puts its messages
 * back at the head of the queue for the next pass: an outage delays their pushes instead of losing them. A message
 * older than this is given up (counted in `dropped`): a push about it would come too late to matter.
 */
const RETRY_MAX_AGE_MS = 60_000;

/** The notification's text: the body's start, or what is attached ("📎 photo.jpg, 2 more"). */
export function previewOf(message: StampedMessage): string {
  if (message.body !== undefined) return message.body.slice(0, PREVIEW_CHARS);
  const [first, ...more] = message.attachments ?? [];
  if (!first) return '';
  const kind = first.mimeType.split('/')[0];
  const what =
    first.name ??
    (kind === 'image' ? 'a photo' : kind === 'video' ? 'a video' : kind === 'audio' ? 'an audio clip' : 'a file');
  return `📎 ${what}${more.length > 0 ? `, ${more.length} more` : ''}`.slice(0, PREVIEW_CHARS);
}

/** A Topic header (RFC 8030 §5.4: at most 32 base64url characters) per group, so a newer push replaces an older one. */
const topicOf = (groupId: string): string => createHash('sha256').update(groupId).digest('base64url').slice(0, 32);

/**
 * Tells offline members about new messages through Web Push, off the publish path: the sequencer hands each stored
 * message over and returns at once; a bounded queue and the sender's own limits keep a slow or failing push service
 * from ever delaying or losing a message. Per user and group, the first message of a quiet period is pushed at once;
 * what follows within `windowMs` goes out as one push at the end of the window, with the count.
 */
export class Notifier {
  private readonly queue: StampedMessage[] = [];
  private readonly windows = new Map<string, Window>();
  /** A drain is scheduled or running. */
  private processing = false;
  private lastPassAt = -Infinity;
  private closed = false;
  /** A pass failed and none has worked since: the failures after the first are not logged. */
  private failing = false;
  dropped = 0;

  private readonly memberIds: MembershipCache<string[]>;

  /**
   * `everyMessageMaxMembers`: groups up to this size push every message to their offline members (a pass reads the
   * members); in larger ones only members mentioned by name are pushed (a pass reads just those), so that a busy big
   * group does not cost a read of all its members every pass.
   */
  constructor(
    private readonly groups: Groups,
    private readonly presence: Presence,
    private readonly store: PushStore,
    private readonly sender: PushSender,
    private readonly windowMs: number,
    private readonly everyMessageMaxMembers: number,
    private readonly logger: Logger,
  ) {
    this.memberIds = new MembershipCache<string[]>(groups, {
      maxWeight: MAX_KEPT_MEMBER_IDS,
      weigh: (userIds) => userIds.length,
    });
  }

  /** Called for every newly stored message; never blocks and never throws. Only types that are pushed (not events). */
  onMessage(message: StampedMessage): void {
    if (this.closed || !messageTypeOf(message.type).pushed) return;
    this.queue.push(message);
    this.boundQueue();
    if (!this.processing) this.schedulePass();
  }

  /** Never before the current fan-out loop ends (a whole commit's messages share a pass), nor within the interval. */
  private schedulePass(): void {
    this.processing = true;
    setTimeout(() => void this.drain(), Math.max(0, this.lastPassAt + PASS_INTERVAL_MS - performance.now())).unref();
  }

  private async drain(): Promise<void> {
    if (this.queue.length > 0 && !this.closed) {
      this.lastPassAt = performance.now();
      const byGroup = new Map<string, StampedMessage[]>();
      for (const message of this.queue.splice(0, this.queue.length)) {
        const list = byGroup.get(message.groupId);
        if (list) list.push(message);
        else byGroup.set(message.groupId, [message]);
      }
      let run: GroupPass[] = [];
      let runUsers = 0;
      for (const [groupId, messages] of byGroup) {
        if (this.closed) break;
        try {
          const pass = await this.passOf(groupId, messages);
          run.push(pass);
          runUsers += pass.userIds.length;
        } catch (err) {
          this.passFailed(err, messages);
        }
        if (runUsers >= PRESENCE_READ_USERS) {
          await this.notifyRun(run);
          [run, runUsers] = [[], 0];
        }
      }
      await this.notifyRun(run);
    }
    this.processing = false;
    if (this.queue.length > 0 && !this.closed) this.schedulePass();
  }

  /**
   * Whom a group's queued messages may reach: all its members in a group of at most everyMessageMaxMembers, the members
   * mentioned by name in a larger one (whose pass would otherwise read every member each time it has news). A group's
   * member ids are kept between passes until a membership change (see MembershipCache), so a busy group's pass reads
   * none; whether a user is still a member, and their read pointer, is read when a push is about to go out.
   */
  private async passOf(groupId: string, messages: StampedMessage[]): Promise<GroupPass> {
    const members = await this.groups.keptMemberCount(groupId);
    const everyMessage = members <= this.everyMessageMaxMembers;
    const userIds = everyMessage
      ? await this.memberIds.get(groupId, () => this.readMemberIds(groupId))
      : [...new Set(messages.flatMap((message) => message.mentions ?? []))];
    return { groupId, messages, userIds, mentionsOnly: !everyMessage };
  }

  /**
   * Notifies a run of groups' passes, in seq order per group, with one presence read for all their users (a command per
   * group would cost as much as the messages' delivery in a cluster of small groups). The push store is read per page
   * of members, never per member, so that a pass stays short and the groups after it are not kept waiting.
   */
  private async notifyRun(run: GroupPass[]): Promise<void> {
    if (run.length === 0 || this.closed) return;
    let online: Set<string>;
    try {
      online = await this.presence.online([...new Set(run.flatMap((pass) => pass.userIds))]);
    } catch (err) {
      this.passFailed(
        err,
        run.flatMap((pass) => pass.messages),
      );
      return;
    }
    if (this.failing) this.logger.info('push notification passes work again');
    this.failing = false;
    for (const { groupId, messages, userIds, mentionsOnly } of run) {
      try {
        for (let at = 0; at < userIds.length; at += MEMBERS_PAGE) {
          const page = userIds.slice(at, at + MEMBERS_PAGE);
          if (!(await this.notifyPage(groupId, page, online, messages, mentionsOnly))) return;
        }
      } catch (err) {
        this.logger.warn({ err: (err as Error).message, groupId }, 'push notification pass failed');
      }
    }
  }

  /** Puts a failed pass's messages back at the head of the queue, but those older than RETRY_MAX_AGE_MS. */
  private passFailed(err: unknown, messages: StampedMessage[]): void {
    if (!this.failing) this.logger.warn({ err: (err as Error).message }, 'push notification pass failed; retrying');
    this.failing = true;
    const since = Date.now() - RETRY_MAX_AGE_MS;
    const kept = messages.filter((message) => Date.parse(message.createdAt) >= since);
    this.dropped += messages.length - kept.length;
    this.queue.unshift(...kept);
    this.boundQueue();
  }

  /** Keeps the queue within MAX_QUEUED_MESSAGES by dropping its oldest messages (counted in `dropped`). */
  private boundQueue(): void {
    const over = this.queue.length - MAX_QUEUED_MESSAGES;
    if (over <= 0) return;
    this.queue.splice(0, over);
    this.dropped += over;
  }

  private async readMemberIds(groupId: string): Promise<string[]> {
    const userIds: string[] = [];
    for await (const page of this.groups.memberPages(groupId, MEMBERS_PAGE))
      for (const member of page) userIds.push(member.userId);
    return userIds;
  }

  /**
   * Offers pushes to a page of users: one store read for those offline (which of them push can reach, and how they
   * want it). With `mentionsOnly`, a user hears only of messages naming them. Returns false when the notifier closed
   * meanwhile: a node that is closing stops mid-pass, since its clients leaving would otherwise make every member look
   * offline.
   */
  private async notifyPage(
    groupId: string,
    userIds: string[],
    online: Set<string>,
    messages: StampedMessage[],
    mentionsOnly: boolean,
  ): Promise<boolean> {
    if (this.closed) return false;
    const offline = userIds.filter(
      (userId) => !online.has(userId) && messages.some((message) => message.senderId !== userId),
    );
    if (offline.length === 0) return true;
    const reachable = await this.store.reachable(offline, groupId);
    if (this.closed) return false;
    for (const userId of offline) {
      const mode = reachable.get(userId);
      if (mode === undefined || mode === 'muted') continue;
      for (const message of messages) {
        if (message.senderId === userId) continue;
        const named = message.mentions?.includes(userId) ?? false;
        // @everyone counts as a mention of each member: it reaches `mentions` members too, with high urgency.
        const mention = named || (message.mentionEveryone === true && !mentionsOnly);
        if ((mode === 'mentions' || mentionsOnly) && !mention) continue;
        this.offer(userId, { message, count: 1, mention });
      }
    }
    return true;
  }

  private offer(userId: string, next: Pending): void {
    const key = `${userId}\u0000${next.message.groupId}`;
    const window = this.windows.get(key);
    if (window) {
      const p = window.pending;
      window.pending = p ? { message: next.message, count: p.count + 1, mention: p.mention || next.mention } : next;
      return;
    }
    if (this.windows.size >= MAX_WINDOWS) {
      this.dropped += 1;
      return;
    }
    void this.push(userId, next);
    this.openWindow(key, userId);
  }

  /** After a push, the next one for this user and group waits for the end of the window. */
  private openWindow(key: string, userId: string): void {
    const window: Window = {
      pending: null,
      timer: setTimeout(() => {
        this.windows.delete(key);
        if (window.pending && !this.closed) {
          void this.push(userId, window.pending);
          this.openWindow(key, userId);
        }
      }, this.windowMs),
    };
    window.timer.unref();
    this.windows.set(key, window);
  }

  /**
   * Pushes to every device of the user, if they are still a member (the member ids a pass worked from may be older
   * than a removal: a removed member is never told of the group's messages), with their unread count as of now.
   */
  private async push(userId: string, pending: Pending): Promise<void> {
    const { message } = pending;
    const [member, subscriptions] = await Promise.all([
      this.groups.findMember(message.groupId, userId).catch(() => null),
      this.store.listSubscriptions(userId).catch(() => []),
    ]);
    if (!member || this.closed) return;
    const payload: PushPayload = {
      type: 'chorus.message',
      groupId: message.groupId,
      seq: message.seq,
      senderId: message.senderId,
      preview: previewOf(message),
      unread: Math.max(0, message.seq - member.readSeq),
      count: pending.count,
      mention: pending.mention,
    };
    for (const subscription of subscriptions) {
      this.sender.send(subscription, payload, {
        urgency: pending.mention ? 'high' : 'normal',
        topic: topicOf(message.groupId),
      });
    }
  }

  close(): void {
    this.closed = true;
    this.memberIds.close();
    for (const window of this.windows.values()) clearTimeout(window.timer);
    this.windows.clear();
    this.sender.close();
  }
}
