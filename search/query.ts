import { ChorusError, USER_ID_PATTERN } from '../protocol/index.js';

/** The longest query text taken, in characters. */
export const MAX_QUERY_LENGTH = 256;
/** Terms in one query at most: each one narrows the search, and each costs the index a lookup. */
export const MAX_TERMS = 16;

/** One thing the text must contain: a word, a word's beginning (`depl*`), or words in a row (`"deploy failed"`). */
export type Term = { kind: 'word' | 'prefix'; token: string } | { kind: 'phrase'; tokens: string[] };

/** A parsed search: every term must match; `from`, `after` and `before` narrow further. */
export interface SearchQuery {
  terms: Term[];
  /** Only messages from this sender. */
  from?: string;
  /** Only messages created at or after this time (ms since the epoch, UTC midnight of the date given). */
  afterMs?: number;
  /** Only messages created before this time (ms since the epoch, UTC midnight of the date given). */
  beforeMs?: number;
}

const OPERATORS = new Set(['from', 'before', 'after']);
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/**
 * The words of a text as the index sees them: runs of letters and digits, case-folded, without diacritics (as
 * SQLite FTS5's unicode61 tokenizer with remove_diacritics 2 makes them), so that every backend matches alike.
 */
export function tokensOf(text: string): string[] {
  return (text
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .match(/[\p{L}\p{N}]+/gu) ?? []) as string[];
}

const invalid = (message: string) => new ChorusError('INVALID_QUERY', message);

/**
 * Parses the text of a search: words, prefixes (`depl*`), phrases in double quotes, `from:user`,
 * `before:YYYY-MM-DD` and `after:YYYY-MM-DD`. Refuses with INVALID_QUERY what it cannot take: an empty or over-long
 * query, an unbalanced quote, an unknown operator, a bad date or user id, a query with no term to look for.
 */
export function parseQuery(text: string): SearchQuery {
  if (text.length > MAX_QUERY_LENGTH) throw invalid(`a query is at most ${MAX_QUERY_LENGTH} characters`);
  if ((text.match(/"/g) ?? []).length % 2 !== 0) throw invalid('a quote is not closed');
  const query: SearchQuery = { terms: [] };
  // Phrases first (their words are not operators), then the rest word by word.
  const parts = text.split('"');
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const tokens = tokensOf(part);
      if (tokens.length === 1) query.terms.push({ kind: 'word', token: tokens[0]! });
      else if (tokens.length > 1) query.terms.push({ kind: 'phrase', tokens });
      return;
    }
    for (const word of part.split(/\s+/).filter((w) => w !== '')) addWord(query, word);
  });
  if (query.terms.length === 0) throw invalid('a query needs a word to look for');
  if (query.terms.length > MAX_TERMS) throw invalid(`a query has at most ${MAX_TERMS} terms`);
  return query;
}

function addWord(query: SearchQuery, word: string): void {
  const colon = word.indexOf(':');
  if (colon > 0 && /^[a-z]+$/i.test(word.slice(0, colon))) {
    const operator = word.slice(0, colon).toLowerCase();
    const value = word.slice(colon + 1);
    if (!OPERATORS.has(operator)) throw invalid(`unknown operator ${operator}: (from:, before: and after: are known)`);
    if (operator === 'from') {
      if (!new RegExp(USER_ID_PATTERN).test(value)) throw invalid('from: takes a user id');
      query.from = value;
    } else {
      const ms = dateMs(value);
      if (operator === 'before') query.beforeMs = ms;
      else query.afterMs = ms;
    }
    return;
  }
  const prefix = word.endsWith('*');
  const tokens = tokensOf(prefix ? word.slice(0, -1) : word);
  if (prefix) {
    if (tokens.length !== 1) throw invalid('a prefix is one word followed by *');
    query.terms.push({ kind: 'prefix', token: tokens[0]! });
    return;
  }
  // A word the tokenizer splits (e2e-tests, o'clock) is looked for as the phrase it becomes.
  if (tokens.length === 1) query.terms.push({ kind: 'word', token: tokens[0]! });
  else if (tokens.length > 1) query.terms.push({ kind: 'phrase', tokens });
}

function dateMs(value: string): number {
  const match = DATE.exec(value);
  const ms = match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : Number.NaN;
  const date = new Date(ms);
  if (
    !match ||
    Number.isNaN(ms) ||
    date.getUTCMonth() + 1 !== Number(match[2]) ||
    date.getUTCDate() !== Number(match[3])
  ) {
    throw invalid('before: and after: take a date, YYYY-MM-DD');
  }
  return ms;
}

/** Whether a text (tokenized) matches every term of the query. */
export function matchesTerms(tokens: string[], terms: Term[]): boolean {
  return terms.every((term) => {
    if (term.kind === 'phrase') return tokens.some((_, i) => term.tokens.every((t, j) => tokens[i + j] === t));
    if (term.kind === 'word') return tokens.includes(term.token);
    return tokens.some((token) => token.startsWith(term.token));
  });
}
