/**
 * Topic names are the MQTT half of the wire contract. Identifiers are restricted so that they can never contain
 * '/', '+', '#' or a leading '$', which keeps every topic below exactly two levels deep and free of wildcards.
 */
export const USER_ID_PATTERN = '^[A-Za-z0-9_.@-]{1,64}$';
export const GROUP_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';

const userIdRe = new RegExp(USER_ID_PATTERN);
const groupIdRe = new RegExp(GROUP_ID_PATTERN);

export const isUserId = (value: string): boolean => userIdRe.test(value);
export const isGroupId = (value: string): boolean => groupIdRe.test(value);

export const groupTopic = (groupId: string): string => `groups/${groupId}/messages`;
export const eventsTopic = (userId: string): string => `users/${userId}/events`;
/** Where a member publishes (QoS 0) that they are typing; the others hear it on their events topics. */
export const typingTopic = (groupId: string): string => `groups/${groupId}/typing`;

/** Where a member publishes (QoS 1, `{"seq": N}`) that they have read up to N: their read pointer moves. */
export const readTopic = (groupId: string): string => `groups/${groupId}/read`;

export type ParsedTopic =
  | { kind: 'group'; groupId: string }
  | { kind: 'typing'; groupId: string }
  | { kind: 'read'; groupId: string }
  | { kind: 'events'; userId: string };

const parsedTopics = new Map<string, ParsedTopic | null>();
const MAX_CACHED_TOPICS = 10_000;

/**
 * Parses a concrete (wildcard-free) topic; anything that is not a Chorus topic yields null. The broker asks this for
 * every forwarded message, so answers are cached (bounded: the cache is dropped whole when full).
 */
export function parseTopic(topic: string): ParsedTopic | null {
  const cached = parsedTopics.get(topic);
  if (cached !== undefined) return cached;
  const parsed = parseTopicUncached(topic);
  if (parsedTopics.size >= MAX_CACHED_TOPICS) parsedTopics.clear();
  parsedTopics.set(topic, parsed);
  return parsed;
}

function parseTopicUncached(topic: string): ParsedTopic | null {
  const parts = topic.split('/');
  if (parts.length !== 3) return null;
  const [root, id, leaf] = parts as [string, string, string];
  if (root === 'groups' && leaf === 'messages' && isGroupId(id)) return { kind: 'group', groupId: id };
  if (root === 'groups' && leaf === 'typing' && isGroupId(id)) return { kind: 'typing', groupId: id };
  if (root === 'groups' && leaf === 'read' && isGroupId(id)) return { kind: 'read', groupId: id };
  if (root === 'users' && leaf === 'events' && isUserId(id)) return { kind: 'events', userId: id };
  return null;
}
