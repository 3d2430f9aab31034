import { setTimeout as sleep } from 'node:timers/promises';
import type { ExpiringLog } from './message-log.js';

/** Groups read per step of a sweep. */
const GROUPS_PER_STEP = 100;
/**
 * Messages removed per transaction: each one holds the log's writer (and so the sends behind it) for a millisecond or
 * two, and the sends queued meanwhile go between two of them.
 */
const MESSAGES_PER_BATCH = 100;

export interface RetentionPrunerOptions {
  /** Each group's retention in milliseconds (0: for good). */
  retentionMs: (groupId: string) => Promise<number>;
  /** Time between the end of a sweep and the start of the next. */
  intervalMs: number;
  /** A sweep that failed (it is tried again at the next interval). */
  onError: (err: unknown) => void;
}

/**
 * Removes expired messages from a log that does not expire them itself (the embedded tier): every interval, a sweep
 * walks the groups that hold messages and has each one's messages older than its retention removed, in small batches
 * that take at most half of the log writer's time (see ExpiringLog.expire). One sweep at a time.
 */
export class RetentionPruner {
  private timer: NodeJS.Timeout | null = null;
  private sweeping: Promise<number> | null = null;
  private stopped = false;

  constructor(
    private readonly log: ExpiringLog,
    private readonly options: RetentionPrunerOptions,
  ) {}

  /** Starts sweeping: the first sweep after one interval, so that a starting node serves before it prunes. */
  start(): void {
    this.schedule();
  }

  /** Removes every message past its group's retention at `now`; resolves with how many went. */
  sweep(now = Date.now()): Promise<number> {
    this.sweeping ??= this.sweepAll(now).finally(() => {
      this.sweeping = null;
    });
    return this.sweeping;
  }

  /** Stops the timer and waits for a sweep in progress to end its batch. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.sweeping?.catch(() => undefined);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.sweep()
        .catch(this.options.onError)
        .finally(() => this.schedule());
    }, this.options.intervalMs);
    this.timer.unref();
  }

  private async sweepAll(now: number): Promise<number> {
    let removed = 0;
    for (let after = ''; !this.stopped; ) {
      const groupIds = await this.log.groupsAfter(after, GROUPS_PER_STEP);
      for (const groupId of groupIds) {
        const retentionMs = await this.options.retentionMs(groupId);
        if (retentionMs === 0) continue;
        for (;;) {
          const started = performance.now();
          const batch = await this.log.expire(groupId, now - retentionMs, MESSAGES_PER_BATCH);
          removed += batch;
          if (batch < MESSAGES_PER_BATCH || this.stopped) break;
          // At most half of the writer's time: nothing here is urgent, and the sends come first.
          await sleep(performance.now() - started);
        }
      }
      if (groupIds.length < GROUPS_PER_STEP) break;
      after = groupIds.at(-1)!;
    }
    return removed;
  }
}
