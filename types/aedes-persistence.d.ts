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
