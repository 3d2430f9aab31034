import type { Attachment, StampedMessage } from '../protocol/index.js';

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

/** One line of the terminal chat for a message or event, as history returns it (edited, deleted) or as it arrives. */
export function messageLine(m: StampedMessage): string {
  const head = `[${m.seq}] ${m.senderId}`;
  if (m.type === 'edit') return m.body === undefined ? `${head} edited #${m.targetSeq} (since deleted)` : `${head} edited #${m.targetSeq}: ${m.body}`;
  if (m.type === 'delete') return `${head} deleted #${m.targetSeq}`;
  if (m.type === 'reaction') return m.remove ? `${head} took back ${m.emoji} from #${m.targetSeq}` : `${head} reacted ${m.emoji} to #${m.targetSeq}`;
  if (m.deletedAt !== undefined) return `${head}: (deleted)`;
  const parts: string[] = [];
  if (m.replyToSeq !== undefined) parts.push(`↪ #${m.replyToSeq}`);
  if (m.mentionEveryone) parts.push('@everyone');
  if (m.body !== undefined) parts.push(m.body);
  for (const attachment of m.attachments ?? []) parts.push(describeAttachment(attachment));
  if (m.editedAt !== undefined) parts.push('(edited)');
  if (m.reactions && m.reactions.length > 0) parts.push(m.reactions.map((r) => `${r.emoji}${r.count}`).join(' '));
  return `${head}: ${parts.join(' ')}`;
}
