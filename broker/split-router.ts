import MQEmitter, { type MQEmitter as Emitter } from 'mqemitter';

type Packet = Parameters<Emitter['emit']>[0];
type Listener = Parameters<Emitter['on']>[1];
type Done = () => void;

const isGroupTopic = (topic: string) => topic.startsWith('groups/');

/**
 * Aedes's router in a cluster. Group message topics stay in this process: their messages reach the other nodes through
 * FanOutRedis, a whole commit in one Redis message, rather than one Redis round trip per message. Everything else
 * (events topics, Aedes's own $SYS topics) goes through the shared router (mqemitter-redis). Clients may subscribe to
 * exact group and events topics only (the broker's ACL), so no subscription spans both.
 */
export function splitRouter(shared: Emitter): Emitter {
  const local = MQEmitter(); // no queue, as Aedes's own router (see createAedes)
  const pick = (topic: string) => (isGroupTopic(topic) ? local : shared);
  const router = {
    on(topic: string, listener: Listener, done?: Done) {
      pick(topic).on(topic, listener, done);
      return router;
    },
    removeListener(topic: string, listener: Listener, done?: Done) {
      pick(topic).removeListener(topic, listener, done);
    },
    emit(packet: Packet, done?: (err?: Error) => void) {
      pick(packet.topic).emit(packet, done);
    },
    close(done: Done) {
      local.close(() => shared.close(done));
    },
  };
  return router as unknown as Emitter; // Aedes uses on, removeListener, emit and close
}
