import { setTimeout as sleep } from 'node:timers/promises';
import { ChorusError, contentOf, type SendPayload, type StampedMessage } from '../protocol/index.js';
import { backoffMs } from './backoff.js';
import { WriterMovedError } from './group-writers.js';
import { isLastingStoreError } from './store-errors.js';
import type { AppendOutcome, GroupAppend, MessageDraft, MessageLog } from './message-log.js';
import { SendRules } from './send-rules.js';
import { validateSend } from './send-validation.js';

export interface SendResult {
  message: StampedMessage;
  duplicate: boolean;
}

/** Where the broker and the API hand a member's send: resolves once it is durable, rejects with a ChorusError. */
export interface SendPath {
  send(groupId: string, senderId: string, payload: unknown): Promise<SendResult>;
}

/**
 * Where the sequencer hands what it stored (the delivery pipeline). Per group, messages come ascending; after a failed
 * commit that was stored after all, or a writer change, some may come again or ahead of a gap (the same seq each
 * time): the output keeps live delivery in order without holes (delivery/ordered-delivery.ts).
 */
export interface SequencerOutput {
  stored(groupId: string, messages: StampedMessage[]): void;
  /** This node no longer writes the group: what the output holds back for it is dropped. */
  writerLost(groupId: string): void;
}

export interface SequencerOptions {
  maxBodyBytes: number;
  /** Checks a send against the group's state (targets, replies, @everyone); by default every sender is a plain member. */
  rules?: SendRules;
  /** Sends waiting for their commit; beyond this a send is refused with OVERLOADED. */
  maxPendingSends: number;
  /** Drafts in one append call, so that one commit stays short. */
  maxBatch?: number;
  onStoreError?: (err: unknown, attempt: number) => void;
  /** A draft the store refuses for a lasting reason, appended alone: it is refused (INTERNAL) and never retried. */
  onRefusedDraft?: (err: unknown, groupId: string, draft: MessageDraft) => void;
  /** After each successful commit: how many drafts it carried and how long the append took. */
  onCommit?: (drafts: number, seconds: number) => void;
}

interface PendingSend {
  draft: MessageDraft;
  /** Arrival order across all groups: a group's queue is always in this order, also after a failed commit. */
  arrival: number;
  /** Set once the draft was part of an append that failed: it may have been stored by that failed attempt. */
  retried: boolean;
  /** Part of an append that failed for a lasting reason: appended alone until it is stored or refused. */
  suspect: boolean;
  resolve: (result: SendResult) => void;
  reject: (err: unknown) => void;
}

interface Commit {
  batch: GroupAppend[];
  sends: PendingSend[][];
}

/** The longest wait between attempts at a failing log: a store that returns is used again within it. */
const MAX_BACKOFF_MS = 2000;
/**
 * Appends in flight at once. The next commit is taken while the previous one is being written, so a log whose append
 * is a few round trips (Cassandra) overlaps them; the log keeps each group's calls in order.
 */
const COMMITS_IN_FLIGHT = 2;

/**
 * Stamps each group's messages with its next seq through the message log, and fans the stored ones out.
 *
 * Sends are queued per group and flushed together on the next turn of the event loop, so one commit carries every
 * send that arrived meanwhile (group commit): under load batches grow by themselves. Up to COMMITS_IN_FLIGHT appends
 * run at once; their outcomes are handled in the order the commits were taken, so each group's messages are fanned
 * out in seq order. A failed append is retried with backoff and its sends stay pending (never acknowledged, never
 * dropped) until the store takes them.
 */
export class Sequencer implements SendPath {
  private readonly queues = new Map<string, PendingSend[]>();
  private pendingCount = 0;
  /** Queued sends marked suspect (see takeCommit). */
  private suspects = 0;
  private arrivals = 0;
  private flushScheduled = false;
  private inFlight = 0;
  /** Failed appends in a row; while backing off after one, no commit starts. */
  private failures = 0;
  private backingOff = false;
  /**
   * Appends that rejected and whose commits were not handled yet. No commit starts meanwhile: a group's sends must not
   * be appended past a failed commit's, which go back ahead of them.
   */
  private unhandledFailures = 0;
  /** The outcomes of the commits in flight are handled one after another, in the order they were taken. */
  private handled: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly maxBatch: number;
  private readonly rules: SendRules;

  constructor(
    private readonly log: MessageLog,
    private readonly output: SequencerOutput,
    private readonly options: SequencerOptions,
  ) {
    this.maxBatch = options.maxBatch ?? 4096;
    this.rules =
      options.rules ??
      new SendRules(log, { roleOf: async () => 'member', retentionMs: async () => 0, mentionEveryone: 'members' });
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
    await this.rules.check(groupId, senderId, send);
    if (this.closed) throw new ChorusError('STORE_UNAVAILABLE', 'the sequencer is shutting down');
    if (this.pendingCount >= this.options.maxPendingSends) throw new ChorusError('OVERLOADED');
    const draft: MessageDraft = {
      senderId,
      clientMsgId: send.clientMsgId,
      type: send.type ?? 'text',
      createdAtMs: Date.now(),
      ...contentOf(send),
    };
    return new Promise<SendResult>((resolve, reject) => {
      let queue = this.queues.get(groupId);
      if (!queue) this.queues.set(groupId, (queue = []));
      queue.push({ draft, arrival: this.arrivals++, retried: false, suspect: false, resolve, reject });
      this.pendingCount += 1;
      this.scheduleFlush();
    });
  }

  /** On the next turn of the event loop, so that everything arriving in this one shares the commit. */
  private scheduleFlush(): void {
    if (this.flushScheduled || !this.mayStartCommit()) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private mayStartCommit(): boolean {
    return (
      !this.backingOff && this.unhandledFailures === 0 && this.inFlight < COMMITS_IN_FLIGHT && this.queues.size > 0
    );
  }

  /**
   * Takes up to maxBatch drafts, whole groups first, keeping each group's order; while drafts of a commit that failed
   * for a lasting reason are queued, the next such draft alone (so the one at fault is found, and the rest stored).
   */
  private takeCommit(): Commit {
    if (this.suspects > 0) {
      for (const [groupId, queue] of this.queues) {
        const [first, ...rest] = queue;
        if (!first?.suspect) continue;
        if (rest.length > 0) this.queues.set(groupId, rest);
        else this.queues.delete(groupId);
        return { batch: [{ groupId, drafts: [first.draft] }], sends: [[first]] };
      }
    }
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

  /** Puts a failed commit's sends back into their groups' queues, in arrival order (ahead of later arrivals). */
  private requeue({ batch, sends }: Commit): void {
    batch.forEach((part, i) => {
      for (const send of sends[i]!) send.retried = true;
      const merged = [...sends[i]!, ...(this.queues.get(part.groupId) ?? [])].sort((a, b) => a.arrival - b.arrival);
      this.queues.set(part.groupId, merged);
    });
  }

  /** Rejects the sends of the moved groups, with their queued successors; requeues the rest of the commit. */
  private handBack({ batch, sends }: Commit, moved: Set<string>): void {
    const keep: Commit = { batch: [], sends: [] };
    batch.forEach((part, i) => {
      if (!moved.has(part.groupId)) {
        keep.batch.push(part);
        keep.sends.push(sends[i]!);
        return;
      }
      const handedBack = [...sends[i]!, ...(this.queues.get(part.groupId) ?? [])];
      this.queues.delete(part.groupId);
      this.output.writerLost(part.groupId);
      this.pendingCount -= handedBack.length;
      for (const send of handedBack) {
        if (send.suspect) this.suspects -= 1;
        send.reject(new WriterMovedError([part.groupId]));
      }
    });
    this.requeue(keep);
  }

  private flush(): void {
    this.flushScheduled = false;
    if (!this.mayStartCommit()) return;
    const commit = this.takeCommit();
    this.inFlight += 1;
    const started = performance.now();
    const appended = this.log.append(commit.batch);
    const outcome = appended.then(
      (outcomes) => () => this.completed(commit, outcomes, performance.now() - started),
      (err: unknown) => {
        this.unhandledFailures += 1;
        return () => {
          this.unhandledFailures -= 1;
          this.failed(commit, err);
        };
      },
    );
    this.handled = this.handled.then(async () => {
      const handle = await outcome;
      try {
        handle();
      } finally {
        this.inFlight -= 1;
        this.scheduleFlush();
      }
    });
    this.scheduleFlush();
  }

  private completed({ batch, sends }: Commit, outcomes: AppendOutcome[][], elapsedMs: number): void {
    this.failures = 0;
    this.options.onCommit?.(
      sends.reduce((n, group) => n + group.length, 0),
      elapsedMs / 1000,
    );
    outcomes.forEach((groupOutcomes, i) => {
      const groupSends = sends[i]!;
      // Duplicates too: one that a failed attempt stored unseen is delivered now, in its place.
      this.output.stored(
        batch[i]!.groupId,
        groupOutcomes.map((outcome) => outcome.message),
      );
      groupOutcomes.forEach((outcome, j) => {
        const send = groupSends[j]!;
        // A draft that a failed attempt of this very send stored comes back as a duplicate of itself: it is new to the sender.
        const storedByThisSend =
          send.retried &&
          outcome.message.createdAt === new Date(send.draft.createdAtMs).toISOString() &&
          outcome.message.body === send.draft.body;
        this.pendingCount -= 1;
        if (send.suspect) this.suspects -= 1;
        send.resolve({ message: outcome.message, duplicate: outcome.duplicate && !storedByThisSend });
      });
    });
  }

  private failed(commit: Commit, err: unknown): void {
    if (err instanceof WriterMovedError) {
      // Another node writes these groups now (nothing of them was written): their sends go back to be routed there.
      this.handBack(commit, new Set(err.groupIds));
      return;
    }
    if (isLastingStoreError(err)) return this.isolate(commit, err);
    this.failures += 1;
    this.options.onStoreError?.(err, this.failures);
    this.requeue(commit);
    if (this.backingOff) return; // a commit taken before the first failure failed with it
    this.backingOff = true;
    const delay = backoffMs(this.failures, MAX_BACKOFF_MS);
    setTimeout(() => {
      this.backingOff = false;
      this.scheduleFlush();
    }, delay).unref();
  }

  /**
   * A commit failed for a reason that will not pass (a poison draft): retrying it as it is would hold every group
   * behind it for good. A draft that failed alone is refused; the drafts of a larger commit go back to be appended
   * one at a time, so the one at fault is found and the others are stored.
   */
  private isolate(commit: Commit, err: unknown): void {
    const drafts = commit.sends.flat();
    if (drafts.length === 1) {
      const send = drafts[0]!;
      const groupId = commit.batch[0]!.groupId;
      this.pendingCount -= 1;
      if (send.suspect) this.suspects -= 1;
      this.options.onRefusedDraft?.(err, groupId, send.draft);
      send.reject(new ChorusError('INTERNAL', 'the store refused this message; it was not stored'));
    } else {
      for (const send of drafts) {
        if (!send.suspect) this.suspects += 1;
        send.suspect = true;
      }
      this.requeue(commit);
    }
    this.scheduleFlush();
  }

  /** Stops taking sends; waits (up to timeoutMs) for the ones already queued to be stored. */
  async drain(timeoutMs: number): Promise<void> {
    this.closed = true;
    const deadline = Date.now() + timeoutMs;
    while ((this.pendingCount > 0 || this.inFlight > 0) && Date.now() < deadline) {
      await sleep(10);
    }
  }
}
