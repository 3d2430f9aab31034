import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BrokerCounters } from '../broker/broker.js';

/** What a node exposes at GET /metrics (Prometheus text format). */
export class ChorusMetrics {
  readonly registry = new Registry();
  readonly commitSeconds = new Histogram({
    name: 'chorus_sequencer_commit_seconds',
    help: 'Time to append one batch to the message log (group commit)',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2],
    registers: [this.registry],
  });
  readonly batchDrafts = new Histogram({
    name: 'chorus_sequencer_batch_messages',
    help: 'Sends carried by one commit',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 4096],
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({
    name: 'chorus_sequencer_store_errors_total',
    help: 'Failed appends (retried)',
    registers: [this.registry],
  });
  private readonly slowConsumers = new Counter({
    name: 'chorus_mqtt_slow_consumers_total',
    help: 'MQTT connections closed because their unsent output passed maxClientBufferBytes',
    registers: [this.registry],
  });
  private readonly throttledPublishes = new Counter({
    name: 'chorus_mqtt_throttled_publishes_total',
    help: 'MQTT publishes held back by the per-connection publish rate',
    registers: [this.registry],
  });
  private readonly refusedConnections = new Counter({
    name: 'chorus_mqtt_refused_connections_total',
    help: 'MQTT connections refused before authentication, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly redisErrors = new Counter({
    name: 'chorus_redis_errors_total',
    help: "Errors reported by this node's Redis connections (each reconnects by itself)",
    registers: [this.registry],
  });

  /** The broker's counters, as BrokerCounters. */
  readonly broker: BrokerCounters = {
    slowConsumerCut: () => this.slowConsumers.inc(),
    publishThrottled: () => this.throttledPublishes.inc(),
    connectionRefused: (reason) => this.refusedConnections.inc({ reason }),
  };

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'chorus_' });
  }

  /** The node's gauges, read at each scrape from the components that keep them (built after the counters above). */
  observe(gauges: {
    pendingSends: () => number;
    connectedClients: () => number;
    waitingConnections: () => number;
    pushDropped: () => number;
  }): void {
    new Gauge({
      name: 'chorus_sequencer_pending_sends',
      help: 'Sends waiting for their commit',
      registers: [this.registry],
      collect() {
        this.set(gauges.pendingSends());
      },
    });
    new Gauge({
      name: 'chorus_mqtt_connected_clients',
      help: 'MQTT clients connected to this node',
      registers: [this.registry],
      collect() {
        this.set(gauges.connectedClients());
      },
    });
    new Gauge({
      name: 'chorus_mqtt_waiting_connections',
      help: 'MQTT connections waiting, unread, for a place among the unauthenticated ones',
      registers: [this.registry],
      collect() {
        this.set(gauges.waitingConnections());
      },
    });
    new Gauge({
      name: 'chorus_push_dropped',
      help: 'Pushes dropped because their queues were full',
      registers: [this.registry],
      collect() {
        this.set(gauges.pushDropped());
      },
    });
  }

  onCommit = (drafts: number, seconds: number): void => {
    this.commitSeconds.observe(seconds);
    this.batchDrafts.observe(drafts);
  };
}
