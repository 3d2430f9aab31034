// The promise-based memory persistence that Aedes 1.x uses; the package types only its callback wrapper.
declare module 'aedes-persistence/asyncPersistence.js' {
  export default class MemoryPersistence {
    constructor(opts?: object);
    setup(broker: unknown): Promise<void>;
    outgoingEnqueue(sub: { clientId: string }, packet: unknown): Promise<void>;
    outgoingEnqueueCombi(subs: { clientId: string }[], packet: unknown): Promise<void>;
    outgoingClearMessageId(client: { id: string }, packet: unknown): Promise<unknown>;
    cleanSubscriptions(client: { id: string }): Promise<unknown>;
  }
}

// aedes-persistence-redis ships no types; its factory returns a persistence for Aedes.
declare module 'aedes-persistence-redis' {
  export default function aedesPersistenceRedis(options: object): unknown;
}

// The encoding aedes-persistence-redis stores packets in (its own dependency, which the Redis queue here writes to).
declare module 'msgpack-lite' {
  export function encode(value: unknown): Buffer;
  export function decode(bytes: Buffer): unknown;
}
