export type PushMode = 'all' | 'mentions' | 'muted';

export interface PushSubscriptionRecord {
  userId: string;
  /** The push service URL the browser gave (RFC 8030 push resource). */
  endpoint: string;
  /** The browser's ECDH P-256 public key and auth secret (RFC 8291), base64url. */
  p256dh: string;
  auth: string;
  deviceId?: string;
  createdAtMs: number;
}

/** Most users one `reachable` call asks about (the notifier's page of members). */
export const MAX_REACHABLE_QUERY = 500;

/**
 * Push subscriptions (per user, one per endpoint) and per-group push preferences.
 *
 * Contract: saveSubscription replaces a user's subscription with the same endpoint, and refuses ('limit') a new
 * endpoint past maxPerUser; removeSubscription answers whether one was removed; a user with no preference for a group
 * gets 'all'. `reachable` answers for up to MAX_REACHABLE_QUERY users at once: those with at least one subscription,
 * each with their preference for the group ('muted' included), and nobody else; it costs a bounded number of reads,
 * not one per user.
 */
export interface PushStore {
  saveSubscription(subscription: PushSubscriptionRecord, maxPerUser: number): Promise<'saved' | 'limit'>;
  removeSubscription(userId: string, endpoint: string): Promise<boolean>;
  listSubscriptions(userId: string): Promise<PushSubscriptionRecord[]>;
  setMode(userId: string, groupId: string, mode: PushMode): Promise<void>;
  getMode(userId: string, groupId: string): Promise<PushMode>;
  reachable(userIds: string[], groupId: string): Promise<Map<string, PushMode>>;
  close(): Promise<void>;
}
