import type { SeqRange } from '../groups/group-store.js';
import { type StampedMessage, searchableText } from '../protocol/index.js';
import { matchesTerms, type SearchQuery, type Term, tokensOf } from './query.js';

/** A search of one group's history, as the caller may see it. */
export interface GroupSearch {
  groupId: string;
  query: SearchQuery;
  /** The seq ranges the caller may see (history visibility): no hit outside them. */
  ranges: SeqRange[];
  /** Only messages below this seq (the previous page's last hit); none: from the newest. */
  beforeSeq?: number;
  limit: number;
}

/** A message that matched, with where its text matched. */
export interface SearchHit {
  message: StampedMessage;
  /** Up to SNIPPET_CHARS of its text around the first match. */
  snippet: string;
  /** Where the terms matched in the snippet: [start, end) offsets in UTF-16 units. */
  highlights: [number, number][];
}

/**
 * Finds a group's messages by their text (body and attachment names: searchableText).
 *
 * Contract (test/search.contract.ts runs it on every backend):
 * - A hit is a message, never an event, whose text as it stands now matches every term: a word, a word's beginning,
 *   or words in a row, with case and diacritics folded (tokensOf); sent by `from`, created in [after, before) when
 *   they are given; within `ranges`.
 * - A deleted message is never found, nor a message by its text before an edit (the erasure reaches the index).
 * - Hits come newest first (seq descending), below `beforeSeq`, at most `limit`; a page ends short only when
 *   nothing older matches.
 */
export interface Search {
  searchGroup(search: GroupSearch): Promise<SearchHit[]>;
  close(): Promise<void>;
}

/** Whether a message's text as it stands now matches every term, as the index would match it (tokensOf). */
export const textMatches = (message: StampedMessage, terms: Term[]): boolean => {
  const text = searchableText(message.type, message);
  return text !== null && matchesTerms(tokensOf(text), terms);
};

const SNIPPET_CHARS = 160;

/** The snippet and highlights of a matched message: the stretch of its text around the first term that matched. */
export function hitOf(message: StampedMessage, terms: Term[]): SearchHit {
  const text = searchableText(message.type, message) ?? '';
  const words = [...text.matchAll(/[\p{L}\p{N}\p{M}]+/gu)].map((m) => ({
    start: m.index,
    end: m.index + m[0].length,
    token: tokensOf(m[0])[0] ?? '',
  }));
  const matched = new Set<number>();
  words.forEach((word, i) => {
    for (const term of terms) {
      if (term.kind === 'word' && word.token === term.token) matched.add(i);
      if (term.kind === 'prefix' && word.token.startsWith(term.token)) matched.add(i);
      if (term.kind === 'phrase' && term.tokens.every((t, j) => words[i + j]?.token === t)) {
        for (let j = 0; j < term.tokens.length; j++) matched.add(i + j);
      }
    }
  });
  const first = Math.min(...[...matched].map((i) => words[i]!.start), text.length);
  const from = Math.max(0, Math.min(first - SNIPPET_CHARS / 4, text.length - SNIPPET_CHARS));
  const start = from > 0 ? text.lastIndexOf(' ', from) + 1 : 0;
  const snippet = text.slice(start, start + SNIPPET_CHARS);
  const highlights = [...matched]
    .sort((a, b) => a - b)
    .map((i) => [words[i]!.start - start, words[i]!.end - start] as [number, number])
    .filter(([s, e]) => s >= 0 && e <= snippet.length);
  return { message, snippet, highlights };
}
