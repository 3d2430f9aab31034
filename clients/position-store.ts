/**
 * Where the SDK remembers, per group, the last seq it delivered to the application: the recovery position from which
 * it resumes after a reconnect or a restart. save() is called after each delivery, in seq order.
 */
export interface PositionStore {
  /** The last delivered seq of the group, or undefined when this client never delivered one. */
  load(groupId: string): Promise<number | undefined>;
  save(groupId: string, seq: number): Promise<void>;
}

/** Positions for the lifetime of the process (the default). */
export class MemoryPositionStore implements PositionStore {
  private readonly positions = new Map<string, number>();

  async load(groupId: string): Promise<number | undefined> {
    return this.positions.get(groupId);
  }

  async save(groupId: string, seq: number): Promise<void> {
    this.positions.set(groupId, seq);
  }
}

/** Positions in a browser's localStorage, under `prefix + groupId`. */
export class LocalStoragePositionStore implements PositionStore {
  constructor(
    private readonly storage: Pick<Storage, 'getItem' | 'setItem'>,
    private readonly prefix = 'chorus.position.',
  ) {}

  async load(groupId: string): Promise<number | undefined> {
    const value = Number(this.storage.getItem(this.prefix + groupId));
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  }

  async save(groupId: string, seq: number): Promise<void> {
    this.storage.setItem(this.prefix + groupId, String(seq));
  }
}
