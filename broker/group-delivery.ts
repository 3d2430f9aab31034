import type { Aedes, AedesPublishPacket, Client, PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import type { LocalSubscribers } from '../delivery/pipeline.js';
import { groupTopic, parseTopic } from '../protocol/index.js';
import { subscriptionOf, writableTarget } from './aedes.js';
import { GroupPublishes, writeGroupPublish } from './group-publishes.js';
import type { LiveUsers } from './live-users.js';
import { PubackOrder, seqOfPayload } from './puback-order.js';

/** A group message's QoS 1 delivery to a member's client was acknowledged (PUBACK). */
export type OnDelivered = (groupId: string, userId: string, seq: number) => void;

/**
 * The last step of live delivery: stamped group messages written to this node's subscribers, and their PUBACKs
 * turned into delivered marks (when `onDelivered` is given).
 */
export class GroupDelivery implements LocalSubscribers {
  private readonly pubackOrder = new PubackOrder<Client>();
  private readonly groupPublishes = new GroupPublishes();
  /** Aedes's duplicate filter is per broker id; see deliverSerialized. */
  private readonly brokerId: string;

  constructor(
    private readonly aedes: Aedes,
    private readonly live: LiveUsers,
    private readonly logger: Logger,
    private readonly onDelivered?: OnDelivered,
  ) {
    this.brokerId = `${aedes.id}/groups`;
    if (onDelivered)
      aedes.on('ack', (packet, client) => this.acknowledged(packet as PublishPacket | undefined, client, onDelivered));
  }

  deliverSerialized(groupId: string, seq: number, payload: Buffer): void {
    const topic = groupTopic(groupId);
    this.groupPublishes.register(topic, groupId, seq, payload);
    // Aedes drops, per client, a packet whose counter is below the last one it delivered under the same broker id.
    // In a cluster group messages and events travel different paths (splitRouter), so an event published before a
    // group message can arrive after it: group messages count under a broker id of their own.
    const packet: PublishPacket & { brokerId: string } = {
      cmd: 'publish',
      topic,
      payload,
      qos: 1,
      retain: false,
      dup: false,
      brokerId: this.brokerId,
    };
    this.aedes.publish(packet, (err) => {
      if (err) this.logger.error({ err, topic }, 'publish failed');
    });
  }

  /**
   * A packet Aedes is about to forward to a client the ACL allows: a group message to a clean-session subscriber at
   * QoS 1 is written here, from its PUBLISH serialized once for all of them, instead of letting Aedes copy, defer and
   * serialize the packet again for each (in 6 writes); Aedes keeps nothing of a clean session's QoS 1 deliveries
   * anyway. A persistent session's delivery is left to Aedes, which keeps it until its PUBACK [MQTT-4.3.2-1], and so is
   * a QoS 0 subscription's and anything that is not a fresh routing of a group message (a packet with an identifier
   * comes from a stored queue). Returns the packet for Aedes to write, or null when nothing is left to do.
   */
  forward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const granted = subscriptionOf(client, packet.topic)?.qos ?? 0;
    const publish = this.groupPublishes.of(packet.payload);
    if (publish && client.clean && packet.qos === 1 && packet.messageId === undefined && granted >= 1) {
      const target = writableTarget(client);
      if (!target) return null; // closed or closing: nothing is written, as Aedes's own write refuses it
      writeGroupPublish(target, publish, packet.payload as Buffer);
      if (this.onDelivered) this.pubackOrder.forwarded(client, publish);
      return null;
    }
    // A delivery to a clean session whose PUBACK will follow (QoS 1 after the subscription's downgrade), in order.
    if (this.onDelivered && client.clean && packet.qos !== 0 && granted >= 1)
      this.pubackOrder.forwarded(client, groupDelivery(packet));
    return packet;
  }

  private acknowledged(packet: PublishPacket | undefined, client: Client | null, onDelivered: OnDelivered): void {
    const userId = client ? this.live.userOf(client) : undefined;
    if (!client || userId === undefined) return;
    // A persistent session's packet comes back from the persistence, kept until its PUBACK [MQTT-4.3.2-1]; a clean
    // session's does not (Aedes keeps no copy): its PUBACKs are matched to its forwards in order.
    const delivery = client.clean ? this.pubackOrder.acknowledged(client) : groupDelivery(packet);
    if (delivery) onDelivered(delivery.groupId, userId, delivery.seq);
  }
}

/** The group and seq of a stamped group message being delivered; null for anything else. */
function groupDelivery(packet: PublishPacket | undefined): { groupId: string; seq: number } | null {
  if (!packet) return null;
  const target = parseTopic(packet.topic);
  if (target?.kind !== 'group') return null;
  const seq = seqOfPayload(packet.payload as Buffer);
  return Number.isSafeInteger(seq) && seq > 0 ? { groupId: target.groupId, seq } : null;
}
