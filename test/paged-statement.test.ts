import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { pagedStatement } from '../sqlite/paged-statement.js';

describe('page queries with a literal LIMIT', () => {
  const db = new Database(':memory:');
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID');
  const insert = db.prepare('INSERT INTO t VALUES (?, ?)');
  for (let i = 0; i < 50; i++) insert.run(`k${String(i).padStart(2, '0')}`, i);

  it('pages as LIMIT ? would, with one prepared statement per limit, the limit written as a literal', () => {
    const page = pagedStatement<[string], string>(db, 'SELECT k FROM t WHERE k > ? ORDER BY k LIMIT ?', {
      pluck: true,
    });
    expect(page(3).all('k10')).toEqual(['k11', 'k12', 'k13']);
    expect(page(0).all('')).toEqual([]);
    expect(page(3)).toBe(page(3));
    expect(page(3).source).toBe('SELECT k FROM t WHERE k > ? ORDER BY k LIMIT 3');
    expect(page(1000).all('k47')).toEqual(['k48', 'k49']);
  });

  it('returns rows as arrays when asked to be raw, on every limit prepared', () => {
    const page = pagedStatement<[string], [string, number]>(db, 'SELECT k, v FROM t WHERE k > ? ORDER BY k LIMIT ?', {
      raw: true,
    });
    expect(page(2).all('k10')).toEqual([
      ['k11', 11],
      ['k12', 12],
    ]);
    expect(page(1).all('k48')).toEqual([['k49', 49]]);
  });

  it('keeps at most 16 limits prepared, dropping the least recently used', () => {
    const page = pagedStatement<[string], { k: string }>(db, 'SELECT k FROM t WHERE k > ? ORDER BY k LIMIT ?');
    const first = page(1);
    for (let limit = 2; limit <= 16; limit++) page(limit);
    expect(page(1)).toBe(first); // used again: now the most recent
    page(17); // evicts 2, the least recently used
    expect(page(1)).toBe(first);
    const two = page(2);
    expect(two.all('')).toHaveLength(2);
    expect(page(2)).toBe(two);
  });

  it('writes nothing but a non-negative integer into the SQL, and wants a query ending in LIMIT ?', () => {
    const page = pagedStatement(db, 'SELECT k FROM t LIMIT ?');
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '1; DROP TABLE t' as unknown as number]) {
      expect(() => page(bad)).toThrow(RangeError);
    }
    expect(() => pagedStatement(db, 'SELECT k FROM t LIMIT 5')).toThrow(/LIMIT \?/);
  });
});
