import { describe, expect, it } from 'vitest';
import { matchesTerms, parseQuery, tokensOf } from '../search/query.js';

describe('search query syntax', () => {
  it('reads words, prefixes, phrases and the from:, before: and after: operators', () => {
    expect(parseQuery('Deploy failed')).toEqual({
      terms: [
        { kind: 'word', token: 'deploy' },
        { kind: 'word', token: 'failed' },
      ],
    });
    expect(parseQuery('depl* "build is GREEN" from:alice after:2026-01-02 before:2026-02-01')).toEqual({
      terms: [
        { kind: 'prefix', token: 'depl' },
        { kind: 'phrase', tokens: ['build', 'is', 'green'] },
      ],
      from: 'alice',
      afterMs: Date.UTC(2026, 0, 2),
      beforeMs: Date.UTC(2026, 1, 1),
    });
    expect(parseQuery('Café e2e-tests')).toEqual({
      terms: [
        { kind: 'word', token: 'cafe' },
        { kind: 'phrase', tokens: ['e2e', 'tests'] },
      ],
    });
  });

  it('refuses what it cannot read with INVALID_QUERY, never an error of the index', () => {
    for (const bad of [
      '',
      '   ',
      'x'.repeat(257),
      '"unbalanced',
      'size:big',
      'from:',
      'from:bad$user',
      'before:2026-02-30',
      'x before:2026-13-01',
      'after:yesterday',
      'from:alice', // no term to look for
      '*',
      '"!!!"',
      Array.from({ length: 17 }, (_, i) => `w${i}`).join(' '),
    ]) {
      expect(() => parseQuery(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'INVALID_QUERY' }));
    }
  });

  it('matches a text as the index does: case and accents folded, prefixes, phrases in a row', () => {
    const tokens = tokensOf('The Déploy of v2 FAILED: see the build log');
    expect(matchesTerms(tokens, parseQuery('deploy failed').terms)).toBe(true);
    expect(matchesTerms(tokens, parseQuery('depl* BUILD').terms)).toBe(true);
    expect(matchesTerms(tokens, parseQuery('"build log"').terms)).toBe(true);
    expect(matchesTerms(tokens, parseQuery('"log build"').terms)).toBe(false);
    expect(matchesTerms(tokens, parseQuery('deploy missing').terms)).toBe(false);
  });
});
