import type { StampedMessage } from '../protocol/index.js';

/** A message as the sequencer hands it to the log: everything but its seq. */
export interface MessageDraft {
  senderId: string;
  clientMsgId: string;
  type: string;
  body: string;
  replyToSeq?: number;
  mentions?: string[];
  /** Milliseconds since the epoch, taken by the sequencer when the draft was accepted. */
  createdAtMs: number;
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
 */
export interface MessageLog {
  append(batch: GroupAppend[]): Promise<AppendOutcome[][]>;
  /** Messages with seq > afterSeq, ascending, at most `limit`. afterSeq 0 reads from the first message. */
  readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]>;
  /** Messages with seq < beforeSeq, descending (newest first), at most `limit`. */
  readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]>;
  /** The highest stored seq of the group; 0 when the group has no message. */
  lastSeq(groupId: string): Promise<number>;
  close(): Promise<void>;
}

/** Builds the wire form of a stored message: optional fields are absent, never null. */
export function toStampedMessage(groupId: string, seq: number, draft: MessageDraft): StampedMessage {
  const message: StampedMessage = {
    groupId,
    seq,
    senderId: draft.senderId,
    clientMsgId: draft.clientMsgId,
    type: draft.type,
    body: draft.body,
    createdAt: new Date(draft.createdAtMs).toISOString(),
  };
  if (draft.replyToSeq !== undefined) message.replyToSeq = draft.replyToSeq;
  if (draft.mentions !== undefined && draft.mentions.length > 0) message.mentions = draft.mentions;
  return message;
}
