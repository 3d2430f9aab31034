import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer, type Server } from 'node:http';
import { pino, type Logger } from 'pino';
import { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import { createTokenVerifier } from '../auth/token-verifier.js';
import { LISTEN_BACKLOG } from '../broker/admission.js';
import { createAedes } from '../broker/aedes.js';
import { ChorusBroker } from '../broker/broker.js';
import { GroupDelivery } from '../broker/group-delivery.js';
import { LiveEvents } from '../broker/live-events.js';
import { LiveUsers } from '../broker/live-users.js';
import type { ChorusConfig } from '../config/config.js';
import { DeliveredMarks } from '../delivery/delivered-marks.js';
import { DeliveryPipeline } from '../delivery/pipeline.js';
import { Groups } from '../groups/groups.js';
import { ReadReceipts } from '../groups/read-receipts.js';
import { buildApi } from '../history-api/app.js';
import { answerClientError } from '../history-api/client-errors.js';
import { errorCatalog } from '../protocol/index.js';
import { Notifier } from '../push/notifier.js';
import { PushSender } from '../push/push-sender.js';
import { vapidKeys } from '../push/vapid.js';
import { isExpiringLog, type MessageLog } from '../sequencer/message-log.js';
import { RetentionPruner } from '../sequencer/retention-pruner.js';
import { SearchByScan } from '../search/search-scan.js';
import { SendRouter } from '../sequencer/send-router.js';
import { SendRules } from '../sequencer/send-rules.js';
import { Sequencer } from '../sequencer/sequencer.js';
import { type Backends, embeddedBackends } from './backends.js';
import { ChorusMetrics } from './metrics.js';

export interface RunningChorus {
  /** 0 when this node serves no MQTT over TCP (role api). */
  mqttPort: number;
  httpPort: number;
  /** Where clients connect, for printing and for tests. */
  urls: { mqtt: string; ws: string; http: string; docs: string };
  broker: ChorusBroker;
  sequencer: Sequencer;
  notifier: Notifier;
  /** Removes expired messages where the log does not expire them itself (SQLite); null on Cassandra (TTL). */
  pruner: RetentionPruner | null;
  close(): Promise<void>;
}

/** How often expired messages are looked for on the embedded tier (retention is counted in days). */
const RETENTION_SWEEP_MS = 10 * 60_000;

export interface ChorusBackends {
  logger?: Logger;
  /** The message log to use instead of the configured one (it is closed with Chorus). */
  messageLog?: MessageLog;
}

/**
 * Liveness, readiness and metrics for nodes without the REST API (role broker): the same port carries MQTT over
 * WebSocket.
 */
function healthServer(metrics: ChorusMetrics, isReady: () => boolean): Server {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      void metrics.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text));
      return;
    }
    const [status, body] =
      req.url === '/healthz'
        ? [200, { status: 'ok' }]
        : req.url !== '/readyz'
          ? [404, { code: 'NOT_FOUND', message: errorCatalog.NOT_FOUND.message }]
          : isReady()
            ? [200, { status: 'ready' }]
            : [503, { code: 'DRAINING', message: errorCatalog.DRAINING.message }];
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  server.on('clientError', answerClientError);
  return server;
}

/** Web Push: the sender (VAPID, the push service's limits) and the notifier that decides whom to tell of what. */
function pushNotifier(config: ChorusConfig, backends: Backends, groups: Groups, logger: Logger) {
  const vapid = vapidKeys(config);
  const extraCa = config.pushCaFile ? readFileSync(config.pushCaFile) : undefined;
  const sender = new PushSender(vapid, config.vapidSubject, config.pushTtlSeconds, backends.pushStore, logger, {
    ...(extraCa ? { extraCa } : {}),
    allowLoopback: config.pushAllowLoopback,
  });
  const notifier = new Notifier(
    groups,
    backends.presence,
    backends.pushStore,
    sender,
    config.pushWindowSeconds * 1000,
    config.pushEveryMessageMaxGroupMembers,
    logger,
  );
  return { notifier, sender, vapidPublicKey: vapid.publicKey };
}

/**
 * Starts one Chorus process: its backends (the tier), then its components in the order data flows through them, each
 * built from what it uses: client -> broker -> sequencer -> log -> delivery (fan-out to every node) -> broker.
 *
 * - store sqlite (role all): everything in one process on embedded backends.
 * - store cassandra: the role decides what this node serves. broker: MQTT over TCP and WebSocket (and sequences what
 *   its clients publish); api: the REST API (and sequences REST sends, fanning them out through Redis to every broker
 *   node); all: both. With many nodes, a send is sequenced by the node writing its group: it reaches it through the
 *   send router.
 */
export async function startChorus(config: ChorusConfig, options: ChorusBackends = {}): Promise<RunningChorus> {
  const logger = options.logger ?? pino({ level: config.logLevel });
  const metrics = new ChorusMetrics();
  // The cluster's backends are loaded only for a cluster: the Cassandra driver and Redis's clients are 5-6 MB of a
  // heap that every full collection marks, and an embedded node never uses them.
  const backends: Backends =
    config.store === 'cassandra'
      ? await (await import('./backends-cluster.js')).clusterBackends(
          config,
          logger.child({ component: 'backends' }),
          () => metrics.redisErrors.inc(),
        )
      : embeddedBackends(config);
  const log = options.messageLog ?? backends.log;
  const { retention } = backends;
  const groups = new Groups(backends.groupStore, backends.feed, config.maxGroupMembers, log, retention);
  const verifier = await createTokenVerifier(config);
  const authThrottle = new FailedAuthThrottle(config.authFailuresPerMinute);

  // The MQTT node's outputs come first: live delivery and live events end there.
  const brokerLog = logger.child({ component: 'broker' });
  const aedes = await createAedes({
    ...backends,
    maxOfflineQueue: config.maxOfflineQueue,
    maxPacketBytes: config.maxPacketBytes,
    maxSessionExpirySeconds: config.maxSessionExpirySeconds,
  });
  const live = new LiveUsers();
  const events = new LiveEvents({
    aedes,
    live,
    memberCount: (groupId) => groups.keptMemberCount(groupId),
    liveEventsMaxGroupMembers: config.liveEventsMaxGroupMembers,
    presenceBatchMs: config.presenceBatchMs,
    logger: brokerLog,
  });
  // Receipts: a member's delivered watermark is told to the group's members (small groups), all marks of a group in
  // one event per flush, so that a busy group costs one event per member per flush and not one per delivery. In a
  // cluster each node relays its marks to the group's writer (the node it hears the group's messages from), so that a
  // group's are stored and told once per flush however many nodes its members are on.
  const { forwarding, fanOut } = backends;
  const deliveredMarks = new DeliveredMarks(
    backends.groupStore,
    (marks) => events.tellDelivered(marks),
    { flushMs: config.deliveredFlushMs, maxPending: 100_000 },
    logger.child({ component: 'receipts' }),
    {
      nodeId: forwarding.nodeId,
      writerOf: (groupId) => fanOut.publisherOf(groupId),
      send: (nodeId, marks) => forwarding.relayMarks(nodeId, marks),
    },
  );
  forwarding.onMarks((marks) => deliveredMarks.relayed(marks));
  const subscribers = new GroupDelivery(aedes, live, brokerLog, (groupId, userId, seq) =>
    deliveredMarks.note(groupId, userId, seq),
  );
  const { notifier, sender, vapidPublicKey } = pushNotifier(
    config,
    backends,
    groups,
    logger.child({ component: 'push' }),
  );

  const sequencerLog = logger.child({ component: 'sequencer' });
  const delivery = new DeliveryPipeline({
    log,
    fanOut,
    subscribers,
    hook: notifier,
    onGapReadError: (err, groupId) =>
      sequencerLog.warn({ err, groupId }, 'could not read the log to keep live delivery in order'),
  });
  const sequencer = new Sequencer(log, delivery.fromSequencer, {
    maxBodyBytes: config.maxBodyBytes,
    rules: new SendRules(log, {
      roleOf: (groupId, userId) => groups.roleOf(groupId, userId),
      retentionMs: (groupId) => retention.ms(groupId),
      mentionEveryone: config.mentionEveryone,
    }),
    maxPendingSends: config.maxPendingSends,
    onStoreError: (err, attempt) => {
      metrics.storeErrors.inc();
      sequencerLog.error({ err, attempt }, 'message log append failed; retrying');
    },
    onRefusedDraft: (err, groupId, draft) =>
      sequencerLog.error(
        { err, groupId, clientMsgId: draft.clientMsgId, senderId: draft.senderId },
        'message refused: the store will not take it',
      ),
    onCommit: metrics.onCommit,
  });
  const pruner = isExpiringLog(log)
    ? new RetentionPruner(log, {
        retentionMs: (groupId) => retention.ms(groupId),
        intervalMs: RETENTION_SWEEP_MS,
        onError: (err) => sequencerLog.error({ err }, 'removing expired messages failed; trying again later'),
      })
    : null;
  pruner?.start();
  const sends = new SendRouter(backends.writers, sequencer, forwarding, config.maxPendingSends);
  const readReceipts = new ReadReceipts(groups, log, events.tellGroup);
  const broker = new ChorusBroker({
    aedes,
    live,
    events,
    subscribers,
    config,
    verifier,
    authThrottle,
    groups,
    presence: backends.presence,
    sends,
    readReceipts,
    clustered: backends.mq !== undefined,
    counters: metrics.broker,
    logger: brokerLog,
  });
  metrics.observe({
    pendingSends: () => sequencer.pending,
    connectedClients: () => aedes.connectedClients,
    waitingConnections: () => broker.waitingConnections,
    pushDropped: () => notifier.dropped + sender.droppedCount,
  });

  /** Set when the node starts to close: /readyz answers 503 from then on. */
  let draining = false;
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
        // A log given instead of the configured one has no index beside it: it is searched by reading it.
        search: options.messageLog ? new SearchByScan(options.messageLog, config.searchScanMessages) : backends.search,
        presence: backends.presence,
        push: { store: backends.pushStore, vapidPublicKey },
        metrics: metrics.registry,
        isReady: () => !draining,
        logger: logger.child({ component: 'api' }),
      })
    : null;
  const http = api ? api.server : healthServer(metrics, () => !draining);
  if (servesMqtt) broker.attachWebSocket(http, config.wsPath);
  const mqttPort = servesMqtt ? await broker.listenTcp(config.host, config.mqttPort) : 0;
  // The HTTP port carries MQTT over WebSocket too: the same deep accept queue as the TCP listener, for reconnect storms.
  if (api) await api.listen({ host: config.host, port: config.httpPort, backlog: LISTEN_BACKLOG });
  else
    await new Promise<void>((resolve) =>
      http.listen({ port: config.httpPort, host: config.host, backlog: LISTEN_BACKLOG }, () => resolve()),
    );
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
    pruner,
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
      // Not ready first, while everything still serves: load balancers see /readyz fail and send new clients elsewhere
      // before this node's connections close (and reconnect to the others).
      draining = true;
      if (config.drainMs > 0) await step('drainMs', () => sleep(config.drainMs));
      await step('sendsInFlightMs', () => sequencer.drain(5000));
      await pruner?.stop();
      notifier.close();
      // The last delivered marks are written while the clients close (a second or more each, with 17,000 clients).
      await Promise.all([
        step('deliveredMarksMs', () => deliveredMarks.close()),
        step('clientsMs', () => broker.close()),
      ]);
      await step('httpMs', () => (api ? api.close() : new Promise((resolve) => http.close(resolve))));
      if (options.messageLog) await options.messageLog.close();
      await step('backendsMs', () => backends.close());
      const totalMs = Math.round(performance.now() - closeStarted);
      // Half the 10 s that orchestrators give a node after SIGTERM: a warning, so that it shows at the default level.
      logger[totalMs >= 5000 ? 'warn' : 'info']({ ...steps, totalMs }, 'closed');
    },
  };
}
