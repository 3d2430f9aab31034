import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { pino, type Logger } from 'pino';
import { createTokenVerifier } from '../auth/token-verifier.js';
import { ChorusBroker, LISTEN_BACKLOG } from '../broker/broker.js';
import { DeliveredMarks } from '../broker/delivered-marks.js';
import { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import type { ChorusConfig } from '../config/config.js';
import { Groups } from '../groups/groups.js';
import { ReadReceipts } from '../groups/read-receipts.js';
import { buildApi } from '../history-api/app.js';
import { answerClientError } from '../history-api/client-errors.js';
import type { MessageLog } from '../sequencer/message-log.js';
import { Sequencer, type SendPath } from '../sequencer/sequencer.js';
import { SendRouter } from '../sequencer/send-router.js';
import { SendRules } from '../sequencer/send-rules.js';
import type { StampedMessage } from '../protocol/index.js';
import { Notifier } from '../push/notifier.js';
import { PushSender } from '../push/push-sender.js';
import { vapidKeys } from '../push/vapid.js';
import { ChorusMetrics } from './metrics.js';
import { OrderedDelivery } from '../sequencer/ordered-delivery.js';
import { clusterBackends, embeddedBackends, type Backends } from './backends.js';

/** A stamped message as it arrives from the fan-out, serialized. */
interface Arrival {
  seq: number;
  payload: Buffer;
}

/**
 * Arrivals: a node that starts takes what comes; a gap is filled whole, in pages of 1,000, up to its newest 100,000
 * messages (a Redis outage of a minute at 1,600 messages a second); beyond that, subscribers read history.
 */
const ARRIVAL_ORDERING = { recoverWindowMs: 0, gapWindowMs: Number.POSITIVE_INFINITY, maxRead: 1000, maxGap: 100_000, maxGroups: 100_000 };

export interface RunningChorus {
  /** 0 when this node serves no MQTT over TCP (role api). */
  mqttPort: number;
  httpPort: number;
  /** Where clients connect, for printing and for tests. */
  urls: { mqtt: string; ws: string; http: string; docs: string };
  broker: ChorusBroker;
  sequencer: Sequencer;
  notifier: Notifier;
  close(): Promise<void>;
}

export interface ChorusBackends {
  logger?: Logger;
  /** The message log to use instead of the configured one (it is closed with Chorus). */
  messageLog?: MessageLog;
}

/** Liveness and metrics for nodes without the REST API (role broker): the same port carries MQTT over WebSocket. */
function healthServer(metrics: ChorusMetrics): Server {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      void metrics.registry.metrics().then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text));
      return;
    }
    const ok = req.url === '/healthz';
    res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(ok ? { status: 'ok' } : { code: 'NOT_FOUND', message: 'no such resource' }));
  });
  server.on('clientError', answerClientError);
  return server;
}

/**
 * Starts one Chorus process. Data flows one way: broker -> sequencer -> log -> fan-out through the broker. With many
 * nodes, the sequencer is that of the node writing the group: sends reach it through the router.
 *
 * - store sqlite (role all): everything in one process on embedded backends.
 * - store cassandra: the role decides what this node serves. broker: MQTT over TCP and WebSocket (and sequences what
 *   its clients publish); api: the REST API (and sequences REST sends, fanning them out through Redis to every broker
 *   node); all: both.
 */
export async function startChorus(config: ChorusConfig, options: ChorusBackends = {}): Promise<RunningChorus> {
  const logger = options.logger ?? pino({ level: config.logLevel });
  const verifier = await createTokenVerifier(config);
  let sequencer: Sequencer;
  const metrics = new ChorusMetrics({
    pendingSends: () => sequencer.pending,
    connectedClients: () => broker.aedes.connectedClients,
    waitingConnections: () => broker.waitingConnections,
    pushDropped: () => notifier.dropped + sender.droppedCount,
  });
  const backends: Backends =
    config.store === 'cassandra'
      ? await clusterBackends(config, logger.child({ component: 'backends' }), () => metrics.redisErrors.inc())
      : embeddedBackends(config);
  const log = options.messageLog ?? backends.log;
  const sequencerLog = logger.child({ component: 'sequencer' });
  const groups = new Groups(backends.groupStore, backends.feed, config.maxGroupMembers, log);
  const authThrottle = new FailedAuthThrottle(config.authFailuresPerMinute);

  // Receipts: a member's delivered watermark is told to the group's members (small groups), all marks of a group in
  // one event per flush, so that a busy group costs one event per member per flush and not one per delivery.
  const deliveredMarks = new DeliveredMarks(
    backends.groupStore,
    (marks) => {
      if (closed) return; // the clients are leaving: nobody to tell
      const byGroup = new Map<string, { userId: string; seq: number }[]>();
      for (const { groupId, userId, seq } of marks) {
        const list = byGroup.get(groupId);
        if (list) list.push({ userId, seq });
        else byGroup.set(groupId, [{ userId, seq }]);
      }
      for (const [groupId, groupMarks] of byGroup) void broker.tellGroup(groupId, { type: 'delivered', groupId, marks: groupMarks }, '');
    },
    { flushMs: config.deliveredFlushMs, maxPending: 100_000 },
    logger.child({ component: 'receipts' }),
  );
  const broker = await ChorusBroker.create({
    onDelivered: (groupId, userId, seq) => deliveredMarks.note(groupId, userId, seq),
    config,
    verifier,
    groups,
    logger: logger.child({ component: 'broker' }),
    presence: backends.presence,
    authThrottle,
    counters: metrics.broker,
    ...(backends.persistence ? { persistence: backends.persistence } : {}),
    ...(backends.mq ? { mq: backends.mq } : {}),
  });
  const vapid = vapidKeys(config);
  const pushLog = logger.child({ component: 'push' });
  const extraCa = config.pushCaFile ? readFileSync(config.pushCaFile) : undefined;
  const sender = new PushSender(vapid, config.vapidSubject, config.pushTtlSeconds, backends.pushStore, pushLog, {
    ...(extraCa ? { extraCa } : {}),
    allowLoopback: config.pushAllowLoopback,
  });
  const notifier = new Notifier(groups, backends.presence, backends.pushStore, sender, config.pushWindowSeconds * 1000, config.pushEveryMessageMaxGroupMembers, pushLog);
  // Fan-out first: live delivery never waits for push, which only queues the message. What arrives here is delivered
  // in each group's seq order; a gap (messages this node missed while Redis was away, say) is read from the log first.
  const arrivals = new OrderedDelivery<Arrival>(
    log,
    (groupId, arrival) => broker.deliverSerialized(groupId, arrival.seq, arrival.payload),
    (message) => ({ seq: message.seq, payload: Buffer.from(JSON.stringify(message)) }),
    { ...ARRIVAL_ORDERING, onError: (err, groupId) => sequencerLog.warn({ err, groupId }, 'could not read the log to fill a gap in live delivery') },
  );
  backends.fanOut.onDeliver((groupId, seq, payload) => arrivals.offer(groupId, [{ seq, payload }]));
  const fanOut = (m: StampedMessage) => {
    backends.fanOut.publish(m);
    notifier.onMessage(m);
  };
  sequencer = new Sequencer(log, fanOut, {
    maxBodyBytes: config.maxBodyBytes,
    rules: new SendRules(log, {
      roleOf: (groupId, userId) => groups.roleOf(groupId, userId),
      // SQLite keeps messages for good: there, no message is past a retention.
      retentionMs: config.store === 'cassandra' ? config.retentionDays * 86_400_000 : 0,
      mentionEveryone: config.mentionEveryone,
    }),
    maxPendingSends: config.maxPendingSends,
    onStoreError: (err, attempt) => {
      metrics.storeErrors.inc();
      sequencerLog.error({ err, attempt }, 'message log append failed; retrying');
    },
    onCommit: metrics.onCommit,
    onOrderingError: (err, groupId) => sequencerLog.warn({ err, groupId }, 'could not read the log to keep live delivery in order'),
  });
  const sends: SendPath = new SendRouter(backends.writers, sequencer, backends.forwarding, config.maxPendingSends);
  broker.useSendPath(sends);
  const readReceipts = new ReadReceipts(groups, log, (groupId, event, except) => broker.tellGroup(groupId, event, except));
  broker.useReadReceipts(readReceipts);

  const servesApi = config.role !== 'broker';
  const servesMqtt = config.role !== 'api';
  const api = servesApi
    ? await buildApi({
        config,
        verifier,
        authThrottle,
        readReceipts,
        deliveredMarks,
        groups,
        log,
        sends,
        presence: backends.presence,
        push: { store: backends.pushStore, vapidPublicKey: vapid.publicKey },
        metrics: metrics.registry,
        logger: logger.child({ component: 'api' }),
      })
    : null;
  const http = api ? api.server : healthServer(metrics);
  if (servesMqtt) broker.attachWebSocket(http, config.wsPath);
  const mqttPort = servesMqtt ? await broker.listenTcp(config.host, config.mqttPort) : 0;
  // The HTTP port carries MQTT over WebSocket too: the same deep accept queue as the TCP listener, for reconnect storms.
  if (api) await api.listen({ host: config.host, port: config.httpPort, backlog: LISTEN_BACKLOG });
  else await new Promise<void>((resolve) => http.listen({ port: config.httpPort, host: config.host, backlog: LISTEN_BACKLOG }, () => resolve()));
  const httpPort = (http.address() as { port: number }).port;

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
    notifier,
    async close() {
      if (closed) return;
      closed = true;
      // Each step's time is logged: a node that is slow to stop says where.
      const closeStarted = performance.now();
      const steps: Record<string, number> = {};
      const step = async (name: string, work: () => unknown) => {
        const started = performance.now();
        await work();
        steps[name] = Math.round(performance.now() - started);
        logger.info({ step: name, ms: steps[name] }, 'closing');
      };
      await step('sendsInFlightMs', () => sequencer.drain(5000));
      notifier.close();
      // The last delivered marks are written while the clients close (a second or more each, with 17,000 clients).
      await Promise.all([step('deliveredMarksMs', () => deliveredMarks.close()), step('clientsMs', () => broker.close())]);
      await step('httpMs', () => (api ? api.close() : new Promise((resolve) => http.close(resolve))));
      if (options.messageLog) await options.messageLog.close();
      await step('backendsMs', () => backends.close());
      const totalMs = Math.round(performance.now() - closeStarted);
      // Half the 10 s that orchestrators give a node after SIGTERM: a warning, so that it shows at the default level.
      logger[totalMs >= 5000 ? 'warn' : 'info']({ ...steps, totalMs }, 'closed');
    },
  };
}
