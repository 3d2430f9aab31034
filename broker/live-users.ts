import type { Client } from 'aedes';
import { joins, type MembershipChange } from '../groups/membership-feed.js';

/**
 * A user with clients on this node. Kept for every connected user, so it is kept small: arrays rather than sets (a
 * user has a few clients, and a membership check reads the per-group index instead), and no promise once loaded.
 */
interface LiveUser {
  userId: string;
  clients: Client[];
  /**
   * The user's groups, kept current by membership changes: the broker's synchronous ACL, indexed per group in
   * LiveUsers.members. Empty until loaded.
   */
  groups: string[];
  /** Changes that arrived while `groups` was being loaded (null once loaded); replayed on top of the loaded set. */
  changesDuringLoad: MembershipChange[] | null;
  /** Settles when `groups` is loaded: a second client of the user waits for it before it is authorized. */
  loaded: Promise<void>;
}

/** What a loaded user's `loaded` becomes: one settled promise for all of them. */
const LOADED = Promise.resolve();

/**
 * The users with at least one connected client on this node, each with the set of groups they belong to, and per group
 * the users here who belong to it. Forwarding checks run for every delivered message, and live events (presence,
 * typing, receipts) go to the group's members on this node, so both read these in-memory sets instead of the store.
 */
export class LiveUsers {
  private readonly users = new Map<string, LiveUser>();
  private readonly owners = new WeakMap<Client, string>();
  /** Group id -> the ids of this node's live users whose loaded groups include it; a group with none has no entry. */
  private readonly members = new Map<string, Set<string>>();
  /** The users whose groups are being loaded. */
  private readonly loading = new Set<LiveUser>();
  /** Users whose groups are being read again (see reload), with the changes applied to them meanwhile. */
  private readonly reloading = new Map<LiveUser, MembershipChange[]>();

  /**
   * Registers a connected client. The first client of a user loads the user's groups through `loadGroups`; the
   * membership changes that land meanwhile are kept and applied after the load, so none is lost to the race.
   */
  async attach(client: Client, userId: string, loadGroups: () => Promise<string[]>): Promise<void> {
    this.owners.set(client, userId);
    const existing = this.users.get(userId);
    if (existing) {
      existing.clients.push(client);
      try {
        await existing.loaded;
      } catch (err) {
        this.detach(client);
        throw err;
      }
      return;
    }
    const user: LiveUser = {
      userId,
      clients: [client],
      groups: [],
      changesDuringLoad: [],
      loaded: LOADED,
    };
    this.users.set(userId, user);
    this.loading.add(user);
    user.loaded = loadGroups()
      .finally(() => this.loading.delete(user))
      .then((loaded) => {
        const changes = user.changesDuringLoad ?? [];
        user.changesDuringLoad = null;
        user.loaded = LOADED;
        // A user whose clients all left during the load is gone from this node: nothing of theirs is indexed.
        if (this.users.get(userId) !== user) return;
        for (const groupId of loaded) this.join(user, groupId);
        for (const change of changes) this.applyLoaded(user, change);
        // An array grown by push keeps room for 16 more (0.15 KB); a user's groups rarely change after the load.
        user.groups = user.groups.slice();
      });
    try {
      await user.loaded;
    } catch (err) {
      this.detach(client);
      throw err;
    }
  }

  /** Unregisters a client; returns true when it was the user's last one on this node. */
  detach(client: Client): boolean {
    const userId = this.owners.get(client);
    if (userId === undefined) return false;
    this.owners.delete(client);
    const user = this.users.get(userId);
    if (!user) return false;
    const at = user.clients.indexOf(client);
    if (at >= 0) user.clients.splice(at, 1);
    if (user.clients.length > 0) return false;
    this.users.delete(userId);
    for (const groupId of user.groups) this.unindex(userId, groupId);
    return true;
  }

  userOf(client: Client): string | undefined {
    return this.owners.get(client);
  }

  isMember(client: Client, groupId: string): boolean {
    const userId = this.owners.get(client);
    return userId !== undefined && this.members.get(groupId)?.has(userId) === true;
  }

  /** The user's groups as this node knows them now (empty when the user has no client here). */
  groupsOf(userId: string): string[] {
    return [...(this.users.get(userId)?.groups ?? [])];
  }

  clientsOf(userId: string): Client[] {
    return [...(this.users.get(userId)?.clients ?? [])];
  }

  /** Calls `visit` with each client on this node of a user the ACL knows as a member of the group now. */
  forEachMemberClient(groupId: string, visit: (client: Client) => void): void {
    for (const userId of this.members.get(groupId) ?? []) {
      for (const client of this.users.get(userId)!.clients) visit(client);
    }
  }

  /** The ids of this node's live users who are members of the group, as the ACL knows them now. */
  membersOf(groupId: string): string[] {
    return [...(this.members.get(groupId) ?? [])];
  }

  /** Applies a membership change to the connected users it concerns, if any; returns their clients. */
  apply(change: MembershipChange): Client[] {
    if (change.kind === 'group-deleted') {
      const clients: Client[] = [];
      // The group's members here, by the index, and the users whose groups are loading (who may be among them).
      const concerned = new Set(this.loading);
      for (const userId of this.members.get(change.groupId) ?? []) concerned.add(this.users.get(userId)!);
      for (const user of concerned) {
        this.applyChange(user, change);
        clients.push(...user.clients);
      }
      return clients;
    }
    const user = this.users.get(change.userId);
    if (!user) return [];
    this.applyChange(user, change);
    return [...user.clients];
  }

  private applyChange(user: LiveUser, change: MembershipChange): void {
    if (user.changesDuringLoad) user.changesDuringLoad.push(change);
    else this.applyLoaded(user, change);
    this.reloading.get(user)?.push(change);
  }

  /** The ids of the users with clients on this node. */
  userIds(): string[] {
    return [...this.users.keys()];
  }

  /**
   * Reads a loaded user's groups again (this node may have missed changes to them) and makes them what the store says,
   * returning the groups joined and left, and the user's clients. Until then the user keeps the groups known before;
   * changes that arrive meanwhile are applied at once, and again on top of what was read (the read may predate them).
   * Undefined when the user is gone, or still loading (that load reads the store anyway).
   */
  async reload(
    userId: string,
    loadGroups: () => Promise<string[]>,
  ): Promise<{ joined: string[]; left: string[]; clients: Client[] } | undefined> {
    const user = this.users.get(userId);
    if (!user || user.changesDuringLoad || this.reloading.has(user)) return undefined;
    const changes: MembershipChange[] = [];
    this.reloading.set(user, changes);
    let loaded: string[];
    try {
      loaded = await loadGroups();
    } finally {
      this.reloading.delete(user);
    }
    if (this.users.get(userId) !== user) return undefined;
    const target = new Set(loaded);
    for (const change of changes) {
      const joined = joins(change);
      if (joined === true) target.add(change.groupId);
      if (joined === false) target.delete(change.groupId);
    }
    const left = user.groups.filter((groupId) => !target.has(groupId));
    const joined = [...target].filter((groupId) => !this.members.get(groupId)?.has(userId));
    for (const groupId of left) this.leave(user, groupId);
    for (const groupId of joined) this.join(user, groupId);
    user.groups = user.groups.slice();
    return { joined, left, clients: [...user.clients] };
  }

  private applyLoaded(user: LiveUser, change: MembershipChange): void {
    const joined = joins(change);
    if (joined === true) this.join(user, change.groupId);
    if (joined === false) this.leave(user, change.groupId);
  }

  private join(user: LiveUser, groupId: string): void {
    let members = this.members.get(groupId);
    if (!members) this.members.set(groupId, (members = new Set()));
    if (members.has(user.userId)) return; // already in: the index says so without a scan of the user's groups
    members.add(user.userId);
    user.groups.push(groupId);
  }

  private leave(user: LiveUser, groupId: string): void {
    const at = user.groups.indexOf(groupId);
    if (at < 0) return;
    user.groups.splice(at, 1);
    this.unindex(user.userId, groupId);
  }

  private unindex(userId: string, groupId: string): void {
    const members = this.members.get(groupId);
    members?.delete(userId);
    if (members?.size === 0) this.members.delete(groupId);
  }
}
