/**
 * Presence: a user is online while at least one of their MQTT clients is connected, on any node.
 *
 * Contract: connected/disconnected are called once per client; they resolve true exactly when the user's state
 * changed (first client anywhere / last client anywhere). online() answers for many users at once.
 */
export interface Presence {
  connected(userId: string): Promise<boolean>;
  disconnected(userId: string): Promise<boolean>;
  online(userIds: string[]): Promise<Set<string>>;
  close(): Promise<void>;
}

/** Presence of one process. */
export class PresenceLocal implements Presence {
  private readonly clients = new Map<string, number>();

  async connected(userId: string): Promise<boolean> {
    const count = (this.clients.get(userId) ?? 0) + 1;
    this.clients.set(userId, count);
    return count === 1;
  }

  async disconnected(userId: string): Promise<boolean> {
    const count = (this.clients.get(userId) ?? 1) - 1;
    if (count > 0) this.clients.set(userId, count);
    else this.clients.delete(userId);
    return count <= 0;
  }

  async online(userIds: string[]): Promise<Set<string>> {
    return new Set(userIds.filter((id) => this.clients.has(id)));
  }

  async close(): Promise<void> {}
}
