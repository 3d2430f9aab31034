import { Type } from '@sinclair/typebox';
import { ChorusError, SearchHitView } from '../protocol/index.js';
import { MAX_QUERY_LENGTH, parseQuery } from '../search/query.js';
import type { SearchHit } from '../search/search.js';
import type { Api, ApiDeps } from './api-deps.js';
import { GroupParams, Query, Seq, errors } from './schemas.js';

/** The caller's groups a search across groups looks in, at most. */
const MAX_GROUPS_SEARCHED = 500;
/** Groups searched at once by a search across groups. */
const GROUPS_IN_FLIGHT = 8;

const SearchText = Type.String({
  minLength: 1,
  maxLength: MAX_QUERY_LENGTH,
  description:
    'words (all must match), prefixes (depl*), phrases in double quotes, from:userId, after:YYYY-MM-DD, before:YYYY-MM-DD',
});
/** Hits per page when a search names no limit. */
const SEARCH_PAGE = 20;
const Limit = Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: SEARCH_PAGE }));

const view = ({ message, snippet, highlights }: SearchHit) => ({
  groupId: message.groupId,
  seq: message.seq,
  senderId: message.senderId,
  createdAt: message.createdAt,
  snippet,
  highlights,
  message,
});

/** Where a page of a search across groups ended: hits sort newest first, then by group id, then by seq descending. */
interface Cursor {
  ms: number;
  groupId: string;
  seq: number;
}
const encodeCursor = ({ ms, groupId, seq }: Cursor) => `${ms}.${seq}.${groupId}`;
function decodeCursor(text: string): Cursor {
  const match = /^(\d{1,15})\.(\d{1,15})\.([A-Za-z0-9_-]{1,64})$/.exec(text);
  if (!match) throw new ChorusError('VALIDATION_FAILED', 'after is not a cursor this route gave');
  return { ms: Number(match[1]), seq: Number(match[2]), groupId: match[3]! };
}
const cursorOf = (hit: SearchHit): Cursor => ({
  ms: Date.parse(hit.message.createdAt),
  groupId: hit.message.groupId,
  seq: hit.message.seq,
});
/** Sorts hits newest first, ties by group id, then seq descending: the order pages follow. */
const byCursor = (a: Cursor, b: Cursor) =>
  b.ms - a.ms || (a.groupId < b.groupId ? -1 : a.groupId > b.groupId ? 1 : b.seq - a.seq);

/** Search in a group's history and across the caller's groups, with the rules of history reads. */
export async function searchRoutes(app: Api, { groups, search }: ApiDeps): Promise<void> {
  app.get(
    '/groups/:groupId/search',
    {
      schema: {
        summary: "Search a group's history as the caller may read it: newest first, paged by seq",
        params: GroupParams,
        querystring: Query({
          q: SearchText,
          beforeSeq: Type.Optional(Seq),
          limit: Limit,
        }),
        response: {
          200: Type.Object({ hits: Type.Array(SearchHitView), next: Type.Optional(Seq) }),
          ...errors(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const { groupId } = request.params;
      const { q, beforeSeq, limit = SEARCH_PAGE } = request.query;
      const query = parseQuery(q);
      await groups.requireMember(groupId, request.userId);
      const ranges = await groups.visibleRanges(groupId, request.userId);
      const hits = await search.searchGroup({
        groupId,
        query,
        ranges,
        limit,
        ...(beforeSeq === undefined ? {} : { beforeSeq }),
      });
      return { hits: hits.map(view), ...(hits.length === limit ? { next: hits.at(-1)!.message.seq } : {}) };
    },
  );

  app.get(
    '/search',
    {
      schema: {
        summary: `Search the caller's groups (up to ${MAX_GROUPS_SEARCHED} of them): newest first, paged by cursor`,
        querystring: Query({
          q: SearchText,
          after: Type.Optional(Type.String({ maxLength: 100, description: 'the next of the previous page' })),
          limit: Limit,
        }),
        response: {
          200: Type.Object({ hits: Type.Array(SearchHitView), next: Type.Optional(Type.String()) }),
          ...errors(400, 401),
        },
      },
    },
    async (request) => {
      const { q, after, limit = SEARCH_PAGE } = request.query;
      const query = parseQuery(q);
      const cursor = after === undefined ? undefined : decodeCursor(after);
      // Same-millisecond hits may sit on both sides of the cursor: each group is asked up to and including its ms.
      const pageQuery = cursor
        ? { ...query, beforeMs: Math.min(query.beforeMs ?? Number.MAX_SAFE_INTEGER, cursor.ms + 1) }
        : query;
      const groupIds = (await groups.allGroupIds(request.userId)).slice(0, MAX_GROUPS_SEARCHED);
      const found: { hit: SearchHit; at: Cursor }[] = [];
      for (let i = 0; i < groupIds.length; i += GROUPS_IN_FLIGHT) {
        const pages = await Promise.all(
          groupIds.slice(i, i + GROUPS_IN_FLIGHT).map(async (groupId) => {
            const ranges = await groups.visibleRanges(groupId, request.userId);
            return search.searchGroup({ groupId, query: pageQuery, ranges, limit: limit + 1 });
          }),
        );
        for (const hit of pages.flat()) {
          const at = cursorOf(hit);
          if (!cursor || byCursor(cursor, at) < 0) found.push({ hit, at });
        }
      }
      const page = found.sort((a, b) => byCursor(a.at, b.at)).slice(0, limit);
      return {
        hits: page.map(({ hit }) => view(hit)),
        ...(page.length === limit ? { next: encodeCursor(page.at(-1)!.at) } : {}),
      };
    },
  );
}
