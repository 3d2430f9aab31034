import type {
  GroupView,
  HistoryPageView,
  HistoryVisibility,
  MemberRole,
  MemberView,
  PushMode,
  ReceiptsView,
  SearchHitView,
  SendPayload,
  SendView,
  StampedMessage,
} from '../protocol/index.js';

export type GroupInfo = GroupView;
export type HistoryPage = HistoryPageView;
export type MemberInfo = MemberView;
export type { PushMode };

/** What a group's admin may set when creating or changing it (null clears description or avatarUrl). */
export interface GroupSettings {
  name?: string;
  description?: string | null;
  avatarUrl?: string | null;
  historyVisibility?: HistoryVisibility;
  /** Days the group keeps its messages, at most the server's; null: back to the server's. */
  retentionDays?: number | null;
}

/** Who has a message: counts over all members, and a page of the readers' user ids. */
export type Receipts = ReceiptsView;

/** What the SDK learns of a stored send, over REST or MQTT alike (the REST answer also carries the message). */
export type SendReceipt = Omit<SendView, 'message'>;

/** An error answer of the REST API; `code` is the stable error code (see protocol/errors.ts). */
export class ChorusApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** When the server said how long to wait before trying again (a 503's or 429's Retry-After, in seconds). */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'ChorusApiError';
  }
}

/** Retry-After as a number of seconds (RFC 9110 §10.2.3); its other form, a date, is not one Chorus sends. */
function retryAfterMs(header: string | null): number | undefined {
  return header !== null && /^\d{1,6}$/.test(header) ? Number(header) * 1000 : undefined;
}

/** A thin typed client of the REST API (fetch-based: Node 20+ and browsers). */
export class ChorusApi {
  constructor(
    private readonly baseUrl: string,
    private token: string,
  ) {}

  setToken(token: string): void {
    this.token = token;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.baseUrl.replace(/\/$/, '')}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) {
      const error = parsed as { code?: string; message?: string } | undefined;
      throw new ChorusApiError(
        res.status,
        error?.code ?? 'INTERNAL',
        error?.message ?? res.statusText,
        retryAfterMs(res.headers.get('retry-after')),
      );
    }
    return parsed as T;
  }

  createGroup(name: string, members: string[] = [], settings: Omit<GroupSettings, 'name'> = {}): Promise<GroupInfo> {
    const extra = Object.fromEntries(
      Object.entries(settings).filter(([, value]) => value !== null && value !== undefined),
    );
    return this.call('POST', '/v1/groups', { name, members, ...extra });
  }

  /** Admins: change name, description, avatar or history visibility; every member hears group-updated. */
  updateGroup(groupId: string, changes: GroupSettings): Promise<GroupInfo> {
    return this.call('PATCH', `/v1/groups/${encodeURIComponent(groupId)}`, changes);
  }

  /** Admins: delete the group, its messages and memberships; every member hears group-deleted. */
  deleteGroup(groupId: string): Promise<void> {
    return this.call('DELETE', `/v1/groups/${encodeURIComponent(groupId)}`);
  }

  /**
   * A group's messages matching `query` (words, prefixes `depl*`, "phrases", from:user, after:/before:YYYY-MM-DD),
   * newest first; `next` is the beforeSeq of the next page.
   */
  search(
    groupId: string,
    query: string,
    options: { beforeSeq?: number; limit?: number } = {},
  ): Promise<{ hits: SearchHitView[]; next?: number }> {
    const params = new URLSearchParams({ q: query, limit: String(options.limit ?? 20) });
    if (options.beforeSeq !== undefined) params.set('beforeSeq', String(options.beforeSeq));
    return this.call('GET', `/v1/groups/${encodeURIComponent(groupId)}/search?${params}`);
  }

  /** search() across the caller's groups, newest first; `next` is the `after` of the next page. */
  searchAll(
    query: string,
    options: { after?: string; limit?: number } = {},
  ): Promise<{ hits: SearchHitView[]; next?: string }> {
    const params = new URLSearchParams({ q: query, limit: String(options.limit ?? 20) });
    if (options.after !== undefined) params.set('after', options.after);
    return this.call('GET', `/v1/search?${params}`);
  }

  /** Who has message `seq`: counts, and readers paged by user id after `after`. */
  receipts(groupId: string, seq: number, after = '', limit = 100): Promise<Receipts> {
    return this.call(
      'GET',
      `/v1/groups/${encodeURIComponent(groupId)}/messages/${seq}/receipts?limit=${limit}&after=${encodeURIComponent(after)}`,
    );
  }

  getGroup(groupId: string): Promise<GroupInfo> {
    return this.call('GET', `/v1/groups/${encodeURIComponent(groupId)}`);
  }

  async listGroups(): Promise<GroupInfo[]> {
    const all: GroupInfo[] = [];
    for (let after = ''; ; ) {
      const page = await this.call<{ groups: GroupInfo[]; next?: string }>(
        'GET',
        `/v1/groups?limit=500&after=${encodeURIComponent(after)}`,
      );
      all.push(...page.groups);
      if (!page.next) return all;
      after = page.next;
    }
  }

  addMember(groupId: string, userId: string, role: MemberRole = 'member'): Promise<MemberInfo> {
    return this.call('POST', `/v1/groups/${encodeURIComponent(groupId)}/members`, { userId, role });
  }

  /** Adds up to 1,000 users at once (admins only); those already members are listed apart and left as they are. */
  addMembers(
    groupId: string,
    userIds: string[],
    role: MemberRole = 'member',
  ): Promise<{ added: string[]; alreadyMembers: string[] }> {
    return this.call('POST', `/v1/groups/${encodeURIComponent(groupId)}/members/batch`, { userIds, role });
  }

  removeMember(groupId: string, userId: string): Promise<void> {
    return this.call('DELETE', `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}`);
  }

  setRole(groupId: string, userId: string, role: MemberRole): Promise<MemberInfo> {
    return this.call('PUT', `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}/role`, {
      role,
    });
  }

  /**
   * Messages after `afterSeq`, ascending, with where the kept history begins: messages below `retainedFrom` have
   * expired (retention), so a reader past its position learns they are gone rather than missing.
   */
  messagesAfter(groupId: string, afterSeq: number, limit: number): Promise<HistoryPage> {
    return this.call('GET', `/v1/groups/${encodeURIComponent(groupId)}/messages?afterSeq=${afterSeq}&limit=${limit}`);
  }

  /** The newest messages before `beforeSeq` (or the newest of all), newest first; with their reactions if asked. */
  async messagesBefore(
    groupId: string,
    limit: number,
    beforeSeq?: number,
    options: { withReactions?: boolean } = {},
  ): Promise<StampedMessage[]> {
    const before = beforeSeq === undefined ? '' : `&beforeSeq=${beforeSeq}`;
    const reactions = options.withReactions ? '&withReactions=true' : '';
    const page = await this.call<{ messages: StampedMessage[] }>(
      'GET',
      `/v1/groups/${encodeURIComponent(groupId)}/messages?limit=${limit}${before}${reactions}`,
    );
    return page.messages;
  }

  send(groupId: string, payload: SendPayload): Promise<SendReceipt> {
    return this.call('POST', `/v1/groups/${encodeURIComponent(groupId)}/messages`, payload);
  }

  /** A page of members by user id, with the count of all. */
  members(groupId: string, after = '', limit = 100): Promise<{ members: MemberInfo[]; count: number; next?: string }> {
    return this.call(
      'GET',
      `/v1/groups/${encodeURIComponent(groupId)}/members?limit=${limit}&after=${encodeURIComponent(after)}`,
    );
  }

  /** A page of members with whether they are online. */
  presence(groupId: string, after = ''): Promise<{ members: { userId: string; online: boolean }[]; next?: string }> {
    return this.call('GET', `/v1/groups/${encodeURIComponent(groupId)}/presence?after=${encodeURIComponent(after)}`);
  }

  async vapidPublicKey(): Promise<string> {
    return (await this.call<{ publicKey: string }>('GET', '/v1/push/vapid-public-key')).publicKey;
  }

  /** Stores this device's push subscription (a PushSubscription's toJSON()). */
  addPushSubscription(
    subscription: { endpoint: string; keys: { p256dh: string; auth: string } },
    deviceId?: string,
  ): Promise<unknown> {
    return this.call('POST', '/v1/push/subscriptions', { ...subscription, ...(deviceId ? { deviceId } : {}) });
  }

  async pushMode(groupId: string): Promise<PushMode> {
    return (await this.call<{ mode: PushMode }>('GET', `/v1/groups/${encodeURIComponent(groupId)}/push-preference`))
      .mode;
  }

  async setPushMode(groupId: string, mode: PushMode): Promise<void> {
    await this.call('PUT', `/v1/groups/${encodeURIComponent(groupId)}/push-preference`, { mode });
  }

  markRead(groupId: string, seq: number): Promise<{ readSeq: number; unread: number }> {
    return this.call('PUT', `/v1/groups/${encodeURIComponent(groupId)}/read`, { seq });
  }
}
