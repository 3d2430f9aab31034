import { isVisible } from '../groups/visible-ranges.js';
import { isEventType } from '../protocol/index.js';
import type { MessageLog } from '../sequencer/message-log.js';
import { type GroupSearch, hitOf, type Search, type SearchHit, textMatches } from './search.js';

/** Messages read per step, newest first. */
const PAGE = 500;

/**
 * Search by reading a group's recent history from the message log and matching each message as it stands now
 * (tokensOf, as the index tokenizes): the cluster tier's search, bounded to the newest `window` messages of the
 * group below the page's start, so one search costs at most window / PAGE reads whatever the group's size.
 */
export class SearchByScan implements Search {
  constructor(
    private readonly log: MessageLog,
    private readonly window: number,
  ) {}

  async searchGroup({ groupId, query, ranges, beforeSeq, limit }: GroupSearch): Promise<SearchHit[]> {
    const hits: SearchHit[] = [];
    let below = beforeSeq ?? (await this.log.lastSeq(groupId)) + 1;
    for (let read = 0; read < this.window && below > 1; ) {
      const page = await this.log.readBefore(groupId, below, Math.min(PAGE, this.window - read));
      if (page.length === 0) break;
      read += page.length;
      below = page.at(-1)!.seq;
      for (const message of page) {
        if (isEventType(message.type) || message.deletedAt !== undefined || !isVisible(ranges, message.seq)) continue;
        if (query.from !== undefined && message.senderId !== query.from) continue;
        const created = Date.parse(message.createdAt);
        if (created < (query.afterMs ?? 0) || created >= (query.beforeMs ?? Number.POSITIVE_INFINITY)) continue;
        if (!textMatches(message, query.terms)) continue;
        hits.push(hitOf(message, query.terms));
        if (hits.length === limit) return hits;
      }
    }
    return hits;
  }

  async close(): Promise<void> {}
}
