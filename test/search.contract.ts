import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WHOLE_HISTORY } from '../groups/visible-ranges.js';
import type { MessageDraft, MessageLog } from '../sequencer/message-log.js';
import { parseQuery } from '../search/query.js';
import type { Search } from '../search/search.js';

/** A message log and the search over it, on the same storage. */
export interface SearchBackend {
  log: MessageLog;
  search: Search;
}

/** What every Search implementation promises (see search/search.ts); each backend runs it with its log. */
export function searchContract(name: string, open: () => Promise<SearchBackend>): void {
  describe(`Search contract: ${name}`, () => {
    let log: MessageLog;
    let search: Search;
    beforeAll(async () => {
      ({ log, search } = await open());
    });
    afterAll(async () => {
      await search.close();
      await log.close();
    });

    const at = (day: number) => Date.UTC(2026, 0, day, 12);
    const draft = (clientMsgId: string, body: string, extra: Partial<MessageDraft> = {}): MessageDraft => ({
      senderId: 'alice',
      clientMsgId,
      type: 'text',
      body,
      createdAtMs: at(10),
      ...extra,
    });
    /** A fresh group holding these drafts, seq 1.. in order. */
    const group = async (drafts: MessageDraft[]) => {
      const groupId = `g-${randomUUID()}`;
      await log.append([{ groupId, drafts }]);
      return groupId;
    };
    const find = async (
      groupId: string,
      text: string,
      options: { beforeSeq?: number; limit?: number; ranges?: typeof WHOLE_HISTORY } = {},
    ) =>
      (
        await search.searchGroup({
          groupId,
          query: parseQuery(text),
          ranges: options.ranges ?? WHOLE_HISTORY,
          limit: options.limit ?? 50,
          ...(options.beforeSeq === undefined ? {} : { beforeSeq: options.beforeSeq }),
        })
      ).map((hit) => hit.message.seq);

    it('finds words, prefixes and phrases, case and accents folded, newest first, and only in its group', async () => {
      const groupId = await group([
        draft('1', 'The deploy failed again'),
        draft('2', 'Déploiement réussi'),
        draft('3', 'deploy is green now'),
        draft('4', 'nothing here'),
      ]);
      await group([draft('x', 'deploy failed in another group')]);
      expect(await find(groupId, 'DEPLOY')).toEqual([3, 1]);
      expect(await find(groupId, 'depl*')).toEqual([3, 2, 1]);
      expect(await find(groupId, '"deploy failed"')).toEqual([1]);
      expect(await find(groupId, '"failed deploy"')).toEqual([]);
      expect(await find(groupId, 'deploiement')).toEqual([2]);
      expect(await find(groupId, 'deploy green')).toEqual([3]);
    });

    it('narrows by sender and by date, and finds attachments by file name', async () => {
      const photo = {
        url: 'https://files.example/p.jpg',
        mimeType: 'image/jpeg',
        sizeBytes: 10,
        name: 'holiday-beach.jpg',
      };
      const groupId = await group([
        draft('1', 'beach day', { createdAtMs: at(5) }),
        draft('2', 'beach again', { senderId: 'bob', createdAtMs: at(15) }),
        draft('3', 'see attached', { attachments: [photo], createdAtMs: at(20) }),
      ]);
      expect(await find(groupId, 'beach')).toEqual([3, 2, 1]);
      expect(await find(groupId, 'beach from:bob')).toEqual([2]);
      expect(await find(groupId, 'beach after:2026-01-10')).toEqual([3, 2]);
      expect(await find(groupId, 'beach before:2026-01-15')).toEqual([1]);
      expect(await find(groupId, 'holiday')).toEqual([3]);
    });

    it('never finds a deleted message, nor a message by its text before an edit, nor the events themselves', async () => {
      const groupId = await group([draft('1', 'secret plan'), draft('2', 'old wording'), draft('3', 'keep this plan')]);
      await log.append([
        {
          groupId,
          drafts: [
            draft('del', '', { type: 'delete', targetSeq: 1, body: undefined }),
            draft('edit', 'new wording', { type: 'edit', targetSeq: 2 }),
          ],
        },
      ]);
      expect(await find(groupId, 'secret')).toEqual([]);
      expect(await find(groupId, 'plan')).toEqual([3]);
      expect(await find(groupId, 'old')).toEqual([]);
      expect(await find(groupId, 'wording')).toEqual([2]); // the message, not its edit event (seq 5)
    });

    it('pages below a seq, keeps to the visible ranges, and gives each hit a snippet with its matches marked', async () => {
      const groupId = await group(
        Array.from({ length: 30 }, (_, i) => draft(`m${i}`, `status report number ${i + 1}`)),
      );
      const first = await find(groupId, 'report', { limit: 10 });
      expect(first).toEqual(Array.from({ length: 10 }, (_, i) => 30 - i));
      expect(await find(groupId, 'report', { limit: 10, beforeSeq: first.at(-1)! })).toEqual(
        Array.from({ length: 10 }, (_, i) => 20 - i),
      );
      expect(await find(groupId, 'report', { ranges: [{ after: 5, until: 8 }] })).toEqual([8, 7, 6]);
      const [hit] = await search.searchGroup({
        groupId,
        query: parseQuery('"report number"'),
        ranges: WHOLE_HISTORY,
        limit: 1,
      });
      expect(hit!.snippet).toBe('status report number 30');
      expect(hit!.highlights.map(([s, e]) => hit!.snippet.slice(s, e))).toEqual(['report', 'number']);
    });
  });
}
