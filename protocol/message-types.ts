import { type TObject, type TSchema, Type } from '@sinclair/typebox';
import { type Attachment, SendPayload, type StampedMessage } from './messages.js';

/**
 * Every message type, declared once: which fields a send of it takes (send-validation checks them), whether it is an
 * event that changes an earlier message and who may aim it at whose (send-rules), what it does to that message (each
 * log implements each effect; the SDK applies it to what it has shown), whether it is pushed, and how a client shows it
 * as a line of text. A type not listed is the app's own and behaves as `text`.
 *
 * Adding a type: its entry here, its fields in SendPayload and StampedMessage (messages.ts) when it has new ones, and
 * its look in the web chat; a new kind of effect also in each log.
 */

/** The content fields of a send, in wire order: everything a client sends but its clientMsgId and type. */
export const CONTENT_FIELDS = [
  'body',
  'replyToSeq',
  'mentions',
  'mentionEveryone',
  'attachments',
  'targetSeq',
  'emoji',
  'remove',
] as const;
export type ContentField = (typeof CONTENT_FIELDS)[number];
export type MessageContent = Pick<SendPayload, ContentField>;

/** What a deleted message loses (erased from the store, not hidden), and so the edits of a deleted message too. */
export const ERASED_BY_DELETE = [
  'body',
  'mentions',
  'mentionEveryone',
  'attachments',
] as const satisfies readonly ContentField[];

/** What an event does to the message it names by targetSeq. */
export type TargetEffect = 'edit' | 'delete' | 'reaction';

export interface MessageType {
  /** Fields a send of this type must carry. */
  required: readonly ContentField[];
  /** Fields it may carry besides; any other is refused. */
  optional: readonly ContentField[];
  /** At least one of these must be there (a message needs something to show). */
  oneOf?: readonly ContentField[];
  /** An event: it changes the earlier message named by targetSeq (never itself an event) instead of being shown. */
  event?: {
    effect: TargetEffect;
    /** Whose message it may name: the sender's own, the sender's or (by an admin) anyone's, or anyone's. */
    of: 'own' | 'own-or-admin' | 'any';
    /** Whether it may name a deleted message (it is then stored and changes nothing); TARGET_DELETED otherwise. */
    ofDeleted: boolean;
    /** Whether a message past the retention is refused as TARGET_EXPIRED. */
    withinRetention: boolean;
  };
  /** Whether offline members hear of it through Web Push. */
  pushed: boolean;
  /** One line of text for it, after `head` ("[seq] sender"): the terminal chat's, as history returns it or live. */
  line(head: string, m: StampedMessage): string;
}

const units = ['B', 'KB', 'MB', 'GB', 'TB'];

/** 2048 -> "2 KB": an attachment's size for people. */
export function humanSize(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const describeAttachment = (a: Attachment): string =>
  `📎 ${a.name ?? a.url} (${a.mimeType}, ${humanSize(a.sizeBytes)}${a.width && a.height ? `, ${a.width}×${a.height}` : ''})`;

/** `text`, and every type of the app's own: a body and/or attachments, as a reply, with mentions. */
const APP_MESSAGE: MessageType = {
  required: [],
  optional: ['body', 'attachments', 'replyToSeq', 'mentions', 'mentionEveryone'],
  oneOf: ['body', 'attachments'],
  pushed: true,
  line(head, m) {
    if (m.deletedAt !== undefined) return `${head}: (deleted)`;
    const parts: string[] = [];
    if (m.replyToSeq !== undefined) parts.push(`↪ #${m.replyToSeq}`);
    if (m.mentionEveryone) parts.push('@everyone');
    if (m.body !== undefined) parts.push(m.body);
    for (const attachment of m.attachments ?? []) parts.push(describeAttachment(attachment));
    if (m.editedAt !== undefined) parts.push('(edited)');
    if (m.reactions && m.reactions.length > 0) parts.push(m.reactions.map((r) => `${r.emoji}${r.count}`).join(' '));
    return `${head}: ${parts.join(' ')}`;
  },
};

export const MESSAGE_TYPES: Readonly<Record<string, MessageType>> = {
  text: APP_MESSAGE,
  /** A new body for the sender's own message. */
  edit: {
    required: ['targetSeq', 'body'],
    optional: [],
    event: { effect: 'edit', of: 'own', ofDeleted: false, withinRetention: true },
    pushed: false,
    line: (head, m) =>
      m.body === undefined
        ? `${head} edited #${m.targetSeq} (since deleted)`
        : `${head} edited #${m.targetSeq}: ${m.body}`,
  },
  /** Erases a message: the sender's own, or any by a group admin. Allowed again on a deleted one (a retry). */
  delete: {
    required: ['targetSeq'],
    optional: [],
    event: { effect: 'delete', of: 'own-or-admin', ofDeleted: true, withinRetention: true },
    pushed: false,
    line: (head, m) => `${head} deleted #${m.targetSeq}`,
  },
  /** An emoji on anyone's message; remove: true takes the sender's back. */
  reaction: {
    required: ['targetSeq', 'emoji'],
    optional: ['remove'],
    event: { effect: 'reaction', of: 'any', ofDeleted: false, withinRetention: false },
    pushed: false,
    line: (head, m) =>
      m.remove ? `${head} took back ${m.emoji} from #${m.targetSeq}` : `${head} reacted ${m.emoji} to #${m.targetSeq}`,
  },
};

/** The declaration of a type: its own entry, or that of the app's messages. */
export const messageTypeOf = (type: string): MessageType =>
  Object.hasOwn(MESSAGE_TYPES, type) ? MESSAGE_TYPES[type]! : APP_MESSAGE;

/** The types with a meaning to Chorus that change an earlier message (edit, delete, reaction). */
export const EVENT_TYPES: readonly string[] = Object.keys(MESSAGE_TYPES).filter(
  (type) => MESSAGE_TYPES[type]!.event !== undefined,
);
export const isEventType = (type: string): boolean => messageTypeOf(type).event !== undefined;
/** What an event of this type does to its target; undefined for a message that is shown on its own. */
export const effectOf = (type: string): TargetEffect | undefined => messageTypeOf(type).event?.effect;

/** Whether a content field's value counts as there: absent, false, '' and [] are how a message says it has none. */
const hasValue = (value: unknown): boolean =>
  value !== undefined && value !== false && value !== '' && !(Array.isArray(value) && value.length === 0);

/** The content fields of a send or a message that are there, in wire order. */
export function contentOf(source: Partial<Record<ContentField, unknown>>): MessageContent {
  const content: Record<string, unknown> = {};
  for (const field of CONTENT_FIELDS) if (hasValue(source[field])) content[field] = source[field];
  return content as MessageContent;
}

/**
 * The send payload as each type takes it, for the API's documentation: one variant per declared type (two for the
 * app's messages: with a body, or with attachments), built from the declarations above, so the document states
 * exactly what send validation accepts.
 */
export const SendPayloadByType = Type.Union(
  Object.entries(MESSAGE_TYPES).flatMap(([type, declared]) => {
    const typeField =
      declared === APP_MESSAGE
        ? Type.Optional(
            Type.String({
              pattern: `^(?!(${EVENT_TYPES.join('|')})$)[a-z][a-z0-9._-]{0,31}$`,
              description: `defaults to "text"; any type but ${EVENT_TYPES.join(', ')} is a message of the app's own`,
            }),
          )
        : Type.Literal(type);
    const variant = (required: readonly ContentField[], title: string): TObject => {
      const properties: Record<string, TSchema> = { clientMsgId: SendPayload.properties.clientMsgId, type: typeField };
      for (const field of required) properties[field] = Type.Optional(SendPayload.properties[field], false);
      for (const field of [...declared.required, ...declared.optional, ...(declared.oneOf ?? [])]) {
        properties[field] ??= Type.Optional(SendPayload.properties[field]);
      }
      return Type.Object(properties, { additionalProperties: false, title });
    };
    if (declared !== APP_MESSAGE) return [variant(declared.required, type)];
    return (declared.oneOf ?? []).map((field) => variant([...declared.required, field], `message with ${field}`));
  }),
  { description: 'a send payload; which fields it takes depends on its type' },
);

/**
 * What search finds a message by: its body and its attachments' file names. Events (edits, deletes, reactions) are
 * found through the message they change, as it stands now; null for them.
 */
export function searchableText(type: string, content: Pick<MessageContent, 'body' | 'attachments'>): string | null {
  if (isEventType(type)) return null;
  const names = (content.attachments ?? []).flatMap((attachment) => (attachment.name ? [attachment.name] : []));
  const text = [content.body ?? '', ...names].join('\n').trim();
  return text === '' ? null : text;
}

/** One line of the terminal chat for a message or event, as history returns it (edited, deleted) or as it arrives. */
export const messageLine = (m: StampedMessage): string => messageTypeOf(m.type).line(`[${m.seq}] ${m.senderId}`, m);
