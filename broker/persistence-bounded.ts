import MemoryPersistence from 'aedes-persistence/asyncPersistence.js';

interface Sub {
  clientId: string;
}

/**
 * Aedes's in-memory persistence with a bound on each persistent session's queue of undelivered QoS 1 messages.
 * MQTT sessions with CleanSession=0 queue what arrives while they are away ([MQTT-3.1.2-5]); unbounded, one client
 * that never returns would grow the broker without limit. Past the bound, further messages are not queued: every
 * group message stays readable through the history API, which is how the SDK fills the gap.
 */
export class BoundedMemoryPersistence extends MemoryPersistence {
  private readonly queued = new Map<string, number>();

  constructor(private readonly maxQueuedPerClient: number) {
    super();
  }

  private admit(clientId: string): boolean {
    const count = this.queued.get(clientId) ?? 0;
    if (count >= this.maxQueuedPerClient) return false;
    this.queued.set(clientId, count + 1);
    return true;
  }

  override async outgoingEnqueue(sub: Sub, packet: unknown): Promise<void> {
    if (this.admit(sub.clientId)) await super.outgoingEnqueue(sub, packet);
  }

  override async outgoingEnqueueCombi(subs: Sub[], packet: unknown): Promise<void> {
    const admitted = subs.filter((sub) => this.admit(sub.clientId));
    if (admitted.length > 0) await super.outgoingEnqueueCombi(admitted, packet);
  }

  override async outgoingClearMessageId(client: { id: string }, packet: unknown): Promise<unknown> {
    const cleared = await super.outgoingClearMessageId(client, packet);
    const count = this.queued.get(client.id) ?? 0;
    if (cleared && count > 0) this.queued.set(client.id, count - 1);
    return cleared;
  }

  override async cleanSubscriptions(client: { id: string }): Promise<unknown> {
    this.queued.delete(client.id);
    return super.cleanSubscriptions(client);
  }
}
