import {
  contentOf,
  ERASED_BY_DELETE,
  type MessageContent,
  type ReactionCount,
  type StampedMessage,
} from '../protocol/index.js';

/** A message as the sequencer hands it to the log: everything but its seq. */
export interface MessageDraft extends MessageContent {
  senderId: string;
  clientMsgId: string;
  type: string;
  /** Milliseconds since the epoch, taken by the sequencer when the draft was accepted. */
  createdAtMs: number;
}

/** What later events changed of a stored message (absent: nothing). */
export interface MessageState {
  editedAtMs?: number;
  deletedAtMs?: number;
}

/** The drafts of one group, in the order they must be sequenced. */
export interface GroupAppend {
  groupId: string;
  drafts: MessageDraft[];
}

/** What happened to one draft. A duplicate carries the original message and consumed no seq. */
export interface AppendOutcome {
  message: StampedMessage;
  duplicate: boolean;
}

/**
 * The message log: the durable, ordered record of every group's messages, and the authority on seq and dedup.
 *
 * Contract (checked by test/message-log.contract.ts for every backend):
 * - Seq: within a group, the first message gets seq 1 and each stored message gets the previous seq + 1, in draft
 *   order. A seq, once stored, is never reused or overwritten, across restarts and concurrent callers in a process.
 *   A log shared by many processes holds this with one writer per group (GroupWriters): an append for a group that
 *   another node writes rejects with WriterMovedError, having written nothing of it.
 * - Atomicity: per group, either all of a call's new drafts are stored or none is, and then the call rejects.
 *   Different groups in one call are independent: a backend may commit them separately.
 * - Dedup: a draft whose (senderId, clientMsgId) is already stored in that group, or stands earlier in the same call,
 *   is not stored again. Its outcome is the original message with `duplicate: true`; it consumes no seq.
 * - Calls in flight together: per group, a call made before an earlier one settled is stamped after it (its drafts
 *   are checked against the earlier call's for dedup too), and rejects if the earlier one rejects: its seqs followed
 *   seqs that may never be written. (The sequencer starts no call after a rejection it has not handled yet.)
 * - Durability: when append resolves, every outcome it returns survives a crash of this process.
 * - Result shape: outcomes[i][j] belongs to batch[i].drafts[j].
 * - Reads see every append that resolved before the read began.
 * - Events (types edit, delete, reaction; the sequencer has checked that their target may take them) change their
 *   target, by the time their append resolves, as if applied in seq order, each at most once:
 *   - edit: the target's body becomes the edit's, editedAt the edit's createdAt. An edit of a deleted message is
 *     stored without its body (deletedAt set), so no edit brings a deleted body back.
 *   - delete: the target keeps no body, attachments or mentions, and gets deletedAt; its edits lose their bodies too,
 *     and its reactions are removed. The bodies are erased from the store, not hidden.
 *   - reaction: the sender's emoji is counted on the target (remove: taken back); none on a deleted message.
 *   An event whose target is missing (expired) is stored and changes nothing.
 * - Expiry (retention): messages go oldest first, always a prefix of the group's seqs, so what is kept is one range
 *   [firstSeq, lastSeq] without holes; their dedup entries and reactions go with them (a clientMsgId is a retry only
 *   while its message is kept). Expiry never lowers lastSeq: the next message gets the seq after the last expired one.
 */
export interface MessageLog {
  append(batch: GroupAppend[]): Promise<AppendOutcome[][]>;
  /** Messages with seq > afterSeq, ascending, at most `limit`. afterSeq 0 reads from the first message. */
  readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]>;
  /** Messages with seq < beforeSeq, descending (newest first), at most `limit`. */
  readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]>;
  /** The highest seq the group ever stored (expired ones count); 0 when the group never had a message. */
  lastSeq(groupId: string): Promise<number>;
  /**
   * The lowest seq still kept: every seq below it has expired. lastSeq + 1 when every message has expired; 1 for a
   * group that never had one.
   */
  firstSeq(groupId: string): Promise<number>;
  /**
   * Reaction counts of the given messages (a page of history), by seq: each emoji once, most used first, `mine` when
   * `viewerId` is among those who reacted. Messages without reactions are absent.
   */
  reactions(groupId: string, seqs: number[], viewerId: string): Promise<Map<number, ReactionCount[]>>;
  /** Removes every message, dedup entry and reaction of the group. Its sends must be stopped first. */
  deleteGroup(groupId: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * A log that removes its expired messages itself, when asked (the SQLite log; Cassandra's rows carry a TTL instead).
 * The retention pruner walks the groups and asks.
 */
export interface ExpiringLog {
  /** Ids of the groups that hold messages, after `afterGroupId` in id order, at most `limit`. */
  groupsAfter(afterGroupId: string, limit: number): Promise<string[]>;
  /**
   * Removes up to `limit` of the group's oldest messages created before `beforeMs`: a prefix in seq order, which stops
   * at the first message that is not old enough. Returns how many went (under `limit`: nothing more is old enough).
   */
  expire(groupId: string, beforeMs: number, limit: number): Promise<number>;
}

export const isExpiringLog = (log: MessageLog): log is MessageLog & ExpiringLog =>
  typeof (log as Partial<ExpiringLog>).expire === 'function';

/** Builds the wire form of a stored message: optional fields are absent, never null; field order is fixed. */
export function toStampedMessage(
  groupId: string,
  seq: number,
  draft: MessageDraft,
  state: MessageState = {},
): StampedMessage {
  // groupId and seq lead: the broker reads a delivered message's seq from the start of its bytes (seqOfPayload).
  const message = {
    groupId,
    seq,
    senderId: draft.senderId,
    clientMsgId: draft.clientMsgId,
    type: draft.type,
  } as StampedMessage;
  const deleted = state.deletedAtMs !== undefined;
  const content = contentOf(draft) as Record<string, unknown>;
  if (deleted) for (const field of ERASED_BY_DELETE) delete content[field];
  Object.assign(message, content);
  message.createdAt = new Date(draft.createdAtMs).toISOString();
  if (state.editedAtMs !== undefined && !deleted) message.editedAt = new Date(state.editedAtMs).toISOString();
  if (deleted) message.deletedAt = new Date(state.deletedAtMs!).toISOString();
  return message;
}

/**
 * A page's reaction rows (one per seq, emoji and user) counted per message for the wire: rows of seqs not wanted are
 * left out; each message's emojis most used first, then by emoji, `mine` when `viewerId` reacted with it.
 */
export function countReactions(
  rows: { seq: number; emoji: string; userId: string }[],
  wanted: Set<number>,
  viewerId: string,
): Map<number, ReactionCount[]> {
  const bySeq = new Map<number, Map<string, ReactionCount>>();
  for (const { seq, emoji, userId } of rows) {
    if (!wanted.has(seq)) continue;
    let byEmoji = bySeq.get(seq);
    if (!byEmoji) bySeq.set(seq, (byEmoji = new Map()));
    let count = byEmoji.get(emoji);
    if (!count) byEmoji.set(emoji, (count = { emoji, count: 0, mine: false }));
    count.count += 1;
    if (userId === viewerId) count.mine = true;
  }
  const counted = new Map<number, ReactionCount[]>();
  for (const [seq, byEmoji] of bySeq)
    counted.set(
      seq,
      [...byEmoji.values()].sort((a, b) => b.count - a.count || (a.emoji < b.emoji ? -1 : 1)),
    );
  return counted;
}
