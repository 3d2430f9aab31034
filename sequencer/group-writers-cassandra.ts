import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChorusError } from '../protocol/index.js';
import { WRITE_LANDS_WITHIN_MS, type CassandraSession } from '../cassandra/session.js';
import type { GroupWriter, GroupWriters } from './group-writers.js';

export interface GroupWritersTiming {
  /** How long a node's hold stays valid after it last proved itself alive. */
  leaseMs: number;
  /** How often a node proves itself alive. */
  renewMs: number;
  /** The most two nodes' wall clocks may differ by. */
  clockSkewMs: number;
  /** A group this node has not written for this long is given back. */
  idleMs: number;
}

/**
 * A killed writer's groups wait at most leaseMs + clockSkewMs + WRITE_LANDS_WITHIN_MS (2.75 s) for their next writer.
 * The lease outlives two renewals that each take up to 500 ms, so a slow Cassandra node does not cost a writer its
 * groups. NTP keeps clocks within milliseconds; clockSkewMs allows far worse.
 */
export const DEFAULT_TIMING: GroupWritersTiming = {
  leaseMs: 1_500,
  renewMs: 500,
  clockSkewMs: 250,
  idleMs: 60_000,
};

/** Groups given back at once (idle, or on close), so that giving back many holds stays short. */
const RELEASE_CONCURRENCY = 32;
/** Remote writers remembered, each for at most one lease. */
const MAX_REMOTE_ENTRIES = 100_000;

interface Hold {
  epoch: number;
  lastUsed: number;
}

/**
 * Group writers decided in Cassandra. Each node (one process run: its id gets a random suffix) keeps a lease row,
 * `writer_nodes.lease_until`, renewed every `renewMs`; each group row in `group_writers` names its writer node and the
 * epoch of that hold, and changes hands only by a lightweight transaction on the epoch. So:
 * - a group nobody holds (new, or given back) is taken at once;
 * - a group whose node's lease is current is that node's: sends go there;
 * - a group whose node's lease ran out is taken over, and the new writer waits until that lease's end plus the
 *   longest a request may take plus the clock skew, after which nothing the old writer sent can still land. The old
 *   writer stopped by itself: its holds are valid only `leaseMs` after the start of its last successful renewal
 *   (measured on its monotonic clock), and it checks them before each write.
 * Redis plays no part: losing it cannot give a group two writers.
 */
export class GroupWritersCassandra implements GroupWriters {
  readonly nodeId: string;
  private readonly held = new Map<string, Hold>();
  private readonly remote = new Map<string, { nodeId: string; until: number }>();
  private readonly acquiring = new Map<string, Promise<GroupWriter>>();
  /** performance.now() at the start of the last renewal that succeeded. */
  private renewedAt = -Infinity;
  /** Renewals sent and not yet answered. */
  private renewing = 0;
  /** Wall clock when this node's holds last lapsed: its own rows from before may have writes landing until then + a request. */
  private lapsedAtWall = 0;
  private timer: NodeJS.Timeout | undefined;
  private releasing: Promise<void> | undefined;
  closed = false;

  private constructor(
    private readonly db: CassandraSession,
    nodeName: string,
    private readonly timing: GroupWritersTiming,
  ) {
    this.nodeId = `${nodeName}~${randomUUID().slice(0, 8)}`;
  }

  static async start(
    db: CassandraSession,
    nodeName: string,
    timing: GroupWritersTiming = DEFAULT_TIMING,
  ): Promise<GroupWritersCassandra> {
    await db.ddl([
      'CREATE TABLE IF NOT EXISTS writer_nodes (node_id text PRIMARY KEY, lease_until timestamp)',
      'CREATE TABLE IF NOT EXISTS group_writers (group_id text PRIMARY KEY, node_id text, epoch bigint)',
    ]);
    const writers = new GroupWritersCassandra(db, nodeName, timing);
    await writers.renew();
    writers.schedule();
    return writers;
  }

  /**
   * A renewal starts every renewMs whether or not the previous one has finished: one stuck at a paused Cassandra
   * coordinator then does not hold back the next, which the driver sends to another. At most one lease's worth are in
   * flight. They land in order whatever order they arrive in, as each carries the driver's client-side timestamp.
   */
  private schedule(): void {
    this.timer = setTimeout(() => {
      if (!this.releasing) {
        this.releasing = this.releaseIdle().finally(() => (this.releasing = undefined));
      }
      if (this.renewing < Math.ceil(this.timing.leaseMs / this.timing.renewMs)) {
        this.renewing++;
        void this.renew()
          .catch(() => undefined) // Cassandra away: holds lapse by themselves, and the next round tries again
          .finally(() => this.renewing--);
      }
      if (!this.closed) this.schedule();
    }, this.timing.renewMs);
    this.timer.unref();
  }

  private valid(): boolean {
    const valid = performance.now() < this.renewedAt + this.timing.leaseMs;
    if (!valid && this.held.size > 0) {
      // Every write checks its hold first, so none was sent after this instant.
      this.held.clear();
      this.lapsedAtWall = Date.now();
    }
    return valid;
  }

  private async renew(): Promise<void> {
    const started = performance.now();
    await this.writeLease(new Date(Date.now() + this.timing.leaseMs));
    // Landed after the previous lease ran out: another node may have taken groups meanwhile, so every hold is dropped.
    this.valid();
    this.renewedAt = Math.max(this.renewedAt, started);
  }

  holding(groupId: string): number | undefined {
    if (!this.valid()) return undefined;
    const hold = this.held.get(groupId);
    if (!hold) return undefined;
    hold.lastUsed = performance.now();
    return hold.epoch;
  }

  forget(groupId: string): void {
    this.remote.delete(groupId);
  }

  async writerOf(groupId: string): Promise<GroupWriter> {
    if (this.closed) throw new ChorusError('STORE_UNAVAILABLE', 'this node is shutting down');
    if (!this.valid()) throw new ChorusError('STORE_UNAVAILABLE', 'this node cannot renew its writer lease');
    const epoch = this.holding(groupId);
    if (epoch !== undefined) return { here: true, epoch };
    const remote = this.remote.get(groupId);
    if (remote && remote.until > Date.now()) return { here: false, nodeId: remote.nodeId };
    let acquiring = this.acquiring.get(groupId);
    if (!acquiring) {
      acquiring = this.acquire(groupId).finally(() => this.acquiring.delete(groupId));
      this.acquiring.set(groupId, acquiring);
    }
    // A writer seen lately is still asked while its lease is read again: it serves a send only while it writes the
    // group (and answers "moved" otherwise, or nobody listens if it died), so a slow read of the lease (a paused
    // Cassandra node) does not hold the group's sends here.
    if (remote && remote.until + this.timing.leaseMs > Date.now()) {
      acquiring.catch(() => undefined);
      return { here: false, nodeId: remote.nodeId };
    }
    return acquiring;
  }

  private async acquire(groupId: string): Promise<GroupWriter> {
    for (let round = 0; round < 5; round++) {
      const row = (
        await this.db.readSerial('SELECT node_id, epoch FROM group_writers WHERE group_id = ?', [groupId])
      ).first();
      if (!row) {
        const taken = await this.db.execute(
          'INSERT INTO group_writers (group_id, node_id, epoch) VALUES (?, ?, 1) IF NOT EXISTS',
          [groupId, this.nodeId],
        );
        if (taken.wasApplied()) return this.hold(groupId, 1, 0);
        continue;
      }
      const epoch = Number(row.get('epoch'));
      const holder = row.get('node_id') as string | null;
      let landedBy = 0; // wall clock after which the previous writer's writes can no longer land
      if (holder === this.nodeId) {
        landedBy = this.lapsedAtWall + WRITE_LANDS_WITHIN_MS; // our own hold lapsed earlier
      } else if (holder !== null) {
        const lease = (
          await this.db.execute('SELECT lease_until FROM writer_nodes WHERE node_id = ?', [holder])
        ).first();
        const leaseUntil = lease ? (lease.get('lease_until') as Date).getTime() : 0;
        if (leaseUntil + this.timing.clockSkewMs > Date.now()) {
          this.rememberRemote(groupId, holder, leaseUntil);
          return { here: false, nodeId: holder };
        }
        landedBy = leaseUntil + this.timing.clockSkewMs + WRITE_LANDS_WITHIN_MS;
      }
      const taken = await this.db.execute(
        'UPDATE group_writers SET node_id = ?, epoch = ? WHERE group_id = ? IF epoch = ?',
        [this.nodeId, epoch + 1, groupId, epoch],
      );
      if (taken.wasApplied()) return this.hold(groupId, epoch + 1, landedBy - Date.now());
    }
    throw new ChorusError('STORE_UNAVAILABLE', `group ${groupId} keeps changing writers; retry`);
  }

  private async hold(groupId: string, epoch: number, waitMs: number): Promise<GroupWriter> {
    if (waitMs > 0) await sleep(waitMs);
    if (!this.valid()) throw new ChorusError('STORE_UNAVAILABLE', 'this node cannot renew its writer lease');
    this.remote.delete(groupId);
    this.held.set(groupId, { epoch, lastUsed: performance.now() });
    return { here: true, epoch };
  }

  private rememberRemote(groupId: string, nodeId: string, leaseUntil: number): void {
    if (this.remote.size >= MAX_REMOTE_ENTRIES) this.remote.delete(this.remote.keys().next().value!);
    this.remote.set(groupId, { nodeId, until: Math.min(leaseUntil, Date.now() + this.timing.leaseMs) });
  }

  /** Gives back groups not written for idleMs, so that holds stay few and another node can take them at once. */
  private async releaseIdle(): Promise<void> {
    const idleSince = performance.now() - this.timing.idleMs;
    const idle = [...this.held].filter(([, hold]) => hold.lastUsed < idleSince);
    await this.release(idle);
  }

  /**
   * Stops writing the groups, waits until any write already sent has landed, then clears each row's writer (if it is
   * still this node's), so that the next node takes it without waiting out a lease.
   */
  private async release(holds: [string, Hold][]): Promise<void> {
    if (holds.length === 0) return;
    for (const [groupId] of holds) this.held.delete(groupId);
    // No write to them is sent from here on, and one sent at t lands by t + WRITE_LANDS_WITHIN_MS (as a takeover assumes):
    // only the newest needs waiting out. `lastUsed` is when a write last checked its hold, so never before its send.
    const lastSent = Math.max(...holds.map(([, hold]) => hold.lastUsed));
    await sleep(Math.max(0, lastSent + WRITE_LANDS_WITHIN_MS - performance.now()));
    for (let i = 0; i < holds.length; i += RELEASE_CONCURRENCY) {
      await Promise.all(
        holds.slice(i, i + RELEASE_CONCURRENCY).map(
          ([groupId, hold]) =>
            this.db
              .execute('UPDATE group_writers SET node_id = null WHERE group_id = ? IF epoch = ?', [groupId, hold.epoch])
              .catch(() => undefined), // left held: taken over once this node's lease has run out
        ),
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    await this.releasing;
    await this.release([...this.held]);
    await this.writeLease(new Date(0)).catch(() => undefined); // ended: nobody waits for it
  }

  private async writeLease(until: Date): Promise<void> {
    await this.db.execute('INSERT INTO writer_nodes (node_id, lease_until) VALUES (?, ?) USING TTL 86400', [
      this.nodeId,
      until,
    ]);
  }
}
