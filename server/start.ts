import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { createTokenVerifier } from '../broker/auth.js';
import { ChorusBroker } from '../broker/broker.js';
import type { ChorusConfig } from '../config/config.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { Groups, MembershipFeedLocal } from '../groups/groups.js';
import { buildApi } from '../history-api/app.js';
import type { MessageLog } from '../sequencer/message-log.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { Sequencer } from '../sequencer/sequencer.js';

export interface RunningChorus {
  mqttPort: number;
  httpPort: number;
  /** Where clients connect, for printing and for tests. */
  urls: { mqtt: string; ws: string; http: string; docs: string };
  broker: ChorusBroker;
  sequencer: Sequencer;
  close(): Promise<void>;
}

/**
 * Starts Chorus in one process on the embedded backends: the SQLite message log and group store under dataDir, the
 * in-memory broker state, the sequencer, MQTT on TCP, and HTTP (REST + MQTT over WebSocket) on one port.
 * Data flows one way: broker -> sequencer -> log -> fan-out through the broker.
 */
export interface ChorusBackends {
  logger?: Logger;
  /** The message log to use instead of the configured one (it is closed with Chorus). */
  messageLog?: MessageLog;
}

export async function startChorus(config: ChorusConfig, backends: ChorusBackends = {}): Promise<RunningChorus> {
  const logger = backends.logger ?? pino({ level: config.logLevel });
  const verifier = await createTokenVerifier(config);
  const log =
    backends.messageLog ?? new MessageLogSqlite(join(config.dataDir, 'messages.db'), { synchronous: config.sqliteSynchronous });
  const groupStore = new GroupStoreSqlite(join(config.dataDir, 'groups.db'), config.sqliteSynchronous);
  const groups = new Groups(groupStore, new MembershipFeedLocal(), config.maxGroupMembers);

  const broker = await ChorusBroker.create({ config, verifier, groups, logger: logger.child({ component: 'broker' }) });
  const sequencerLog = logger.child({ component: 'sequencer' });
  const sequencer = new Sequencer(log, (m) => broker.fanOut(m), {
    maxBodyBytes: config.maxBodyBytes,
    maxPendingSends: config.maxPendingSends,
    onStoreError: (err, attempt) => sequencerLog.error({ err, attempt }, 'message log append failed; retrying'),
  });
  broker.useSequencer(sequencer);

  const api = await buildApi({ config, verifier, groups, log, sequencer, logger: logger.child({ component: 'api' }) });
  broker.attachWebSocket(api.server, config.wsPath);
  const mqttPort = await broker.listenTcp(config.host, config.mqttPort);
  await api.listen({ host: config.host, port: config.httpPort });
  const httpPort = (api.server.address() as { port: number }).port;

  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let closed = false;
  return {
    mqttPort,
    httpPort,
    urls: {
      mqtt: `mqtt://${host}:${mqttPort}`,
      ws: `ws://${host}:${httpPort}${config.wsPath}`,
      http: `http://${host}:${httpPort}`,
      docs: `http://${host}:${httpPort}/docs`,
    },
    broker,
    sequencer,
    async close() {
      if (closed) return;
      closed = true;
      await sequencer.drain(5000);
      await broker.close();
      await api.close();
      await log.close();
      await groupStore.close();
    },
  };
}
