import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { DeliveredMarks, type MarksRelay } from '../delivery/delivered-marks.js';
import type { DeliveredMark } from '../groups/group-store.js';
import { MAX_RELAYED_MARKS } from '../sequencer/send-forwarding.js';

const logger = pino({ level: 'silent' });

/** A node's marks, with what it stored, told and relayed; `writers` names each group's writer as this node heard. */
function node(
  nodeId: string,
  writers: Record<string, string>,
  options = { flushMs: 60_000, maxPending: 100_000 },
  reachable = (_nodeId: string) => true,
) {
  const stored: DeliveredMark[][] = [];
  const told: DeliveredMark[][] = [];
  const relayed: [string, DeliveredMark[]][] = [];
  const relay: MarksRelay = {
    nodeId,
    writerOf: (groupId) => writers[groupId],
    send: async (to, marks) => {
      if (!reachable(to)) throw new Error(`${to} cannot be reached`);
      relayed.push([to, structuredClone(marks)]);
    },
  };
  const marks = new DeliveredMarks(
    { raiseDelivered: async (batch) => void stored.push(structuredClone(batch)) },
    (batch) => told.push(structuredClone(batch)),
    options,
    logger,
    relay,
  );
  return { marks, stored, told, relayed };
}

const sorted = (marks: DeliveredMark[]) =>
  [...marks].sort((x, y) => x.groupId.localeCompare(y.groupId) || x.userId.localeCompare(y.userId));

describe('DeliveredMarks', () => {
  it("writes and tells the marks of the groups this node writes, or whose writer it has not heard of, each member's highest", async () => {
    const a = node('a', { mine: 'a' });
    a.marks.note('mine', 'bob', 3);
    a.marks.note('mine', 'bob', 5);
    a.marks.note('mine', 'bob', 4);
    a.marks.note('unheard', 'carol', 2);
    await a.marks.flush();
    expect(a.stored).toHaveLength(1);
    expect(sorted(a.stored[0]!)).toEqual([
      { groupId: 'mine', userId: 'bob', seq: 5 },
      { groupId: 'unheard', userId: 'carol', seq: 2 },
    ]);
    expect(a.told.map(sorted)).toEqual(a.stored.map(sorted));
    expect(a.relayed).toEqual([]);
  });

  it('relays the marks of a group another node writes to that node, one call per node, and neither writes nor tells them', async () => {
    const b = node('b', { g1: 'a', g2: 'a', g3: 'c', mine: 'b' });
    b.marks.note('g1', 'bob', 7);
    b.marks.note('g2', 'bob', 2);
    b.marks.note('g3', 'dave', 1);
    b.marks.note('mine', 'erin', 4);
    await b.marks.flush();
    expect(b.relayed.map(([to, marks]) => [to, sorted(marks)])).toEqual([
      [
        'a',
        [
          { groupId: 'g1', userId: 'bob', seq: 7 },
          { groupId: 'g2', userId: 'bob', seq: 2 },
        ],
      ],
      ['c', [{ groupId: 'g3', userId: 'dave', seq: 1 }]],
    ]);
    expect(b.stored).toEqual([[{ groupId: 'mine', userId: 'erin', seq: 4 }]]);
    expect(b.told).toEqual(b.stored);
  });

  it("stores and tells the writer's own marks and those relayed to it in one batch, never relaying those on", async () => {
    // Node a heard that c writes the group now (the writer moved): what b relayed to a is written at a all the same,
    // and so is a's own mark of that group, which shares the group's entry.
    const a = node('a', { g1: 'a', moved: 'c' });
    a.marks.note('g1', 'alice', 6);
    a.marks.relayed([
      { groupId: 'g1', userId: 'bob', seq: 6 },
      { groupId: 'g1', userId: 'alice', seq: 5 },
      { groupId: 'moved', userId: 'bob', seq: 2 },
    ]);
    a.marks.note('moved', 'alice', 3);
    await a.marks.flush();
    expect(a.relayed).toEqual([]);
    expect(a.stored).toHaveLength(1);
    expect(sorted(a.stored[0]!)).toEqual([
      { groupId: 'g1', userId: 'alice', seq: 6 },
      { groupId: 'g1', userId: 'bob', seq: 6 },
      { groupId: 'moved', userId: 'alice', seq: 3 },
      { groupId: 'moved', userId: 'bob', seq: 2 },
    ]);
    expect(a.told.map(sorted)).toEqual(a.stored.map(sorted));
  });

  it('tells a group spread over two nodes in one event, from its writer', async () => {
    const writers = { g1: 'a' };
    const a = node('a', writers);
    const b = node('b', writers);
    a.marks.note('g1', 'alice', 1);
    b.marks.note('g1', 'bob', 1);
    b.marks.note('g1', 'carol', 1);
    await b.marks.flush();
    for (const [, marks] of b.relayed) a.marks.relayed(marks);
    await a.marks.flush();
    expect(b.told).toEqual([]);
    expect(a.told).toHaveLength(1);
    expect(a.told[0]!.map((m) => m.userId).sort()).toEqual(['alice', 'bob', 'carol']);
  });

  it('writes here what would take a relay past MAX_RELAYED_MARKS, a group whole', async () => {
    const b = node('b', { big: 'a', small: 'a' }, { flushMs: 60_000, maxPending: 10 * MAX_RELAYED_MARKS });
    for (let i = 0; i < MAX_RELAYED_MARKS - 1; i++) b.marks.note('big', `u${i}`, 1);
    b.marks.note('small', 'bob', 1);
    b.marks.note('small', 'carol', 1);
    await b.marks.flush();
    expect(b.relayed.map(([to, marks]) => [to, marks.length])).toEqual([['a', MAX_RELAYED_MARKS - 1]]);
    expect(
      b.stored
        .flat()
        .map((m) => m.userId)
        .sort(),
    ).toEqual(['bob', 'carol']);
  });

  it('keeps the marks whose relay cannot reach their writer, and writes them at its next flush', async () => {
    const b = node('b', { g1: 'a', g2: 'c' }, undefined, (to) => to !== 'a');
    b.marks.note('g1', 'bob', 2);
    b.marks.note('g2', 'carol', 3);
    await b.marks.flush();
    expect(b.relayed).toEqual([['c', [{ groupId: 'g2', userId: 'carol', seq: 3 }]]]);
    expect(b.stored).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve)); // the refused relay comes back
    b.marks.note('g1', 'bob', 4);
    await b.marks.flush();
    expect(b.stored).toEqual([[{ groupId: 'g1', userId: 'bob', seq: 4 }]]);
    expect(b.relayed).toHaveLength(1); // never relayed again
  });

  it('flushes on its own after flushMs', async () => {
    const b = node('b', { g1: 'a' }, { flushMs: 50, maxPending: 100 });
    b.marks.note('g1', 'bob', 1);
    expect(b.relayed).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(b.relayed).toEqual([['a', [{ groupId: 'g1', userId: 'bob', seq: 1 }]]]);
  });
});
