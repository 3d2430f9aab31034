import type { Logger } from 'pino';

/** The steps of a QoS 1 delivery that Aedes asks its persistence for, as the Redis persistence has them. */
export interface DeliveryState {
  /** Queues a routed message for the offline persistent sessions subscribed to it [MQTT-3.1.2-5]. */
  outgoingEnqueueCombi(subs: { clientId: string }[], packet: { topic: string }): Promise<void>;
  /** Records the packet identifier of a message written to an online persistent session. */
  outgoingUpdate(client: { id: string }, packet: { topic?: string }): Promise<unknown>;
  /** Clears that record on the session's PUBACK, answering the packet it named. */
  outgoingClearMessageId(client: { id: string; clean: boolean }, packet: unknown): Promise<unknown>;
}

/** A failing step is logged at most once per this many milliseconds, with how many failed since the last line. */
const LOG_INTERVAL_MS = 10_000;

/**
 * Live delivery that does not wait on the session store. In a cluster Aedes keeps the persistent sessions' delivery
 * state in Redis, and each step failing stops what follows it: a message whose queueing for offline sessions fails is
 * routed to none of the node's subscribers Aedes serves (persistent sessions, QoS 0), a session whose packet
 * identifier cannot be recorded is disconnected before the write, and so is one whose PUBACK cannot be cleared. While
 * Redis is away a node still stores and delivers the messages of the groups it writes, so here those steps fail
 * softly: the failure is logged and delivery goes on. What a session misses by it is a stored copy, never a message:
 * every group message is in the log, where a client fills a gap in seqs from history (the SDK does), and a PUBACK not
 * cleared lets the packet be sent again when the session returns, a duplicate that QoS 1 allows and a client drops
 * by its seq. Sessions that connect meanwhile still need Redis for their stored state.
 */
export function deliverThroughPersistenceOutage(persistence: DeliveryState, logger: Logger): void {
  const failed = { enqueue: 0, update: 0, clear: 0 };
  let loggedAt = Number.NEGATIVE_INFINITY;
  const softly =
    (step: keyof typeof failed) =>
    (err: unknown): undefined => {
      failed[step] += 1;
      const now = Date.now();
      if (now - loggedAt >= LOG_INTERVAL_MS) {
        loggedAt = now;
        logger.warn({ err, failed: { ...failed } }, 'session store failed; delivering without it');
        failed.enqueue = failed.update = failed.clear = 0;
      }
    };
  const enqueue = persistence.outgoingEnqueueCombi.bind(persistence);
  const update = persistence.outgoingUpdate.bind(persistence);
  const clear = persistence.outgoingClearMessageId.bind(persistence);
  persistence.outgoingEnqueueCombi = (subs, packet) => enqueue(subs, packet).catch(softly('enqueue'));
  persistence.outgoingUpdate = (client, packet) => update(client, packet).catch(softly('update'));
  // Answering no packet: the PUBACK names no delivery, so no delivered mark is set for it (GroupDelivery).
  persistence.outgoingClearMessageId = (client, packet) => clear(client, packet).catch(softly('clear'));
}
