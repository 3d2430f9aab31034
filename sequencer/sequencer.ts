import { ChorusError, type SendPayload, type StampedMessage } from '../protocol/index.js';
import { WriterMovedError } from './group-writers.js';
import type { AppendOutcome, GroupAppend, MessageDraft, MessageLog } from './message-log.js';
import { validateSend } from './send-validation.js';

export interface SendResult {
  message: StampedMessage;
  duplicate: boolean;
}

/** Where the broker and the API hand a member's send: resolves once it is durable, rejects with a ChorusError. */
export interface SendPath {
  send(groupId: string, senderId: string, payload: unknown): Promise<SendResult>;
}

/** Hands a newly stored message to live delivery. Called once per new message, per group in seq order. */
export type FanOut = (message: StampedMessage) => void;

export interface SequencerOptions {
  maxBodyBytes: number;
  /** Sends waiting for their commit; beyond this a send is refused with OVERLOADED. */
  maxPendingSends: number;
  /** Drafts in one append call, so that one commit stays short. */
  maxBatch?: number;
  onStoreError?: (err: unknown, attempt: number) => void;
  /** After each successful commit: how many drafts it carried and how long the append took. */
  onCommit?: (drafts: number, seconds: number) => void;
}

interface PendingSend {
  draft: MessageDraft;
  /** Set once the draft was part of an append that failed: it may have been stored by that failed attempt. */
  retried: boolean;
  resolve: (result: SendResult) => void;
  reject: (err: unknown) => void;
}

const MAX_BACKOFF_MS = 5000;

/**
 * Stamps each group's messages with its next seq through the message log, and fans the stored ones out.
 *
 * Sends are queued per group and flushed together on the next turn of the event loop, so one commit carries every
 * send that arrived meanwhile (group commit): under load batches grow by themselves. One flush runs at a time, so
 * each group's messages are appended and fanned out in seq order. A failed append is retried with backoff and its
 * sends stay pending (never acknowledged, never dropped) until the store takes them.
 */
export class Sequencer implements SendPath {
  private readonly queues = new Map<string, PendingSend[]>();
  private pendingCount = 0;
  private flushScheduled = false;
  private flushing = false;
  private closed = false;
  private readonly maxBatch: number;

  constructor(
    private readonly log: MessageLog,
    private readonly fanOut: FanOut,
    private readonly options: SequencerOptions,
  ) {
    this.maxBatch = options.maxBatch ?? 4096;
  }

  /** Sends waiting for a commit. */
  get pending(): number {
    return this.pendingCount;
  }

  /**
   * Sequences one send from a sender the caller has authorized as a member (the broker checks its live ACL, the API
   * the group store). Validates the payload; resolves once the message is durable (or was already stored under this
   * clientMsgId); rejects with a ChorusError when the send is refused.
   */
  async send(groupId: string, senderId: string, payload: unknown): Promise<SendResult> {
    const send: SendPayload = validateSend(payload, this.options.maxBodyBytes);
    if (send.replyToSeq !== undefined && send.replyToSeq > (await this.log.lastSeq(groupId))) {
      throw new ChorusError('REPLY_TO_UNKNOWN', `no message ${send.replyToSeq} in this group`);
    }
    if (this.closed) throw new ChorusError('STORE_UNAVAILABLE', 'the sequencer is shutting down');
    if (this.pendingCount >= this.options.maxPendingSends) throw new ChorusError('OVERLOADED');
    const draft: MessageDraft = {
      senderId,
      clientMsgId: send.clientMsgId,
      type: send.type ?? 'text',
      body: send.body,
      createdAtMs: Date.now(),
    };
    if (send.replyToSeq !== undefined) draft.replyToSeq = send.replyToSeq;
    if (send.mentions !== undefined && send.mentions.length > 0) draft.mentions = send.mentions;
    return new Promise<SendResult>((resolve, reject) => {
      let queue = this.queues.get(groupId);
      if (!queue) this.queues.set(groupId, (queue = []));
      queue.push({ draft, retried: false, resolve, reject });
      this.pendingCount += 1;
      this.scheduleFlush();
    });
  }

  /** On the next turn of the event loop, so that everything arriving in this one shares the commit. */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.flushing) return;
    this.flushScheduled = true;
    setImmediate(() => void this.flush(1));
  }

  /** Takes up to maxBatch drafts, whole groups first, keeping each group's order. */
  private takeBatch(): { batch: GroupAppend[]; sends: PendingSend[][] } {
    const batch: GroupAppend[] = [];
    const sends: PendingSend[][] = [];
    let room = this.maxBatch;
    for (const [groupId, queue] of this.queues) {
      if (room === 0) break;
      const taken = queue.length <= room ? queue : queue.slice(0, room);
      if (taken === queue) this.queues.delete(groupId);
      else this.queues.set(groupId, queue.slice(room));
      room -= taken.length;
      batch.push({ groupId, drafts: taken.map((p) => p.draft) });
      sends.push(taken);
    }
    return { batch, sends };
  }

  /** Puts a failed batch back at the head of its groups' queues, ahead of anything that arrived meanwhile. */
  private requeue(batch: GroupAppend[], sends: PendingSend[][]): void {
    const requeued = new Map<string, PendingSend[]>();
    batch.forEach((part, i) => {
      const failed = sends[i]!;
      for (const send of failed) send.retried = true;
      requeued.set(part.groupId, [...failed, ...(this.queues.get(part.groupId) ?? [])]);
      this.queues.delete(part.groupId);
    });
    for (const [groupId, queue] of this.queues) requeued.set(groupId, queue);
    this.queues.clear();
    for (const [groupId, queue] of requeued) this.queues.set(groupId, queue);
  }

  /** Rejects the sends of the moved groups, with their queued successors; requeues the rest of the batch. */
  private handBack(batch: GroupAppend[], sends: PendingSend[][], moved: Set<string>): void {
    const keep: number[] = [];
    batch.forEach((part, i) => {
      if (!moved.has(part.groupId)) return keep.push(i);
      const handedBack = [...sends[i]!, ...(this.queues.get(part.groupId) ?? [])];
      this.queues.delete(part.groupId);
      this.pendingCount -= handedBack.length;
      for (const send of handedBack) send.reject(new WriterMovedError([part.groupId]));
    });
    this.requeue(
      keep.map((i) => batch[i]!),
      keep.map((i) => sends[i]!),
    );
  }

  private async flush(attempt: number): Promise<void> {
    this.flushScheduled = false;
    if (this.queues.size === 0) return;
    this.flushing = true;
    const { batch, sends } = this.takeBatch();
    let outcomes: AppendOutcome[][];
    const started = performance.now();
    try {
      outcomes = await this.log.append(batch);
      this.options.onCommit?.(sends.reduce((n, group) => n + group.length, 0), (performance.now() - started) / 1000);
    } catch (err) {
      if (err instanceof WriterMovedError) {
        // Another node writes these groups now (nothing of them was written): their sends go back to be routed there.
        this.handBack(batch, sends, new Set(err.groupIds));
        this.flushing = false;
        this.scheduleFlush();
        return;
      }
      this.options.onStoreError?.(err, attempt);
      this.requeue(batch, sends);
      this.flushing = false;
      const delay = Math.min(MAX_BACKOFF_MS, 50 * 2 ** Math.min(attempt, 10));
      this.flushScheduled = true;
      setTimeout(() => void this.flush(attempt + 1), delay).unref();
      return;
    }
    outcomes.forEach((groupOutcomes, i) => {
      const groupSends = sends[i]!;
      groupOutcomes.forEach((outcome, j) => {
        const send = groupSends[j]!;
        // A draft that a failed attempt may have stored comes back as a duplicate of itself: it still needs its fan-out.
        const firstDelivery = !outcome.duplicate || (send.retried && outcome.message.createdAt === new Date(send.draft.createdAtMs).toISOString() && outcome.message.body === send.draft.body);
        if (firstDelivery) this.fanOut(outcome.message);
        this.pendingCount -= 1;
        send.resolve({ message: outcome.message, duplicate: outcome.duplicate && !firstDelivery });
      });
    });
    this.flushing = false;
    if (this.queues.size > 0) this.scheduleFlush();
  }

  /** Stops taking sends; waits (up to timeoutMs) for the ones already queued to be stored. */
  async drain(timeoutMs: number): Promise<void> {
    this.closed = true;
    const deadline = Date.now() + timeoutMs;
    while ((this.pendingCount > 0 || this.flushing) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}
