import { ERASED_BY_DELETE, effectOf, type StampedMessage } from '../protocol/index.js';

/**
 * A delivered message as a later event (edit, delete, reaction: one that names it by targetSeq) leaves it, as the
 * history API would return it now: an edit replaces the body (editedAt), a delete leaves a tombstone (deletedAt, no
 * body, attachments or mentions), a reaction changes its counts. `reactors` remembers who reacted with what, as seen
 * live, so that a repeated reaction counts once. Returns null when the event changes nothing.
 */
export function applyEvent(
  target: StampedMessage,
  event: StampedMessage,
  viewerId: string,
  reactors: Set<string>,
): StampedMessage | null {
  if (event.targetSeq !== target.seq || target.deletedAt !== undefined) return null;
  const effect = effectOf(event.type);
  if (effect === 'edit') {
    if (event.senderId !== target.senderId || event.body === undefined) return null;
    return { ...target, body: event.body, editedAt: event.createdAt };
  }
  if (effect === 'delete') {
    const { editedAt: _edited, reactions: _reactions, ...rest } = target;
    for (const field of ERASED_BY_DELETE) delete rest[field];
    return { ...rest, deletedAt: event.createdAt };
  }
  if (effect !== 'reaction' || event.emoji === undefined) return null;
  const key = `${event.emoji}\n${event.senderId}`;
  const adding = !event.remove;
  const counts = (target.reactions ?? []).map((r) => ({ ...r }));
  const known = counts.find((r) => r.emoji === event.emoji);
  // A repeat counts once. A removal counts when its reaction was seen live, or may be among the counts history gave
  // (which name no one but the viewer): those are taken to include it.
  if (adding && reactors.has(key)) return null;
  if (!adding && !reactors.has(key) && !(known && (event.senderId !== viewerId || known.mine))) return null;
  if (adding) reactors.add(key);
  else reactors.delete(key);
  let count = known;
  if (!count) counts.push((count = { emoji: event.emoji, count: 0, mine: false }));
  count.count += adding ? 1 : -1;
  if (event.senderId === viewerId) count.mine = adding;
  const reactions = counts.filter((r) => r.count > 0).sort((a, b) => b.count - a.count || (a.emoji < b.emoji ? -1 : 1));
  const { reactions: _old, ...rest } = target;
  return reactions.length > 0 ? { ...rest, reactions } : rest;
}
