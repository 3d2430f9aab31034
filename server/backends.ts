import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AedesSeams } from '../broker/aedes.js';
import type { ChorusConfig } from '../config/config.js';
import type { GroupStore } from '../groups/group-store.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { MembershipFeedLocal, type MembershipFeed } from '../groups/membership-feed.js';
import { Retention } from '../groups/retention.js';
import type { MessageLog } from '../sequencer/message-log.js';
import { MessageLogSqliteThread } from '../sequencer/message-log-sqlite-thread.js';
import type { FanOut } from '../delivery/fan-out.js';
import { FanOutLocal } from '../delivery/fan-out.js';
import { GroupWritersLocal, type GroupWriters } from '../sequencer/group-writers.js';
import { SendForwardingLocal, type SendForwarding } from '../sequencer/send-forwarding.js';
import { PresenceLocal, type Presence } from '../broker/presence.js';
import type { PushStore } from '../push/push-store.js';
import type { Search } from '../search/search.js';
import { SearchSqlite } from '../search/search-sqlite.js';
import { PushStoreSqlite } from '../push/push-store-sqlite.js';

/**
 * How long a node waits for the writer of a group to answer a forwarded send. Long, because the writer holds sends
 * while Cassandra is away; it is there for a writer that died holding the request (the sender's retry is safe).
 */
export const FORWARD_TIMEOUT_MS = 30_000;

/** This process's name among the nodes: configured, or its host and process id. */
export const nodeIdOf = (config: ChorusConfig): string => config.nodeId ?? `${hostname()}-${process.pid}`;

/** The stores and shared broker state of one process, per the configured store. */
/** Aedes persistence and router come as BrokerDeps takes them: absent means in-memory (one node). */
export interface Backends extends Pick<AedesSeams, 'persistence' | 'mq'> {
  log: MessageLog;
  groupStore: GroupStore;
  feed: MembershipFeed;
  pushStore: PushStore;
  presence: Presence;
  /** Who writes each group (one node alone: itself). */
  writers: GroupWriters;
  /** How a send reaches its group's writer. */
  forwarding: SendForwarding;
  /** How stamped messages reach every node's subscribers. */
  fanOut: FanOut;
  /** Finds messages by their text. */
  search: Search;
  /** How long each group keeps its messages. */
  retention: Retention;
  close(): Promise<void>;
}

/**
 * One process on embedded defaults: SQLite files under dataDir, in-memory broker state; the node writes every group,
 * and fan-out and forwarding stay in the process.
 */
export function embeddedBackends(config: ChorusConfig): Backends {
  const nodeId = nodeIdOf(config);
  const log = new MessageLogSqliteThread(join(config.dataDir, 'messages.db'), {
    synchronous: config.sqliteSynchronous,
  });
  const search = new SearchSqlite(join(config.dataDir, 'messages.db')); // the index the log keeps
  const groupStore = new GroupStoreSqlite(join(config.dataDir, 'groups.db'), config.sqliteSynchronous);
  const pushStore = new PushStoreSqlite(join(config.dataDir, 'push.db'));
  return {
    log,
    groupStore,
    feed: new MembershipFeedLocal(),
    pushStore,
    presence: new PresenceLocal(),
    writers: new GroupWritersLocal(nodeId),
    forwarding: SendForwardingLocal.hub()(nodeId, {
      timeoutMs: FORWARD_TIMEOUT_MS,
      maxPending: config.maxPendingSends,
      onInternalError: () => {},
    }),
    fanOut: FanOutLocal.hub()(nodeId),
    search,
    retention: new Retention(groupStore, config.retentionDays),
    async close() {
      await search.close();
      await log.close();
      await groupStore.close();
      await pushStore.close();
    },
  };
}
